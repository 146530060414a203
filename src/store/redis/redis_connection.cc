#include "store/redis/redis_connection.h"

#include <signal.h>
#include <sys/socket.h>

#include <cassert>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <mutex>
#include <optional>

#include <boost/asio/post.hpp>
// sds.h (hiredis's buffer strings) declares no C linkage of its own, and hiredis.h includes
// it outside its extern "C": first, here, inside one.
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "base/fiber.h"
#include "base/metrics.h"
#include "base/openssl_error.h"

namespace tern::store::redis {

RedisConnectionCounters& redis_connection_counters() {
  static RedisConnectionCounters counters{
      MetricsRegistry::global().counter("tern_redis_connects_total", "Redis connections made"),
      MetricsRegistry::global().counter("tern_redis_connect_failures_total", "Redis connection attempts that failed"),
      MetricsRegistry::global().counter("tern_redis_connections_broken_total",
                                        "Redis connections dropped after a transport error or a timeout")};
  return counters;
}

namespace {
// Registered at start, so that GET /metrics lists them (at 0) before the first connection.
[[maybe_unused]] RedisConnectionCounters& registered = redis_connection_counters();

timeval to_timeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

// %XX escapes of a URL's user or password; false on a malformed escape.
bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    unsigned v = 0;
    auto [p, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
    if (ec != std::errc() || p != in.data() + i + 3) return false;
    out.push_back(static_cast<char>(v));
    i += 2;
  }
  return true;
}
}  // namespace

Result<RedisAddress> parse_redis_url(std::string_view url, RedisCredentials* credentials, bool* tls) {
  auto bad = [&] { return make_error(ErrorCode::kInvalidArgument, "bad Redis address (want redis://[USER:PASSWORD@]HOST:PORT)"); };
  constexpr std::string_view kScheme = "redis://", kTlsScheme = "rediss://";
  if (tls) *tls = false;
  if (url.substr(0, kScheme.size()) == kScheme) {
    url.remove_prefix(kScheme.size());
  } else if (url.substr(0, kTlsScheme.size()) == kTlsScheme) {
    if (!tls) return make_error(ErrorCode::kInvalidArgument, "a Redis address here cannot ask for TLS (rediss://)");
    *tls = true;
    url.remove_prefix(kTlsScheme.size());
  }
  if (!url.empty() && url.back() == '/') url.remove_suffix(1);
  // redis://HOST:PORT/DB: refused by name. The bus's channels are shared by every database of
  // a server, so two deployments on two databases would hear each other.
  if (const size_t slash = url.rfind('/'); slash != std::string_view::npos && slash + 1 < url.size() &&
                                           url.substr(slash + 1).find_first_not_of("0123456789") == std::string_view::npos)
    return make_error(ErrorCode::kInvalidArgument,
                      "a Redis database number (redis://HOST:PORT/DB) is not supported: pub/sub channels are shared "
                      "by every database; give each deployment its own Redis");
  // The user and password: before the last '@' (a password may hold one, escaped or not).
  if (const size_t at = url.rfind('@'); at != std::string_view::npos) {
    if (!credentials)
      return make_error(ErrorCode::kInvalidArgument, "a Redis address here takes no user or password");
    const std::string_view info = url.substr(0, at);
    const size_t colon = info.find(':');
    RedisCredentials c;
    if (!percent_decode(info.substr(0, colon), c.user)) return bad();
    if (colon != std::string_view::npos && !percent_decode(info.substr(colon + 1), c.password)) return bad();
    if (c.password.empty())
      return make_error(ErrorCode::kInvalidArgument, "a Redis address with a user needs its password (USER:PASSWORD@)");
    *credentials = std::move(c);
    url.remove_prefix(at + 1);
  }
  RedisAddress out;
  std::string_view port;
  if (!url.empty() && url.front() == '[') {
    const size_t close = url.find(']');
    if (close == std::string_view::npos) return bad();
    out.host = std::string(url.substr(1, close - 1));
    std::string_view rest = url.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return bad();
      port = rest.substr(1);
    }
  } else {
    const size_t colon = url.rfind(':');
    out.host = std::string(url.substr(0, colon));
    if (colon != std::string_view::npos) port = url.substr(colon + 1);
  }
  if (out.host.empty() || out.host.find_first_of("/@?") != std::string::npos) return bad();
  if (!port.empty()) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535) return bad();
    out.port = static_cast<uint16_t>(v);
  }
  return out;
}

