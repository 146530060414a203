// RedisConnection: one hiredis connection (redisContext) with short timeouts, and the
// parsing of `redis://[USER:PASSWORD@]HOST:PORT` addresses. A broken connection (reset,
// timeout, protocol error) is never reused: its owners drop it and connect again on the next
// call. With credentials, a connection logs in (AUTH) before it is handed out.
//
// Requests: send() sends a request (one or more commands) and returns its ticket;
// receive() returns the request's replies. Redis answers in order, so the replies are handed
// out in the order the requests were sent; several requests may be out at once (run_many
// writes to several nodes before reading any). pipeline() is send() then receive().
//
// On a plain thread the connection blocks that thread (socket timeouts). In a fiber
// (base/fiber.h): a connection made in a fiber is non-blocking and waits by suspending its
// fiber (Fiber::wait_fd) until the socket is ready or the timeout passes, so the loop that
// runs the fiber goes on meanwhile. Such a connection may be **shared by every fiber of its
// loop** (LoopConnections, below): each fiber sends its request when it has one (the
// requests are pipelined on the one socket), one fiber at a time reads the socket for all
// (the driver: the first that waits), hands each reply to its request, and resumes the
// waiting fibers (through the loop). When the driver's own request is answered it leaves, and
// the next waiting fiber drives. A timeout, a reset or a cancelled driver breaks the
// connection, and every request still out fails with `unavailable`. (The connect's name
// lookup is getaddrinfo's, blocking: give Redis's address as an IP, as the examples do.)
//
// Thread-safety: none; a connection is used by one thread, or by the fibers of one loop
// (all on that loop's thread). Owns its redisContext; shared (shared_ptr) by the
// RedisClusters of one loop's fibers and its LoopConnections.
#pragma once
#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/fiber_waiters.h"
#include "base/result.h"
#include "store/redis/redis_tls.h"

struct redisContext;
struct redisReply;

namespace tern {
class Counter;
class Fiber;
}

namespace tern::store::redis {

struct RedisAddress {
  std::string host;
  uint16_t port = 6379;
};

// Who the node logs in as on every connection to the deployment (AUTH right after the
// connect, before any other command): Redis's `requirepass` (user empty: AUTH PASSWORD) or an
// ACL user (AUTH USER PASSWORD). One set per deployment: a Cluster's nodes, its replicas and
// the nodes it names later all take the same. No password: no AUTH. Never logged.
struct RedisCredentials {
  std::string user;
  std::string password;
  // rediss://: every connection is TLS on this context (redis_tls.h), before the AUTH; null:
  // plain TCP. Part of the credentials because it goes wherever they go (a client
  // certificate is one), and one deployment has one.
  std::shared_ptr<const RedisTls> tls;
  bool empty() const { return password.empty(); }
  bool operator==(const RedisCredentials&) const = default;
  // The AUTH command that logs in with these (views into this object).
  std::vector<std::string_view> auth_argv() const {
    if (user.empty()) return {"AUTH", password};
    return {"AUTH", user, password};
  }
};

// Parses "redis://[USER[:PASSWORD]@]HOST[:PORT]" (the port defaults to 6379; without the
// scheme too). IPv6 hosts in brackets: redis://[::1]:6379. The user and password are
// percent-decoded (%40 for '@', %3A for ':') into *credentials; a URL with them and no
// `credentials` to take them is refused. "rediss://" asks for TLS: *tls is set (refused
// without `tls`); the caller makes the context (RedisCredentials::tls). Error messages never
// repeat the URL (it may hold the password).
Result<RedisAddress> parse_redis_url(std::string_view url, RedisCredentials* credentials = nullptr, bool* tls = nullptr);

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

class RedisConnection : public std::enable_shared_from_this<RedisConnection> {
 public:
  // One request's replies, filled in as they arrive (shared by its sender and the driver).
  struct Request;
  using Ticket = std::shared_ptr<Request>;

  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Connects within connect_timeout; every later command times out after command_timeout.
  // With credentials, logs in (AUTH, one round trip within command_timeout) before it returns.
  // Fails with `unavailable` (a refused AUTH too: the message says so, with Redis's reason).
  static Result<std::unique_ptr<RedisConnection>> connect(const RedisAddress& address,
                                                          std::chrono::milliseconds connect_timeout,
                                                          std::chrono::milliseconds command_timeout,
                                                          const RedisCredentials& credentials = {});

