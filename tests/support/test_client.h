// Synchronous wire-v1 test clients for integration tests against a real ternd on loopback:
//  - http_request(): one HTTP/1.1 request per connection, status + parsed JSON, bounded time.
//  - Api: the wire-v1 HTTP endpoints (register, devices, conversations, members, backfill).
//  - WsClient: a WebSocket connection whose reads run on a private I/O thread into a bounded
//    inbox, so every read_frame() has a deadline and the connection stays usable after a
//    timeout. Device adds the client frames of wire-v1 (send, ack, read, typing, presence).
//  - RawConn: a plain TCP socket for hand-made requests and clients that never answer pings.
// Ownership: each object owns its sockets and threads. Thread affinity: a WsClient/Device/
// RawConn is driven by one test thread at a time (its own I/O thread is internal).
#pragma once
#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::test {

namespace json = boost::json;
using ms = std::chrono::milliseconds;
using Seq = uint64_t;

inline constexpr ms kDefaultTimeout{10000};

// ---- JSON helpers (absent/wrong-typed fields read as empty/0/-1) ----
std::string jstr(const json::object& o, std::string_view key);
int64_t jint(const json::object& o, std::string_view key, int64_t absent = -1);
bool jbool(const json::object& o, std::string_view key, bool absent = false);
std::string type_of(const json::object& o);
std::string dump(const json::value& v);
std::string dump_frames(const std::vector<json::object>& frames, size_t max = 40);
std::string b64(std::string_view bytes);
std::string unb64(std::string_view text);  // empty on invalid input

// ---- HTTP ----
struct HttpResult {
  int status = 0;         // 0: network failure or timeout (body says which)
  std::string body;
  json::value json;       // null when the body is not JSON
  std::string error_code() const;  // the "error" member of an error body, or ""
  const json::object& obj() const;  // the body object (an empty object when not an object)
};

HttpResult http_request(uint16_t port, std::string_view method, std::string_view target,
                        std::optional<std::string> body = std::nullopt, std::string_view token = {},
                        ms timeout = kDefaultTimeout);

struct Account {
  std::string user;
  uint32_t device = 0;
  std::string token;
  std::string key() const { return user + ":" + std::to_string(device); }
};

// wire-v1 HTTP endpoints. The must_* forms record a gtest failure (and return empty values)
// when the server does not answer as the spec says.
class Api {
 public:
  explicit Api(uint16_t port) : ports_{port} {}
  // Several nodes (the redis2 test backend, support/redis_backend.cc): each request goes to
  // the next of `ports` in turn, as a round-robin load balancer would send it.
  explicit Api(std::vector<uint16_t> ports) : ports_(std::move(ports)) {}
  void set_port(uint16_t port) { ports_.front() = port; }
  uint16_t port() const { return ports_.front(); }

  HttpResult healthz();
  HttpResult register_user(std::string_view user);
  Account must_register(std::string_view user);
  HttpResult link_device(std::string_view token);
  Account must_link(const Account& owner);
  HttpResult create_direct(std::string_view token, std::string_view other);
  std::string must_direct(std::string_view token, std::string_view other);
  HttpResult create_group(std::string_view token, std::string_view name, const std::vector<std::string>& members);
  std::string must_group(std::string_view token, std::string_view name, const std::vector<std::string>& members);
  HttpResult add_members(std::string_view token, std::string_view conv, const std::vector<std::string>& users);
  HttpResult remove_members(std::string_view token, std::string_view conv, const std::vector<std::string>& users);
  HttpResult list_conversations(std::string_view token);
  // Issue 12: PUT /v1/privacy {"presence": visibility} (contacts | everyone | nobody).
  HttpResult set_presence_visibility(std::string_view token, std::string_view visibility);
  HttpResult messages(std::string_view token, std::string_view conv, std::optional<Seq> after_seq = std::nullopt,
                      std::optional<uint64_t> limit = std::nullopt);
  // Pages through the whole log after `after_seq` (bounded page count). `head` receives the
  // last reported head. Records a failure and returns what it has on any error.
  std::vector<json::object> backfill_all(std::string_view token, std::string_view conv, Seq after_seq = 0,
                                         Seq* head = nullptr, uint64_t page = 100);
  // Current head of a conversation via backfill (0 on failure, recorded).
  Seq head(std::string_view token, std::string_view conv);

 private:
  uint16_t next_port() { return ports_[turn_++ % ports_.size()]; }
  std::vector<uint16_t> ports_;
  size_t turn_ = 0;
};

// ---- WebSocket ----
struct WsOptions {
  bool token_in_query = false;   // ?token=… instead of the Authorization header
  int receive_buffer_bytes = 0;  // SO_RCVBUF before connect; small values model a slow consumer
  ms timeout = kDefaultTimeout;
};

class WsClient {
 public:
  WsClient();
  virtual ~WsClient();
  WsClient(const WsClient&) = delete;
  WsClient& operator=(const WsClient&) = delete;

