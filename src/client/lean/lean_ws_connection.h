// WsConnection: one client WebSocket connection (RFC 6455, text frames, no extensions) on an
// Asio io_context, built for holding thousands per thread: it owns a TCP socket, the bytes
// of a partial frame (usually none), a bounded write queue and a fragment buffer (usually
// empty). Reads land in a ReadScratch shared by all connections of the thread; complete frames
// are handed to the Handler straight out of it, so a message costs no copy and no allocation
// here. Frames queued during one handler run go out in one write.
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
#include <vector>

namespace tern::client::lean {

namespace asio = boost::asio;

// One read buffer shared by every connection of a thread; must outlive them.
struct ReadScratch {
  std::vector<char> bytes = std::vector<char>(64 * 1024);
};

struct WsTarget {
  asio::ip::tcp::endpoint server;
  // When set, the socket binds to this local address before connecting (the port is left to
  // connect(), with IP_BIND_ADDRESS_NO_PORT), so that connections spread over several
  // 127.0.0.x source addresses when one address's ephemeral ports run out.
  std::optional<asio::ip::address> source;
  std::string host_header;  // "127.0.0.1:8080"
  std::string path = "/v1/ws";
};

struct WsLimits {
  size_t max_message_bytes = 1 << 20;  // one (reassembled) message from the server
  // Write queue bound. Overflow policy: send_text() refuses the frame and returns false;
  // the caller decides (tern-bench counts it as a local error and does not consider the
  // message sent).
  size_t max_queued_bytes = 4 << 20;
  size_t max_handshake_bytes = 16 * 1024;
};

class WsConnection {
 public:
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

  State state() const { return state_; }
  size_t queued_bytes() const { return out_.size() + inflight_.size(); }
  uint64_t frames_in() const { return frames_in_; }

 private:
  void start_read();
  void on_readable();
  // Parses everything available; false when the connection was closed meanwhile.
  bool consume(const char* data, size_t n);
  bool handle_frame(uint8_t opcode, bool fin, std::string_view payload);
  bool queue_frame(uint8_t opcode, std::string_view payload);
  void schedule_flush();
  void start_write();
  void fail(std::string_view reason);
  void reset_socket(bool abort);

  asio::io_context& io_;
  ReadScratch& scratch_;
  Handler& handler_;
  WsLimits limits_;
  asio::ip::tcp::socket socket_;
  State state_ = State::kClosed;
  // Bumped on every open/close: completions of an older connection see a different value
  // and do nothing.
  uint64_t gen_ = 0;
  std::string key_;
  std::string pending_;   // bytes of an incomplete frame (or handshake head)
  std::string message_;   // fragments of an incomplete message
  bool in_fragmented_ = false;
  std::string out_;       // frames waiting for the current write to finish
  std::string inflight_;  // frames being written
  bool writing_ = false;
  bool flush_posted_ = false;
  bool close_after_write_ = false;
  uint64_t frames_in_ = 0;
};

}  // namespace tern::client::lean
