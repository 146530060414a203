#include "store/redis/redis_connection.h"

#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <mutex>

#include <hiredis/hiredis.h>

#include "base/fiber.h"
#include "base/metrics.h"

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
}  // namespace

Result<RedisAddress> parse_redis_url(std::string_view url) {
  auto bad = [&] { return make_error(ErrorCode::kInvalidArgument, "bad Redis address (want redis://HOST:PORT)"); };
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) == kScheme) url.remove_prefix(kScheme.size());
  if (!url.empty() && url.back() == '/') url.remove_suffix(1);
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
  if (ctx_) redisFree(ctx_);
}

Result<std::unique_ptr<RedisConnection>> RedisConnection::connect(const RedisAddress& address,
                                                                  std::chrono::milliseconds connect_timeout,
                                                                  std::chrono::milliseconds command_timeout) {
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
  redis_connection_counters().connects.inc();
  redisEnableKeepAlive(ctx);
  return std::unique_ptr<RedisConnection>(new RedisConnection(ctx, in_fiber, command_timeout));
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

void RedisConnection::broke() {
  if (healthy_) redis_connection_counters().broken.inc();
  healthy_ = false;
}

Error RedisConnection::transport_error(const char* what) {
  broke();
  return make_error(ErrorCode::kUnavailable, std::string("redis: ") + what + ": " + ctx_->errstr);
}

Result<std::vector<Reply>> RedisConnection::pipeline(const std::vector<std::vector<std::string_view>>& commands) {
  if (!healthy_) return make_error(ErrorCode::kUnavailable, "redis: connection broken");
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& cmd : commands) {
    argv.clear();
    lens.clear();
    for (std::string_view a : cmd) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK)
      return transport_error("append");
  }
  std::vector<Reply> replies;
  replies.reserve(commands.size());
  if (in_fiber_ && !flush_in_fiber()) return transport_error("write");
  for (size_t i = 0; i < commands.size(); ++i) {
    if (in_fiber_) {
      auto r = read_in_fiber();
      if (!r) return r.error();
      replies.push_back(std::move(*r));
      continue;
    }
    void* r = nullptr;
    if (redisGetReply(ctx_, &r) != REDIS_OK || !r) return transport_error("reply");
    replies.emplace_back(static_cast<redisReply*>(r));
  }
  return replies;
}

bool RedisConnection::append(const std::vector<std::string_view>& argv) {
  if (!healthy_) return false;
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (std::string_view a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(ctx_, static_cast<int>(ptrs.size()), ptrs.data(), lens.data()) != REDIS_OK) {
    broke();
    return false;
  }
  return true;
}

bool RedisConnection::flush() {
  if (!healthy_) return false;
  if (in_fiber_) return flush_in_fiber();
  int done = 0;
  while (!done) {
    if (redisBufferWrite(ctx_, &done) != REDIS_OK) {
      broke();
      return false;
    }
  }
  return true;
}

Result<Reply> RedisConnection::read_push() {
  if (!healthy_) return make_error(ErrorCode::kUnavailable, "redis: connection broken");
  if (in_fiber_) return read_in_fiber();
  void* r = nullptr;
  if (redisGetReply(ctx_, &r) != REDIS_OK || !r) return transport_error("read");
  return Reply(static_cast<redisReply*>(r));
}

std::chrono::steady_clock::time_point RedisConnection::deadline() const {
  if (command_timeout_.count() <= 0) return std::chrono::steady_clock::time_point::max();
  return std::chrono::steady_clock::now() + command_timeout_;
}

bool RedisConnection::flush_in_fiber() {
  const auto until = deadline();
  for (;;) {
    int done = 0;
    if (redisBufferWrite(ctx_, &done) != REDIS_OK) break;
    if (done) return true;
    if (!Fiber::wait_fd(ctx_->fd, true, until)) break;  // the socket's buffer stayed full
  }
  broke();
  return false;
}

Result<Reply> RedisConnection::read_in_fiber() {
  const auto until = deadline();
  for (;;) {
    void* r = nullptr;
    if (redisGetReplyFromReader(ctx_, &r) != REDIS_OK) return transport_error("reply");
    if (r) return Reply(static_cast<redisReply*>(r));
    if (!Fiber::wait_fd(ctx_->fd, false, until)) {
      broke();
      return make_error(ErrorCode::kUnavailable, "redis: read: timed out");
    }
    // Non-blocking: nothing read yet is no error; a closed connection is.
    if (redisBufferRead(ctx_) != REDIS_OK) return transport_error("read");
  }
}

Result<Reply> RedisConnection::command(const std::vector<std::string_view>& argv) {
  auto r = pipeline({argv});
  if (!r) return r.error();
  return std::move(r->front());
}

}  // namespace tern::store::redis