  // Sends the commands and returns the request's ticket. On a thread they are written now;
  // in a fiber at the end of the loop's turn, together with the other fibers' (one write),
  // or at once by a receive() that drives. Never fails: a broken connection's ticket fails
  // in receive(). In a fiber the connection must be owned by a shared_ptr (LoopConnections,
  // RedisCluster).
  Ticket send(const std::vector<std::vector<std::string_view>>& commands);
  // The request's replies, in order, once all arrived (reading the socket, or waiting for
  // the fiber that reads it). A transport failure fails the request with `unavailable` and
  // breaks the connection (every request out fails with it); a Redis error reply is returned
  // as a reply of type REDIS_REPLY_ERROR (the caller decides). A ticket not received is
  // dropped harmlessly: its replies are read and thrown away.
  Result<std::vector<Reply>> receive(const Ticket& ticket);
  // send() then receive(): one round trip.
  Result<std::vector<Reply>> pipeline(const std::vector<std::vector<std::string_view>>& commands);
  Result<Reply> command(const std::vector<std::string_view>& argv);

  // Pub/sub on a thread: the next message pushed by the server (after SUBSCRIBE), waiting as
  // long as the command timeout allows (0: forever). (The bus subscribes over AsyncRedis;
  // tests listen here.) Not with requests out; not on a connection made in a fiber.
  Result<Reply> read_push();

  // False once a transport error happened: the connection must be dropped.
  bool healthy() const { return healthy_; }
  // Requests sent and not yet answered (tests).
  size_t in_flight() const { return in_flight_.size(); }

 private:
  RedisConnection(redisContext* ctx, bool in_fiber, std::chrono::milliseconds command_timeout)
      : ctx_(ctx), in_fiber_(in_fiber), command_timeout_(command_timeout) {}
  static Result<redisContext*> connect_in_fiber(const RedisAddress& address, std::chrono::milliseconds timeout);
  // TLS on the connected socket (RedisCredentials::tls): the handshake, Redis's certificate
  // checked, within `deadline` (a fiber waits for the socket; a thread blocks).
  Result<void> start_tls(const RedisAddress& address, const RedisTls& tls, std::chrono::steady_clock::time_point deadline);
  // The socket's I/O, through OpenSSL with TLS, else hiredis's own. flush(): writes what
  // hiredis's buffer holds, *done once it is empty. fill(): one read into hiredis's reader
  // (in a fiber, none ready is no error). False: the connection broke (transport_error says why).
  bool flush(int* done);
  bool fill();
  // AUTH on a new connection, read here (drive), before anyone else may send on it.
  Result<void> log_in(const RedisAddress& address, const RedisCredentials& credentials);
  void broke();  // marks the connection unusable (counted once: tern_redis_connections_broken_total)
  Error transport_error(const char* what);
  // Reads the socket for every request out until `mine` is answered (or the connection
  // broke: then every request out failed).
  void drive(Request& mine);
  bool write_out();    // the buffered commands, all (false: broke)
  bool take_replies(); // hands the parsed replies to the requests out, in order (false: broke)
  void fail_all(const Error& error);
  std::chrono::steady_clock::time_point deadline() const;  // of a call begun now
  void finish(const Ticket& request);  // answered or failed: its waiting fiber goes on

  redisContext* ctx_;
  SSL* ssl_ = nullptr;             // TLS: owned; OpenSSL reads and writes ctx_'s socket
  size_t tls_retry_len_ = 0;       // an SSL_write to repeat: with this length (OpenSSL's rule)
  bool tls_wants_write_ = false;   // the last TLS read needs the socket writable first
  bool tls_wants_read_ = false;    // the last TLS write needs the socket readable first
  std::string tls_error_;          // why the last TLS call failed
  const bool in_fiber_;
  const std::chrono::milliseconds command_timeout_;
  bool healthy_ = true;
  bool driving_ = false;       // a fiber reads the socket for all (in a fiber connection)
  bool write_posted_ = false;  // a write of the buffered requests is queued to the loop
  std::deque<Ticket> in_flight_;
};

// The connections that the fibers of one event loop share: one per Redis address (RedisStore
// keeps one of these per loop; each fiber's RedisCluster takes its connections here). While
// one fiber connects, the others that want that address wait for its connection instead of
// making their own. One loop's thread only; called from its fibers.
class LoopConnections {
 public:
  // The healthy connection to `address`, connecting (in the calling fiber) if there is none.
  // `made`: set to whether this call connected it. Fails with `unavailable` if the connect
  // (this call's, or the one it waited for) failed, or the fiber was cancelled.
  Result<std::shared_ptr<RedisConnection>> get(const RedisAddress& address, std::chrono::milliseconds connect_timeout,
                                               std::chrono::milliseconds command_timeout,
                                               const RedisCredentials& credentials, bool* made = nullptr);
  size_t size() const { return by_address_.size(); }

 private:
  struct Entry {
    std::shared_ptr<RedisConnection> conn;
    bool connecting = false;
    FiberWaiters waiting;  // fibers suspended until the connect ends
  };
  std::map<std::pair<std::string, uint16_t>, Entry> by_address_;  // std::map: entries stay put
};

}  // namespace tern::store::redis
