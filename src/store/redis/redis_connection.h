// RedisConnection: one synchronous hiredis connection (redisContext) with short timeouts,
// and the parsing of `redis://HOST:PORT` addresses. A broken connection (reset, timeout,
// protocol error) is never reused: the owner drops it and connects again on the next call.
//
// In a fiber (base/fiber.h): a connection made in a fiber is non-blocking and waits by
// suspending its fiber (Fiber::wait_fd) until the socket is ready or the timeout passes, so
// the loop that runs the fiber goes on meanwhile. Such a connection is used by fibers only;
// one made on a plain thread blocks that thread, as before. (The connect's name lookup is
// getaddrinfo's, blocking: give Redis's address as an IP, as the examples do.)
//
// Thread-safety: none; one connection is used by one thread or fiber at a time (RedisStore
// keeps one per calling thread or fiber). Owns its redisContext.
#pragma once
#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

struct redisContext;
struct redisReply;

namespace tern {
class Counter;
}

namespace tern::store::redis {

struct RedisAddress {
  std::string host;
  uint16_t port = 6379;
};

// Parses "redis://HOST:PORT" (the port defaults to 6379; "HOST:PORT" without the scheme is
// accepted too). IPv6 hosts in brackets: redis://[::1]:6379.
Result<RedisAddress> parse_redis_url(std::string_view url);

struct ReplyDeleter {
  void operator()(redisReply* r) const;
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// The Redis client's connection counters, process-wide (GET /metrics): every RedisConnection
// (the store's and the bus's threads and fibers) and every AsyncRedis (the bus's loops) counts
// here, so an operator sees the whole node's connections to Redis. Any thread.
struct RedisConnectionCounters {
  Counter& connects;          // tern_redis_connects_total: connections made
  Counter& connect_failures;  // tern_redis_connect_failures_total: attempts that failed
  Counter& broken;            // tern_redis_connections_broken_total: dropped after a transport error or a timeout
};
RedisConnectionCounters& redis_connection_counters();

// The delay before the next reconnect attempt: `initial` after the first failure, then twice
// the last, at most `cap`; reset() after a success. A dead Redis is not hammered, a brief
// outage heals fast. Plain value, one thread.
class ReconnectBackoff {
 public:
  ReconnectBackoff(std::chrono::milliseconds initial, std::chrono::milliseconds cap)
      : initial_(initial), cap_(std::max(initial, cap)) {}
  std::chrono::milliseconds next() {
    current_ = current_.count() == 0 ? initial_ : std::min(current_ * 2, cap_);
    return current_;
  }
  void reset() { current_ = std::chrono::milliseconds(0); }

 private:
  std::chrono::milliseconds initial_, cap_;
  std::chrono::milliseconds current_{0};
};

class RedisConnection {
 public:
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Connects within connect_timeout; every later command times out after command_timeout.
  // Fails with `unavailable`.
  static Result<std::unique_ptr<RedisConnection>> connect(const RedisAddress& address,
                                                          std::chrono::milliseconds connect_timeout,
                                                          std::chrono::milliseconds command_timeout);

  // Sends all commands in one write and reads every reply (one round trip). A transport
  // failure fails the whole call with `unavailable` and breaks the connection; a Redis error
  // reply is returned as a reply of type REDIS_REPLY_ERROR (the caller decides).
  Result<std::vector<Reply>> pipeline(const std::vector<std::vector<std::string_view>>& commands);
  Result<Reply> command(const std::vector<std::string_view>& argv);
  // The two halves of pipeline(), for writing to several connections before reading any
  // (RedisCluster::run_many): append() buffers a command, flush() writes the buffer (false:
  // the connection broke); read_reply() reads the next reply.
  bool append(const std::vector<std::string_view>& argv);
  bool flush();
  Result<Reply> read_reply() { return read_push(); }

  // Pub/sub: the next message pushed by the server (after SUBSCRIBE), waiting as long as the
  // command timeout allows (0: forever). (The bus subscribes over AsyncRedis; tests listen here.)
  Result<Reply> read_push();

  // False once a transport error happened: the connection must be dropped.
  bool healthy() const { return healthy_; }

 private:
  RedisConnection(redisContext* ctx, bool in_fiber, std::chrono::milliseconds command_timeout)
      : ctx_(ctx), in_fiber_(in_fiber), command_timeout_(command_timeout) {}
  static Result<redisContext*> connect_in_fiber(const RedisAddress& address, std::chrono::milliseconds timeout);
  void broke();  // marks the connection unusable (counted once: tern_redis_connections_broken_total)
  Error transport_error(const char* what);
  std::chrono::steady_clock::time_point deadline() const;  // of a call begun now
  // The fiber's halves of flush() and read_reply(): non-blocking I/O, waiting in the fiber.
  bool flush_in_fiber();
  Result<Reply> read_in_fiber();

  redisContext* ctx_;
  const bool in_fiber_;
  const std::chrono::milliseconds command_timeout_;
  bool healthy_ = true;
};

}  // namespace tern::store::redis
