// WebSocketSession: one live WebSocket connection, the gateway's own lean RFC 6455 server
// side on a TCP socket, plain or through OpenSSL (no Beast stream; see "TLS" below), and the
// gateway's implementation of Connection.
//
// Ownership: owns itself through shared_ptr; every pending async handler holds one, and the
// service holds one (as Connection) while it wants to write. The session holds the service's
// FrameHandler until on_close() has run, then drops it (breaking the session ↔ handler cycle).
//
// Threading: the session lives on one event loop (Loop) for its whole life: all its
// handlers, and every FrameHandler callback, run on that loop's thread, straight on the
// io_context's executor (a strand of it only when the loop's io_context is shared by several
// threads: the Listener's single-io_context constructor). Members marked "loop" must run
// there. post(), id(), queue_limit_bytes(), loop_index() and shutdown() are callable from
// any thread.
//
// Lifecycle and guarantees:
//  - run() writes the 101 (the HTTP session validated and authenticated the upgrade;
//    bounded by handshake_timeout), then calls service.open() once, processes the bytes the
//    client sent after its request, and reads frames until the connection ends.
//  - handler->on_close() is called exactly once per open() call, whatever ends the
//    connection (peer close, error, ping timeout, slow consumer, close(), shutdown()),
//    provided the loop keeps running until the session is gone. If the 101 cannot be
//    written, open() is never called and neither is on_close().
//  - Client frames must be masked (else 1002); fragmented text messages are reassembled up
//    to max_frame_bytes (over it: 1009, checked on each frame header); binary → 1003; other
//    protocol errors → 1002. Each affects that connection only. Ping → pong (queued like any
//    frame); close → the code is echoed and the connection shut down.
//  - Fairness: one loop turn hands at most frames_per_turn text messages, and about 16 KiB
//    of them, to on_text; the rest stay buffered and the session yields to the loop (a
//    posted continuation).
//  - Limits on input: control frames (ping/pong) take a token from a per-connection bucket
//    (control_frames_per_sec, burst control_frames_burst; empty → 1008 "too many control
//    frames"); bytes read take tokens from a max_input_bytes_per_sec bucket (burst
//    max_frame_bytes; empty → the socket is not read until it refills, no close).
//  - Liveness: a peer silent for ping_interval is pinged; silent for 2*ping_interval, it is
//    closed. A close that cannot finish within handshake_timeout (+ the 1 s sweep) is cut,
//    however much is still queued. Checked by a once-a-second sweep of the loop's sessions
//    (no timer per connection).
//  - Memory: an idle connection holds its socket, a few counters and flags, and no buffer:
//    reads go to a per-thread scratch buffer and only an incomplete trailing frame (or input
//    left over by the per-turn budget) is copied into the connection; buffers are freed when
//    empty and on close.
//
// Write queue (bounded in payload bytes, write_queue_bytes, the frame being written
// included; frames are shared, never copied):
//  - send() appends; when no write is pending it posts one flush to the loop, so every
//    frame queued during this loop turn leaves in one gathered write (sendmsg of
//    [header, payload] pairs: unmasked text frames, FIN set, no fragmentation), at most 64
//    frames / 256 KiB per call, continued at once while the socket takes it. When the
//    socket is full the session waits for writability and then writes everything queued.
//  - Overflow policy: a send() that would take a non-empty queue over the limit closes with
//    1008 "slow consumer", drops the unsent frames (the client replays on reconnect) and
//    returns false; likewise when the process-wide budget (global_queue_bytes) is exhausted
//    and this queue holds more than 64 KiB.
//  - on_writable() is called after a completed write when the queue is then at or below
//    half the limit: at most one call per completed write.
//  - close(code, reason) from the service: frames queued before it are still written, then
//    the close frame; later send() calls are dropped (return false). shutdown() (close_all)
//    drops the unsent frames and closes at once.
//
// TLS (a connection that came through a TlsHttpSession): the same session, with one branch
// at the two I/O sites. Reads: SSL_read into the scratch buffer, until OpenSSL wants more
// from the socket (a short read proves nothing there: a record is at most 16 KiB). Writes:
// the queued frames (headers and payloads) are copied into one staging buffer of at most
// one record (16 KiB) and written with SSL_write; the staged frames count as written only
// once OpenSSL took them, and a retry after "want write" passes the same staged bytes (as
// OpenSSL requires), so frames covered by the stage are never dropped. The stage is freed
// when empty; OpenSSL's own record buffers are released when idle
// (SSL_MODE_RELEASE_BUFFERS). Closing sends close_notify (best effort, never waiting).
#pragma once
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "base/ids.h"
#include "gateway/gateway_context.h"
#include "gateway/service_interface.h"
#include "gateway/session_registry.h"
#include "gateway/tls_context.h"
#include "gateway/ws_codec.h"

namespace tern::gateway {

class WebSocketSession final : public Session, public Connection {
 public:
  // Takes over the socket of an HTTP connection whose upgrade request was validated and
  // authenticated. `slot` is its place in the authenticated connection budget.
  // `ssl`: the connection's TLS state when it came through TLS (OpenSSL then reads and
  // writes the socket; see "TLS" above), null for plain TCP.
  WebSocketSession(boost::asio::ip::tcp::socket&& socket, SslPtr ssl, std::shared_ptr<GatewayContext> ctx,
                   size_t loop_index, ConnectionSlot slot, DeviceRef device);
  ~WebSocketSession() override;