void ReplyDeleter::operator()(redisReply* r) const {
  if (r) freeReplyObject(r);
}

RedisConnection::~RedisConnection() {
  if (ssl_) SSL_free(ssl_);  // before the socket closes (redisFree): OpenSSL does not close it
  if (ctx_) redisFree(ctx_);
}

Result<std::unique_ptr<RedisConnection>> RedisConnection::connect(const RedisAddress& address,
                                                                  std::chrono::milliseconds connect_timeout,
                                                                  std::chrono::milliseconds command_timeout,
                                                                  const RedisCredentials& credentials) {
  // hiredis writes with write(2): a write to a connection the server closed (a killed Redis
  // master) would raise SIGPIPE and kill the process; ignored, the write fails with EPIPE and
  // the call with `unavailable`. Process-wide, once (Boost.Asio sends with MSG_NOSIGNAL).
  static std::once_flag sigpipe;
  std::call_once(sigpipe, [] { ::signal(SIGPIPE, SIG_IGN); });
  const bool in_fiber = Fiber::current() != nullptr;
  redisContext* ctx = nullptr;
  if (in_fiber) {
    auto c = connect_in_fiber(address, connect_timeout);
    if (!c) {
      redis_connection_counters().connect_failures.inc();
      return c.error();
    }
    ctx = *c;
  } else {
    ctx = redisConnectWithTimeout(address.host.c_str(), address.port, to_timeval(connect_timeout));
    if (!ctx) return make_error(ErrorCode::kUnavailable, "redis: out of memory");
    if (ctx->err) {
      std::string what = ctx->errstr;
      redisFree(ctx);
      redis_connection_counters().connect_failures.inc();
      return make_error(ErrorCode::kUnavailable, "redis: connect: " + what);
    }
    if (command_timeout.count() > 0) redisSetTimeout(ctx, to_timeval(command_timeout));
  }
  redisEnableKeepAlive(ctx);
  std::unique_ptr<RedisConnection> conn(new RedisConnection(ctx, in_fiber, command_timeout));
  if (credentials.tls)
    if (auto t = conn->start_tls(address, *credentials.tls, std::chrono::steady_clock::now() + connect_timeout); !t) {
      redis_connection_counters().connect_failures.inc();
      return t.error();
    }
  if (!credentials.empty())
    if (auto in = conn->log_in(address, credentials); !in) {
      redis_connection_counters().connect_failures.inc();
      return in.error();
    }
  redis_connection_counters().connects.inc();
  return conn;
}

// A non-blocking connect: the fiber waits until the socket is writable (connected or
// refused) or the timeout passes, then asks the socket how the connect ended.
Result<redisContext*> RedisConnection::connect_in_fiber(const RedisAddress& address, std::chrono::milliseconds timeout) {
  redisContext* ctx = redisConnectNonBlock(address.host.c_str(), address.port);
  if (!ctx) return make_error(ErrorCode::kUnavailable, "redis: out of memory");
  auto fail = [&](std::string what) {
    redisFree(ctx);
    return make_error(ErrorCode::kUnavailable, "redis: connect: " + what);
  };
  if (ctx->err) return fail(ctx->errstr);
  if (!Fiber::wait_fd(ctx->fd, true, std::chrono::steady_clock::now() + timeout)) return fail("timed out");
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(ctx->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) return fail(std::strerror(err ? err : errno));
  return ctx;
}

Result<void> RedisConnection::start_tls(const RedisAddress& address, const RedisTls& tls,
                                        std::chrono::steady_clock::time_point deadline) {
  const std::string where = address.host + ":" + std::to_string(address.port);
  ERR_clear_error();
  ssl_ = tls.new_ssl(address.host);
  if (!ssl_ || SSL_set_fd(ssl_, ctx_->fd) != 1)
    return make_error(ErrorCode::kUnavailable, "redis: TLS to " + where + ": " + openssl_error_text("cannot make the connection"));
  for (;;) {
    const int r = SSL_connect(ssl_);
    if (r == 1) return {};
    const int e = SSL_get_error(ssl_, r);
    if (in_fiber_ && (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)) {
      if (!Fiber::wait_fd(ctx_->fd, e == SSL_ERROR_WANT_WRITE, deadline))
        return make_error(ErrorCode::kUnavailable, "redis: TLS handshake with " + where + ": timed out");
      continue;
    }
    // A certificate refused says why (expired, unknown CA, another name), not only "verify failed".
    const long verified = SSL_get_verify_result(ssl_);
    std::string why = openssl_error_text("the connection closed");
    if (verified != X509_V_OK) why += " (" + std::string(X509_verify_cert_error_string(verified)) + ")";
    return make_error(ErrorCode::kUnavailable, "redis: TLS handshake with " + where + ": " + why);
  }
}