  // Opens GET /v1/ws with `token` (empty: none). Returns 101 on success, the refusal status
  // (e.g. 401) when the upgrade is declined, 0 on a network error or timeout.
  int connect_ws(uint16_t port, std::string_view token, const WsOptions& options = {});
  bool is_open() const;

  bool send_text(std::string text, ms timeout = kDefaultTimeout);
  bool send_binary(std::string bytes, ms timeout = kDefaultTimeout);
  bool send_json(const json::object& o, ms timeout = kDefaultTimeout) { return send_text(json::serialize(o), timeout); }

  // Next frame (parsed; a non-JSON frame reads as {"type":"__not_json__","raw":…}), or
  // nullopt on timeout or when closed with nothing left to read.
  std::optional<json::object> read_frame(ms timeout = kDefaultTimeout);
  // Reads until a frame satisfies `pred`; the frames passed over go to `skipped` if given.
  std::optional<json::object> read_until(const std::function<bool(const json::object&)>& pred,
                                         ms timeout = kDefaultTimeout, std::vector<json::object>* skipped = nullptr);
  std::optional<json::object> read_until(std::string_view type, ms timeout = kDefaultTimeout,
                                         std::vector<json::object>* skipped = nullptr);
  // Every frame until `quiet` passes without one (bounded by `max_total`).
  std::vector<json::object> drain(ms quiet = ms(300), ms max_total = kDefaultTimeout);

  // Waits until the peer closed the connection (frames already received stay readable).
  bool wait_closed(ms timeout = kDefaultTimeout);
  bool closed() const;
  // Close code sent by the server, if a close frame was received.
  std::optional<uint16_t> close_code() const;

  // Stops reading from the socket after the read in flight completes (the kernel buffers
  // then fill up, like a consumer that cannot keep up). resume_reading() reads again.
  void pause_reading();
  void resume_reading();

  // Clean close handshake (bounded) then the socket is released.
  void close(uint16_t code = 1000, ms timeout = ms(5000));
  // Drops the TCP connection without a close frame.
  void abort();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One device of a user on a WebSocket, with the client frames of wire-v1.
class Device : public WsClient {
 public:
  Device() = default;
  explicit Device(Account a) : account(std::move(a)) {}

  int connect(uint16_t port, const WsOptions& options = {}) { return connect_ws(port, account.token, options); }
  // Connects and reads through `synced`; returns the frames before it (nullopt on failure).
  std::optional<std::vector<json::object>> connect_synced(uint16_t port, ms timeout = kDefaultTimeout);

  bool send(std::string_view conv, std::string_view client_msg_id, std::string_view body_bytes);
  bool send_bodies(std::string_view conv, std::string_view client_msg_id,
                   const std::map<std::string, std::string>& bodies_bytes);
  // Reads until the `sent` or `error` (ref == client_msg_id) answering that send.
  std::optional<json::object> wait_answer(std::string_view client_msg_id, ms timeout = kDefaultTimeout,
                                          std::vector<json::object>* skipped = nullptr);
  // send + wait_answer.
  std::optional<json::object> send_wait(std::string_view conv, std::string_view client_msg_id,
                                        std::string_view body_bytes, ms timeout = kDefaultTimeout,
                                        std::vector<json::object>* skipped = nullptr);
  // send_wait that records a failure unless the answer is `sent`; returns its seq (0 on failure).
  Seq must_send(std::string_view conv, std::string_view client_msg_id, std::string_view body_bytes,
                std::vector<json::object>* skipped = nullptr);

  bool ack(std::string_view conv, Seq seq);
  bool read(std::string_view conv, Seq seq);
  bool typing(std::string_view conv, bool active);
  bool presence_subscribe(const std::vector<std::string>& users);

  // Frames before `synced` (nullopt if it does not come in time).
  std::optional<std::vector<json::object>> until_synced(ms timeout = kDefaultTimeout);
  // Reads until a `message` of `conv` with seq >= `seq` arrived; returns all `message`
  // frames of `conv` seen on the way (others go to `skipped`).
  std::vector<json::object> collect_messages(std::string_view conv, Seq seq, ms timeout = kDefaultTimeout,
                                             std::vector<json::object>* skipped = nullptr);

  Account account;
};

// ---- raw TCP ----
class RawConn {
 public:
  RawConn() = default;
  ~RawConn();
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  bool connect(uint16_t port, ms timeout = ms(5000));
  bool write_all(std::string_view bytes, ms timeout = ms(5000));
  // Whatever arrives within `timeout` (empty on timeout or EOF; see eof()).
  std::string read_some(ms timeout);
  // Reads (and keeps) bytes until EOF/reset or the deadline; true if the peer closed.
  bool wait_eof(ms timeout);
  bool eof() const { return eof_; }
  const std::string& received() const { return received_; }
  // Hand-made WebSocket upgrade of GET /v1/ws with a bearer token; returns the HTTP status
  // (101 on success) and then leaves the socket alone: it never answers pings.
  int ws_upgrade(uint16_t port, std::string_view token, ms timeout = ms(5000));
  void close();

 private:
  int fd_ = -1;
  bool eof_ = false;
  std::string received_;
};

}  // namespace tern::test
