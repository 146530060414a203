#include "store/redis/async_redis.h"

#include <hiredis/hiredis.h>

#include <array>
#include <cassert>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "base/metrics.h"
#include "base/openssl_error.h"

namespace tern::store::redis {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {
// A message pushed to a subscribed connection: ["message" | "smessage", channel, payload] or
// ["pmessage", pattern, channel, payload].
bool is_push(const redisReply& r) {
  if (r.type != REDIS_REPLY_ARRAY || r.elements < 3 || r.element[0]->type != REDIS_REPLY_STRING) return false;
  const std::string_view kind(r.element[0]->str, r.element[0]->len);
  return kind == "message" || kind == "smessage" || kind == "pmessage";
}
}  // namespace

// One TCP connection. Handlers hold it (shared) so that the buffers they name live until they
// ran, also after the AsyncRedis moved on to a new link; a handler whose link is no longer the
// current one does nothing but let go.
struct AsyncRedis::Link {
  explicit Link(asio::io_context& io) : socket(io), resolver(io), reader(redisReaderCreate()) {}
  ~Link() {
    if (reader) redisReaderFree(reader);
  }
  tcp::socket socket;
  tcp::resolver resolver;
  // rediss:// (RedisCredentials::tls): OpenSSL on `socket`, made once it connected; destroyed
  // before the socket it names.
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;
  redisReader* reader;
  std::array<char, 16384> in;
  std::string writing;  // the bytes of the write in flight
  bool write_in_flight = false;
};

std::shared_ptr<AsyncRedis> AsyncRedis::create(asio::io_context& io, AsyncRedisOptions options) {
  return std::shared_ptr<AsyncRedis>(new AsyncRedis(io, std::move(options)));
}

AsyncRedis::AsyncRedis(asio::io_context& io, AsyncRedisOptions options)
    : io_(io),
      options_(std::move(options)),
      timer_(io),
      backoff_(options_.retry_backoff, options_.retry_backoff * 10) {}

AsyncRedis::~AsyncRedis() {
  if (link_) {
    boost::system::error_code ignored;
    link_->socket.close(ignored);
  }
}

void AsyncRedis::fail_later(Callback done, Error error) {
  asio::post(io_, [done = std::move(done), error = std::move(error)]() mutable { done(std::move(error)); });
}

void AsyncRedis::command(const std::vector<std::string_view>& argv, Callback done) {
  if (state_ == State::kBackoff) {
    if (std::chrono::steady_clock::now() < retry_after_)
      return fail_later(std::move(done), make_error(ErrorCode::kUnavailable,
                                                    "redis: " + options_.address.host + ":" +
                                                        std::to_string(options_.address.port) +
                                                        " is unreachable; retry later"));
    state_ = State::kIdle;
  }
  if (pending_.size() >= options_.max_pending)
    return fail_later(std::move(done), make_error(ErrorCode::kOverloaded, "redis: too many commands waiting"));
  std::vector<const char*> args;
  std::vector<size_t> lens;
  args.reserve(argv.size());
  lens.reserve(argv.size());
  for (std::string_view a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  char* formatted = nullptr;
  const int n = redisFormatCommandArgv(&formatted, static_cast<int>(args.size()), args.data(), lens.data());
  if (n < 0 || !formatted)
    return fail_later(std::move(done), make_error(ErrorCode::kInternal, "redis: cannot format the command"));
  out_.append(formatted, static_cast<size_t>(n));
  redisFreeCommand(formatted);
  pending_.push_back(Pending{std::move(done), std::chrono::steady_clock::now() + options_.command_timeout});
  if (state_ == State::kIdle) return connect();
  if (state_ == State::kReady) schedule_flush();
}

void AsyncRedis::connect() {
  state_ = State::kConnecting;
  ++connects_;
  auto link = std::make_shared<Link>(io_);
  link_ = link;
  // The connect's deadline: the timer closes the socket, which fails the connect.
  timer_.expires_after(options_.connect_timeout);
  timer_armed_ = true;
  timer_.async_wait([self = shared_from_this(), link](const boost::system::error_code& ec) {
    if (ec || link != self->link_ || self->state_ != State::kConnecting) return;
    self->timer_armed_ = false;
    self->fail("redis: connect timed out", true);
  });
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(options_.address.host, ec);
  if (!ec) {
    link->socket.async_connect(tcp::endpoint(ip, options_.address.port),
                               [self = shared_from_this(), link](const boost::system::error_code& e) {
                                 self->on_connected(link, e);
                               });
    return;
  }
  // A host name: resolved by asio's resolver off the loop, then the first address that accepts.
  link->resolver.async_resolve(
      options_.address.host, std::to_string(options_.address.port),
      [self = shared_from_this(), link](const boost::system::error_code& e, tcp::resolver::results_type results) {
        if (link != self->link_) return;
        if (e) return self->on_connected(link, e);
        asio::async_connect(link->socket, results,
                            [self, link](const boost::system::error_code& e2, const tcp::endpoint&) {
                              self->on_connected(link, e2);
                            });
      });
}

void AsyncRedis::on_connected(const std::shared_ptr<Link>& link, const boost::system::error_code& ec) {
  if (link != link_ || state_ != State::kConnecting) return;
  if (ec) return fail("redis: connect to " + options_.address.host + ":" + std::to_string(options_.address.port) +
                          ": " + ec.message(),
                      true);
  boost::system::error_code ignored;
  link->socket.set_option(tcp::no_delay(true), ignored);
  if (!options_.credentials.tls) return on_ready(link);
  // TLS first (within the connect's deadline: the timer still runs), then the log-in.
  SSL* ssl = options_.credentials.tls->new_ssl(options_.address.host);
  if (!ssl) return fail("redis: TLS: " + openssl_error_text("cannot make the connection"), true);
  link->tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(link->socket, ssl);  // owns ssl
  link->tls->async_handshake(asio::ssl::stream_base::client, [self = shared_from_this(),
                                                              link](const boost::system::error_code& e) {
    if (link != self->link_ || self->state_ != State::kConnecting) return;
    if (!e) return self->on_ready(link);
    // A certificate refused says why (expired, unknown CA, another name).
    std::string why = e.message();
    if (const long v = SSL_get_verify_result(link->tls->native_handle()); v != X509_V_OK)
      why += " (" + std::string(X509_verify_cert_error_string(v)) + ")";
    self->fail("redis: TLS handshake with " + self->options_.address.host + ":" +
                   std::to_string(self->options_.address.port) + ": " + why,
               true);
  });
}

void AsyncRedis::on_ready(const std::shared_ptr<Link>& link) {
  state_ = State::kReady;
  if (options_.credentials.empty()) redis_connection_counters().connects.inc();  // else once logged in
  backoff_.reset();
  timer_.cancel();  // the connect's deadline; the commands' own is armed below
  timer_armed_ = false;
  if (!options_.credentials.empty()) log_in();
  do_read(link);
  arm_timer();
  schedule_flush();
}

void AsyncRedis::log_in() {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (std::string_view a : options_.credentials.auth_argv()) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  char* formatted = nullptr;
  const int n = redisFormatCommandArgv(&formatted, static_cast<int>(args.size()), args.data(), lens.data());
  if (n < 0 || !formatted) return fail("redis: cannot format the AUTH", true);
  logging_in_ = true;
  // Ahead of what waited for the connect: nothing was written on this link yet.
  out_.insert(0, formatted, static_cast<size_t>(n));
  redisFreeCommand(formatted);
  auto done = [weak = weak_from_this(), link = link_](Result<Reply> r) {
    auto self = weak.lock();
    if (!self || link != self->link_) return;  // the link broke first: its commands failed with it
    self->logging_in_ = false;
    if (r && (*r)->type != REDIS_REPLY_ERROR) {
      redis_connection_counters().connects.inc();
      return;
    }
    self->logging_in_ = true;  // counted as a failed connect, not a broken connection
    const std::string where = self->options_.address.host + ":" + std::to_string(self->options_.address.port);
    self->fail(r ? "redis: " + where + " refused the AUTH: " + std::string((*r)->str, (*r)->len)  // Redis's reason
                 : r.error().message,
               true);
  };
  pending_.push_front(Pending{std::move(done), std::chrono::steady_clock::now() + options_.command_timeout});
}

void AsyncRedis::schedule_flush() {
  if (flush_posted_ || out_.empty()) return;
  flush_posted_ = true;
  // After the turn's other handlers: what they issue rides in the same write.
  asio::post(io_, [self = shared_from_this()] {
    self->flush_posted_ = false;
    self->do_write();
  });
}

void AsyncRedis::do_write() {
  if (state_ != State::kReady || out_.empty() || link_->write_in_flight) return;
  auto link = link_;
  link->writing.swap(out_);
  out_.clear();
  link->write_in_flight = true;
  ++writes_;
  arm_timer();
  auto written = [self = shared_from_this(), link](const boost::system::error_code& ec, size_t) {
    link->write_in_flight = false;
    link->writing.clear();
    if (link != self->link_) return;
    if (ec) return self->fail("redis: write: " + ec.message(), true);
    self->do_write();  // what was issued meanwhile
  };
  if (link->tls) asio::async_write(*link->tls, asio::buffer(link->writing), std::move(written));
  else asio::async_write(link->socket, asio::buffer(link->writing), std::move(written));
}

void AsyncRedis::do_read(const std::shared_ptr<Link>& link) {
  auto read = [self = shared_from_this(), link](const boost::system::error_code& ec, size_t n) {
    if (link != self->link_) return;
    if (ec) return self->fail("redis: read: " + ec.message(), true);
    self->on_read(link, n);
  };
  if (link->tls) link->tls->async_read_some(asio::buffer(link->in), std::move(read));
  else link->socket.async_read_some(asio::buffer(link->in), std::move(read));
}

void AsyncRedis::on_read(const std::shared_ptr<Link>& link, size_t n) {
  if (redisReaderFeed(link->reader, link->in.data(), n) != REDIS_OK)
    return fail("redis: protocol error", true);
  for (;;) {
    void* r = nullptr;
    if (redisReaderGetReply(link->reader, &r) != REDIS_OK) return fail("redis: protocol error", true);
    if (!r) break;
    Reply reply(static_cast<redisReply*>(r));
    if (push_ && (is_push(*reply) || pending_.empty())) {
      push_(std::move(reply));
    } else {
      // Redis answers only what was asked: a reply with nothing waiting is a broken stream.
      if (pending_.empty()) return fail("redis: a reply nobody asked for", true);
      Callback done = std::move(pending_.front().done);
      pending_.pop_front();
      done(std::move(reply));
    }
    // The callback may have closed the connection (or failed it by issuing): stop here.
    if (link != link_) return;
  }
  do_read(link);
}

void AsyncRedis::arm_timer() {
  if (timer_armed_ || pending_.empty() || state_ != State::kReady) return;
  timer_armed_ = true;
  timer_.expires_at(pending_.front().deadline);
  timer_.async_wait([self = shared_from_this(), link = link_](const boost::system::error_code& ec) {
    if (ec || link != self->link_) return;
    self->timer_armed_ = false;
    self->on_timer();
  });
}

void AsyncRedis::on_timer() {
  if (state_ != State::kReady || pending_.empty()) return;
  if (pending_.front().deadline <= std::chrono::steady_clock::now())
    return fail("redis: no reply within " + std::to_string(options_.command_timeout.count()) + " ms", true);
  arm_timer();  // the oldest command was answered meanwhile: wait for the next oldest
}

void AsyncRedis::close() {
  auto broken = std::move(broken_);  // a close is asked for: not reported as broken
  fail("redis: connection closed", false);
  broken_ = std::move(broken);
}

void AsyncRedis::fail(const std::string& why, bool backoff) {
  const bool had_link = link_ != nullptr;  // a connection (or an attempt) broke
  // A link that broke before its log-in was answered never became a connection.
  const bool connecting = state_ == State::kConnecting || (state_ == State::kReady && logging_in_);
  logging_in_ = false;
  if (backoff && connecting) redis_connection_counters().connect_failures.inc();
  if (backoff && state_ == State::kReady && !connecting) redis_connection_counters().broken.inc();
  if (link_) {
    boost::system::error_code ignored;
    link_->socket.close(ignored);
    link_->resolver.cancel();
    link_.reset();
  }
  timer_.cancel();
  timer_armed_ = false;
  out_.clear();
  if (backoff) {
    state_ = State::kBackoff;
    retry_after_ = std::chrono::steady_clock::now() + backoff_.next();
  } else {
    state_ = State::kIdle;
  }
  std::deque<Pending> failed;
  failed.swap(pending_);
  // Callbacks may issue again: they see the new state (back-off: refused, posted).
  for (auto& p : failed) p.done(make_error(ErrorCode::kUnavailable, why));
  if (!had_link || !broken_) return;
  auto broken = broken_;  // a copy: the handler may close() or replace this connection's handlers
  broken(why);
}

}  // namespace tern::store::redis