bool RedisConnection::flush(int* done) {
  if (!ssl_) return redisBufferWrite(ctx_, done) == REDIS_OK;
  *done = 0;
  tls_wants_read_ = false;
  while (sdslen(ctx_->obuf) > 0) {
    const size_t len = tls_retry_len_ ? tls_retry_len_ : std::min<size_t>(sdslen(ctx_->obuf), INT_MAX);
    ERR_clear_error();
    const int n = SSL_write(ssl_, ctx_->obuf, static_cast<int>(len));
    if (n > 0) {
      tls_retry_len_ = 0;
      sdsrange(ctx_->obuf, n, -1);
      continue;
    }
    const int e = SSL_get_error(ssl_, n);
    if (in_fiber_ && (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)) {
      tls_retry_len_ = len;  // the buffer only grows at its end: its first len bytes stay
      tls_wants_read_ = e == SSL_ERROR_WANT_READ;
      return true;
    }
    tls_error_ = e == SSL_ERROR_WANT_WRITE                       ? "write timed out"
                 : e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 ? std::string("write failed: ") + std::strerror(errno)
                                                                   : openssl_error_text("write failed");
    return false;
  }
  *done = 1;
  return true;
}

bool RedisConnection::fill() {
  if (!ssl_) return redisBufferRead(ctx_) == REDIS_OK;
  char buf[16 * 1024];
  tls_wants_write_ = false;
  ERR_clear_error();
  const int n = SSL_read(ssl_, buf, sizeof buf);
  if (n > 0) {
    if (redisReaderFeed(ctx_->reader, buf, static_cast<size_t>(n)) != REDIS_OK) {
      tls_error_ = "out of memory";
      return false;
    }
    return true;
  }
  const int e = SSL_get_error(ssl_, n);
  if (in_fiber_ && (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)) {
    tls_wants_write_ = e == SSL_ERROR_WANT_WRITE;
    return true;  // no whole record yet
  }
  tls_error_ = e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && n == 0)
                   ? "connection closed"
               : e == SSL_ERROR_WANT_READ ? "read timed out"
                                          : openssl_error_text("read failed");
  return false;
}

void RedisConnection::broke() {
  if (healthy_) redis_connection_counters().broken.inc();
  healthy_ = false;
}

Error RedisConnection::transport_error(const char* what) {
  broke();
  return make_error(ErrorCode::kUnavailable,
                    std::string("redis: ") + what + ": " + (ssl_ && !tls_error_.empty() ? tls_error_.c_str() : ctx_->errstr));
}

struct RedisConnection::Request {
  size_t want = 0;             // replies expected
  std::vector<Reply> replies;  // arrived so far
  bool done = false;
  std::optional<Error> error;                      // when done and failed
  std::chrono::steady_clock::time_point deadline;  // the answer is late after this
  Fiber* waiting = nullptr;                        // a fiber suspended until done (fiber mode)
};

