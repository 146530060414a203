// WsConnection: one client WebSocket connection (RFC 6455, text frames, no extensions) on an
// Asio io_context, built for holding thousands per thread. The socket, the write queue and
// the bytes of a partial frame (usually none) live in its LeanStream (lean_stream.h), shared
// with MqttConnection; this class owns the WebSocket part: the handshake, frame parsing and
// a fragment buffer (usually empty). Reads land in a ReadScratch shared by all connections of
// the thread; complete frames are handed to the Handler straight out of it, so a message costs
// no copy and no allocation here. Frames queued during one handler run go out in one write.
//
// Thread affinity: a connection and its ReadScratch belong to the thread running their
// io_context; every call and every Handler callback happens on it. The connection must outlive
// any pending operation: destroy it only once its io_context has stopped running (or will
// never run again). Handler callbacks may call any method, including close() and open().
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "client/lean/lean_stream.h"

namespace tern::client::lean {

struct WsTarget {
  asio::ip::tcp::endpoint server;
  // When set, the socket binds to this local address before connecting (the port is left to
  // connect(), with IP_BIND_ADDRESS_NO_PORT), so that connections spread over several
  // 127.0.0.x source addresses when one address's ephemeral ports run out.
  std::optional<asio::ip::address> source;
  std::string host_header;  // "127.0.0.1:8080"
  std::string path = "/v1/ws";
  // wss://: TLS with this process-wide configuration (must outlive the connection); null: plain.
  const LeanTls* tls = nullptr;
};

struct WsLimits {
  size_t max_message_bytes = 1 << 20;  // one (reassembled) message from the server
  // Write queue bound. Overflow policy: send_text() refuses the frame and returns false;
  // the caller decides (tern-bench counts it as a local error and does not consider the
  // message sent).
  size_t max_queued_bytes = 4 << 20;
  size_t max_handshake_bytes = 16 * 1024;
};

// Implements LeanStream::Owner privately: only its own stream calls those methods.
class WsConnection : private LeanStream::Owner {
 public:
  // LeanStream::Phase under WebSocket names (same order: state() casts).
  enum class State { kClosed, kConnecting, kHandshaking, kOpen };
  enum class CloseMode {
    kGraceful,  // close frame (1000), then the socket is closed once it is written
    kAbort,     // SO_LINGER 0: the kernel sends RST at once, no TIME_WAIT on our side
  };

  class Handler {
   public:
    virtual void on_ws_open(WsConnection& c) = 0;
    // One complete text message; the view is valid only during the call.
    virtual void on_ws_text(WsConnection& c, std::string_view text) = 0;
    // The connection failed or the server closed it; `reason` is short and stable enough to
    // count by (e.g. "connect", "http 401", "eof", "close 1001"). Not called after close().
    virtual void on_ws_closed(WsConnection& c, std::string_view reason) = 0;

   protected:
    ~Handler() = default;
  };

  WsConnection(asio::io_context& io, ReadScratch& scratch, Handler& handler, WsLimits limits = {});
  ~WsConnection();
  WsConnection(const WsConnection&) = delete;
  WsConnection& operator=(const WsConnection&) = delete;

  // Starts connect + handshake; any previous connection is aborted first. The outcome arrives
  // as on_ws_open or on_ws_closed.
  void open(const WsTarget& target, std::string_view token);
  // Queues one text frame; false when not open or when the write queue is full.
  bool send_text(std::string_view text);
  // Closes without calling the handler. Idempotent.
  void close(CloseMode mode);

  State state() const { return static_cast<State>(stream_.phase()); }
  size_t queued_bytes() const { return stream_.queued_bytes(); }
  uint64_t frames_in() const { return frames_in_; }

 private:
  // LeanStream::Owner
  size_t on_stream_input(std::string_view in) override;
  void on_stream_failed(std::string_view reason) override;
  void on_stream_reset() override;

  bool handle_frame(uint8_t opcode, bool fin, std::string_view payload);
  bool queue_frame(uint8_t opcode, std::string_view payload);
  void fail(std::string_view reason) { stream_.fail(reason); }

  Handler& handler_;
  WsLimits limits_;
  LeanStream stream_;
  std::string key_;
  std::string message_;   // fragments of an incomplete message
  bool in_fragmented_ = false;
  uint64_t frames_in_ = 0;
};

}  // namespace tern::client::lean