  // Registers the session and writes the 101 with `accept_key`; `early` holds the bytes the
  // client sent after its upgrade request. Loop.
  void run(const std::string& accept_key, std::string early);

  // Connection.
  bool send(std::shared_ptr<const std::string> frame) override;  // loop
  size_t queued_bytes() const override;                          // loop
  size_t queue_limit_bytes() const override;                     // any thread
  void close(uint16_t code, std::string reason) override;        // loop
  void post(std::function<void()> fn) override;                  // any thread
  uint64_t id() const override;                                  // any thread
  size_t loop_index() const override;                            // any thread

  // Session: closes with `ws_code`, dropping unsent frames. Any thread.
  void shutdown(uint16_t ws_code) override;

 private:
  struct Out {
    std::shared_ptr<const std::string> data;
    uint8_t opcode;  // ws::Opcode, or kRaw (the 101: bytes without a frame header)
  };
  enum class Parsed { kContinue, kBudget, kStop };

  std::shared_ptr<WebSocketSession> self();
  bool on_loop() const;

  // Writing.
  void enqueue(std::shared_ptr<const std::string> data, uint8_t opcode);
  void schedule_flush();
  void flush();
  void account_written(size_t n, size_t* frames, bool* handshake_written, bool* close_written);
  void wait_writable();
  void drop_unsent();
  void release_bytes(size_t n);
  void on_handshake_written();
  void on_close_written();
  enum class TlsWrite { kProgress, kBlocked, kFailed };
  TlsWrite write_tls(size_t* frames, bool* handshake_written, bool* close_written);
  // ::recv, or SSL_read on a TLS connection: > 0 bytes, 0 at the end, -1 with errno
  // (EAGAIN when the socket has nothing more).
  ssize_t receive(char* data, size_t size);

  // Reading.
  void arm_read();
  void post_read_turn();
  void read_turn();
  Parsed parse(char* data, size_t size, size_t* consumed, size_t* delivered);
  // parse() over the buffered input (pending_), which then drops what was consumed.
  Parsed parse_pending(size_t* delivered);
  Parsed handle(const ws::Event& event, size_t* delivered);
  bool take_control_token();
  void refill(int64_t now_ms);
  void pause_input();
  void free_input();

  // Closing and liveness.
  void start_close(uint16_t code, std::string_view reason, bool drop);
  void slow_consumer();
  void finish();
  void on_tick(int64_t now_ms);
  void update_due();
  void add_to_loop();
  void remove_from_loop();
  static void arm_sweep(const std::shared_ptr<Loop>& loop);
  static void sweep(const std::shared_ptr<Loop>& loop);

  struct Tls {
    SslPtr ssl;
    std::vector<char> stage;         // bytes handed to SSL_write, not yet taken (see above)
    bool read_wants_write = false;   // SSL_read needs the socket writable first
    bool fatal = false;              // no close_notify after a fatal TLS error
  };

  boost::asio::ip::tcp::socket socket_;
  std::unique_ptr<Tls> tls_;  // null on plain TCP
  const std::shared_ptr<GatewayContext> ctx_;
  const std::shared_ptr<Loop> loop_;
  const DeviceRef device_;
  const uint64_t id_;
  ConnectionSlot slot_;
  // When the loop's sweep should look at this session (ms, steady clock). Written on the
  // loop, read by the sweep under loop_.mu.
  std::atomic<int64_t> due_ms_;
  size_t list_index_;  // in loop_.sessions (guarded by loop_.mu); kNotListed when out

  // Loop-only state.
  std::shared_ptr<FrameHandler> handler_;
  std::vector<Out> queue_;  // [head_, end) not yet fully written
  size_t queued_bytes_ = 0;
  size_t turn_bytes_ = 0;  // message bytes handed to the service in the current read turn
  uint32_t head_ = 0;
  uint32_t front_written_ = 0;  // bytes of queue_[head_] (header included) already written
  std::vector<char> pending_;   // input not yet parsed (incomplete frame, or over budget)
  ws::FrameParser parser_;
  std::unique_ptr<boost::asio::steady_timer> pause_timer_;  // only while input is paused
  int64_t last_rx_ms_ = 0;
  int64_t deadline_ms_;         // handshake or close deadline (kNever when none)
  int64_t tokens_ms_ = 0;       // last refill of the two buckets
  double input_tokens_;
  double control_tokens_;
  uint16_t close_code_ = 0;
  bool handshake_done_ = false;   // 101 written
  bool opened_ = false;           // service.open() called (so on_close() is owed)
  bool close_started_ = false;    // close frame queued; sends are dropped from now on
  bool close_sent_ = false;       // close frame written
  bool close_received_ = false;   // the peer's close frame arrived
  bool draining_ = false;         // input is discarded (after a protocol error or close)
  bool finished_ = false;         // on_close() delivered, socket closed
  bool flush_posted_ = false;
  bool write_waiting_ = false;    // async_wait(write) pending
  bool read_waiting_ = false;     // async_wait(read) pending
  bool read_posted_ = false;      // a read_turn continuation is posted
  bool input_paused_ = false;     // byte-rate bucket empty: pause_timer_ pending
  bool ping_outstanding_ = false; // pinged, nothing heard since
};

}  // namespace tern::gateway