RedisConnection::Ticket RedisConnection::send(const std::vector<std::vector<std::string_view>>& commands) {
  auto t = std::make_shared<Request>();
  t->want = commands.size();
  t->replies.reserve(commands.size());
  t->deadline = command_timeout_.count() > 0 ? std::chrono::steady_clock::now() + command_timeout_
                                             : std::chrono::steady_clock::time_point::max();
  if (!healthy_) {
    t->done = true;
    t->error = make_error(ErrorCode::kUnavailable, "redis: connection broken");
    return t;
  }
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& cmd : commands) {
    argv.clear();
    lens.clear();
    for (std::string_view a : cmd) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
      // hiredis fails an append only when out of memory; what was appended before is out of
      // step with the requests now, so the connection is done.
      fail_all(transport_error("append"));
      t->done = true;
      t->error = make_error(ErrorCode::kUnavailable, "redis: append failed");
      return t;
    }
  }
  if (t->want == 0) {
    t->done = true;
    return t;
  }
  in_flight_.push_back(t);
  // On a thread: out now, the whole request (blocking), so that a request to another node
  // can be written before this one's replies are read (run_many). In a fiber: the requests
  // of the loop's fibers gather in hiredis's buffer, and one write at the end of the loop's
  // turn sends them all (what the socket does not take then goes out when a receive()
  // drives); a fiber that drives writes at once what is buffered.
  if (!in_fiber_) {
    if (!write_out()) fail_all(transport_error("write"));
  } else if (!write_posted_) {
    assert(Fiber::current());  // a connection made in a fiber is used by fibers only
    write_posted_ = true;
    boost::asio::post(Fiber::current()->io(), [weak = weak_from_this()] {
      auto self = weak.lock();
      if (!self) return;
      self->write_posted_ = false;
      int done = 0;
      if (self->healthy_ && !self->flush(&done)) self->fail_all(self->transport_error("write"));
    });
  }
  return t;
}

Result<std::vector<Reply>> RedisConnection::receive(const Ticket& ticket) {
  Request& r = *ticket;
  while (!r.done) {
    Fiber* self = Fiber::current();
    if (!in_fiber_ || !driving_) {
      drive(r);
      continue;
    }
    // Another fiber reads the socket: wait until it hands this request its replies (or hands
    // over the reading). Resumed only through the loop (finish(), or drive()'s hand-over),
    // or by the owner that ends the fiber (cancelled): then the request stays out and the
    // driver throws its replies away.
    if (!self || self->cancelled()) return make_error(ErrorCode::kUnavailable, "redis: cancelled");
    r.waiting = self;
    Fiber::suspend();
    r.waiting = nullptr;
    if (!r.done && self->cancelled()) return make_error(ErrorCode::kUnavailable, "redis: cancelled");
  }
  if (r.error) return *r.error;
  return std::move(r.replies);
}

namespace {
// Resumes the fiber that waits for `request`, from the loop (a fiber never resumes another
// on its own stack). If it was resumed otherwise meanwhile (its wait ended), nothing.
template <typename Request>
void wake(const std::shared_ptr<Request>& request) {
  Fiber* f = request->waiting;
  if (!f) return;
  boost::asio::post(f->io(), [request] {
    Fiber* waiting = request->waiting;
    if (waiting) waiting->resume();  // it clears `waiting` itself
  });
}
}  // namespace

void RedisConnection::finish(const Ticket& request) {
  request->done = true;
  wake(request);
}

void RedisConnection::fail_all(const Error& error) {
  broke();
  std::deque<Ticket> out;
  out.swap(in_flight_);
  for (const Ticket& t : out) {
    t->error = error;
    finish(t);
  }
}

bool RedisConnection::write_out() {
  for (;;) {
    int done = 0;
    if (!flush(&done)) return false;
    if (done) return true;
    // Blocking: redisBufferWrite wrote what it could before the socket's timeout.
    if (in_fiber_ && !Fiber::wait_fd(ctx_->fd, !tls_wants_read_, in_flight_.empty() ? deadline() : in_flight_.front()->deadline))
      return false;  // the socket's buffer stayed full
  }
}

bool RedisConnection::take_replies() {
  while (!in_flight_.empty()) {
    void* r = nullptr;
    if (redisGetReplyFromReader(ctx_, &r) != REDIS_OK) return false;
    if (!r) return true;
    const Ticket& front = in_flight_.front();
    front->replies.emplace_back(static_cast<redisReply*>(r));
    if (front->replies.size() == front->want) {
      Ticket t = front;
      in_flight_.pop_front();
      finish(t);
    }
  }
  return true;
}

