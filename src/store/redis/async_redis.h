// AsyncRedis: one Redis connection driven by an event loop (an asio io_context run by one
// thread), for callers that must never block their loop: the commands a loop issues go out
// pipelined, and each reply comes back to a callback on the same loop.
//
// Protocol: hiredis (Debian's) formats each command (redisFormatCommandArgv) and parses the
// replies (a redisReader fed with what the socket read); asio does the I/O. The commands
// issued during one turn of the loop are written together: the first one posts a flush, which
// runs after the turn's other handlers and writes everything queued meanwhile in one write
// (one more write only while the previous one is still in flight). Replies are matched to
// callbacks in order (Redis answers a connection's commands in order).
//
// TLS: with credentials.tls (rediss://), the connection is asio's SSL stream on the socket,
// its handshake (Redis's certificate checked) within connect_timeout, before the log-in.
//
// Log-in: with credentials, each new connection's first command is an AUTH, ahead of the
// commands that waited for the connect; a refused AUTH breaks the connection like a failed
// connect (those commands fail with `unavailable`, Redis's reason in the message), and counts
// as one; a connection counts as made once logged in.
//
// Failures: the connection is made on the first command (within connect_timeout). If it
// cannot be made, every waiting command fails with `unavailable`, and so does every command
// issued during the back-off that follows (retry_backoff, doubling with each failure up to
// ten times that; reset by a success): a dead Redis fails its callers at once instead of
// stalling them. A transport error, a protocol error, or a command not answered within
// command_timeout (a hung server) breaks the connection: every command waiting on it fails
// with `unavailable` (a command may have been applied without its reply: callers send only
// commands that are safe to lose or to send again), and the next command connects anew after
// the back-off. A Redis error reply (e.g. MOVED, NOSCRIPT) is not a failure: it is returned
// as a Reply of type REDIS_REPLY_ERROR for the caller to judge. Connections made, attempts
// failed and connections broken (not closed) count in redis_connection_counters() (GET
// /metrics), with RedisConnection's.
//
// Pub/sub: with a push handler set, a pushed message (an array that starts with "message",
// "smessage" or "pmessage") goes to it, and so does any reply that no command waits for (the
// confirmations of a SUBSCRIBE's further channels, an "sunsubscribe"); a subscribed
// connection waits for pushes without a deadline (only commands have one). A broken handler
// learns that the connection broke (after the waiting commands failed): a subscriber has no
// command waiting to tell it.
//
// Bounds: at most max_pending commands wait for their reply; a command beyond that fails with
// `overloaded` without being sent. Failures decided when a command is issued are reported
// through a posted handler, never inside command() (callers may issue from their callbacks).
//
// Thread-safety: none; every method on the loop's thread only, and every callback runs there.
// Ownership: shared (create()); handlers in flight keep it alive, and it is destroyed with its
// last handler or owner. The io_context must outlive it (destroy owners before the loop's
// io_context, or let the io_context's destruction drop the handlers that hold it).
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "base/result.h"
#include "store/redis/redis_connection.h"

namespace tern::store::redis {

struct AsyncRedisOptions {
  RedisAddress address;
  RedisCredentials credentials{};  // non-empty: AUTH first on every connection (a refusal breaks it)
  std::chrono::milliseconds connect_timeout{200};
  std::chrono::milliseconds command_timeout{1000};
  std::chrono::milliseconds retry_backoff{100};
  size_t max_pending = 4096;
};

class AsyncRedis : public std::enable_shared_from_this<AsyncRedis> {
 public:
  using Callback = std::function<void(Result<Reply>)>;

  static std::shared_ptr<AsyncRedis> create(boost::asio::io_context& io, AsyncRedisOptions options);
  ~AsyncRedis();
  AsyncRedis(const AsyncRedis&) = delete;
  AsyncRedis& operator=(const AsyncRedis&) = delete;

  // Queues the command (connecting first if needed); `done` gets its reply, or the failure.
  void command(const std::vector<std::string_view>& argv, Callback done);
  // Drops the connection: every waiting command fails with `unavailable`; the next command
  // connects again (no back-off).
  void close();
  // Pub/sub (see above); set before the first command.
  void set_push_handler(std::function<void(Reply)> handler) { push_ = std::move(handler); }
  void set_broken_handler(std::function<void(const std::string& why)> handler) { broken_ = std::move(handler); }

  const RedisAddress& address() const { return options_.address; }
  size_t pending() const { return pending_.size(); }
  bool connected() const { return state_ == State::kReady; }
  // Counters for tests and profiles: connections made (attempted), writes to the socket.
  uint64_t connects() const { return connects_; }
  uint64_t writes() const { return writes_; }

 private:
  struct Link;  // one TCP connection: socket, read buffer, reply parser, write in flight
  struct Pending {
    Callback done;
    std::chrono::steady_clock::time_point deadline;
  };
  enum class State { kIdle, kConnecting, kReady, kBackoff };

  AsyncRedis(boost::asio::io_context& io, AsyncRedisOptions options);
  void connect();
  void on_connected(const std::shared_ptr<Link>& link, const boost::system::error_code& ec);
  void on_ready(const std::shared_ptr<Link>& link);  // connected (TLS: handshake done): log in, read, write
  void log_in();  // queues the AUTH first on a new link
  void schedule_flush();
  void do_write();
  void do_read(const std::shared_ptr<Link>& link);
  void on_read(const std::shared_ptr<Link>& link, size_t n);
  void arm_timer();
  void on_timer();
  // Breaks the link (if any) and fails every waiting command with `why`; `backoff`: refuse
  // new commands for the back-off (a failure), else reconnect on the next command.
  void fail(const std::string& why, bool backoff);
  void fail_later(Callback done, Error error);

  boost::asio::io_context& io_;
  const AsyncRedisOptions options_;
  State state_ = State::kIdle;
  std::shared_ptr<Link> link_;
  std::string out_;               // formatted commands not yet handed to a write
  bool flush_posted_ = false;
  std::deque<Pending> pending_;   // in the order their replies will come
  boost::asio::steady_timer timer_;  // the oldest pending command's deadline (or the connect's)
  bool timer_armed_ = false;
  std::chrono::steady_clock::time_point retry_after_{};
  ReconnectBackoff backoff_;
  uint64_t connects_ = 0, writes_ = 0;
  bool logging_in_ = false;  // the link's AUTH is not answered yet
  std::function<void(Reply)> push_;
  std::function<void(const std::string&)> broken_;
};

}  // namespace tern::store::redis