void RedisConnection::drive(Request& mine) {
  driving_ = true;
  while (!mine.done) {
    // Every break goes through fail_all(), which ends every request out, `mine` too.
    assert(healthy_);
    if (!write_out()) {
      fail_all(transport_error("write"));
      break;
    }
    if (!take_replies()) {
      fail_all(transport_error("reply"));
      break;
    }
    if (mine.done) break;
    // The oldest request out decides how long Redis may take.
    // (TLS: a record OpenSSL already holds is read without waiting.)
    if (in_fiber_ && !(ssl_ && SSL_has_pending(ssl_)) &&
        !Fiber::wait_fd(ctx_->fd, tls_wants_write_, in_flight_.front()->deadline)) {
      fail_all(transport_error(Fiber::current()->cancelled() ? "read: cancelled" : "read: timed out"));
      break;
    }
    // Blocking: one read, at most the socket's timeout. Non-blocking: nothing read yet is no
    // error; a closed connection is.
    if (!fill()) {
      fail_all(transport_error("read"));
      break;
    }
  }
  driving_ = false;
  // Hand the reading to a fiber that waits for its request, if any.
  if (in_fiber_)
    for (const Ticket& t : in_flight_)
      if (t->waiting) {
        wake(t);
        break;
      }
}

Result<std::vector<Reply>> RedisConnection::pipeline(const std::vector<std::vector<std::string_view>>& commands) {
  return receive(send(commands));
}

Result<Reply> RedisConnection::read_push() {
  if (!healthy_) return make_error(ErrorCode::kUnavailable, "redis: connection broken");
  // A thread's (blocking) connection only: in a fiber, a loop's readers share the socket.
  if (in_fiber_) return make_error(ErrorCode::kInternal, "redis: read_push on a fiber's connection");
  void* r = nullptr;
  if (!ssl_) {
    if (redisGetReply(ctx_, &r) != REDIS_OK || !r) return transport_error("read");
    return Reply(static_cast<redisReply*>(r));
  }
  for (;;) {  // hiredis's blocking read, through OpenSSL
    if (redisGetReplyFromReader(ctx_, &r) != REDIS_OK) return transport_error("read");
    if (r) return Reply(static_cast<redisReply*>(r));
    if (!fill()) return transport_error("read");
  }
}

std::chrono::steady_clock::time_point RedisConnection::deadline() const {
  if (command_timeout_.count() <= 0) return std::chrono::steady_clock::time_point::max();
  return std::chrono::steady_clock::now() + command_timeout_;
}

Result<Reply> RedisConnection::command(const std::vector<std::string_view>& argv) {
  auto r = pipeline({argv});
  if (!r) return r.error();
  return std::move(r->front());
}

Result<void> RedisConnection::log_in(const RedisAddress& address, const RedisCredentials& credentials) {
  const std::vector<std::string_view> argv = credentials.auth_argv();
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (std::string_view a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(ctx_, static_cast<int>(args.size()), args.data(), lens.data()) != REDIS_OK)
    return transport_error("append");
  // Not through send(): in a fiber it would post the write to the loop, and this connection
  // has no shared owner yet. receive() drives: it writes and reads here.
  auto t = std::make_shared<Request>();
  t->want = 1;
  t->deadline = deadline();
  in_flight_.push_back(t);
  auto replies = receive(t);
  const std::string where = address.host + ":" + std::to_string(address.port);
  if (!replies) return make_error(ErrorCode::kUnavailable, "redis: AUTH at " + where + ": " + replies.error().message);
  const redisReply& r = *replies->front();
  if (r.type == REDIS_REPLY_ERROR)
    return make_error(ErrorCode::kUnavailable,
                      "redis: " + where + " refused the AUTH: " + std::string(r.str, r.len));  // Redis's reason, no secret
  return {};
}

Result<std::shared_ptr<RedisConnection>> LoopConnections::get(const RedisAddress& address,
                                                              std::chrono::milliseconds connect_timeout,
                                                              std::chrono::milliseconds command_timeout,
                                                              const RedisCredentials& credentials, bool* made) {
  Entry& e = by_address_[{address.host, address.port}];
  if (made) *made = false;
  if (e.conn && e.conn->healthy()) return e.conn;
  if (e.connecting) {
    // Another fiber connects: wait for its connection (or for the owner that ends this fiber).
    if (!e.waiting.wait()) return make_error(ErrorCode::kUnavailable, "redis: cancelled");
    if (e.conn && e.conn->healthy()) return e.conn;
    return make_error(ErrorCode::kUnavailable, "redis: connect failed");
  }
  e.conn.reset();
  e.connecting = true;
  auto c = RedisConnection::connect(address, connect_timeout, command_timeout, credentials);
  e.connecting = false;
  if (c) e.conn = std::move(c).value();
  e.waiting.wake_all();
  if (!c) return c.error();
  if (made) *made = true;
  return e.conn;
}

}  // namespace tern::store::redis
