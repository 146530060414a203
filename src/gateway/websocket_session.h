// WebSocketSession: one live WebSocket connection (RFC 6455 over a Beast tcp_stream),
// the gateway's implementation of Connection.
//
// Ownership: owns itself through shared_ptr; every pending async handler holds one, and the
// service holds one (as Connection) while it wants to write. The session holds the service's
// FrameHandler until on_close() has run, then drops it (breaking the session ↔ handler cycle).
//
// Threading: each session runs on its own strand (the socket's executor, made per accepted
// connection). Every member below marked "strand" must run on it; FrameHandler callbacks are
// invoked on it. post(), id(), queue_limit() and shutdown() are callable from any thread.
//
// Lifecycle and guarantees:
//  - run() answers the upgrade (handshake bounded by handshake_timeout), then calls
//    service.open() once and reads text messages until the connection ends.
//  - handler->on_close() is called exactly once per open() call, whatever ends the
//    connection (peer close, error, ping timeout, slow consumer, close(), shutdown()),
//    provided the io_context keeps running until the session is gone. If the handshake
//    fails, open() is never called and neither is on_close().
//  - A binary message closes the connection with 1003; a message over max_frame_bytes
//    closes it with 1009 (Beast); both affect that connection only.
//  - Liveness: a peer silent for ping_interval is pinged; silent for 2*ping_interval, it is
//    closed. A close handshake that cannot finish within handshake_timeout (+1 s) is cut.
//
// Write queue (bounded, write_queue_frames frames, the one being written included):
//  - send() appends a shared frame (never copied); one async_write is in flight at a time.
//  - Overflow policy: send() on a full queue closes with 1008 "slow consumer", drops the
//    unsent frames (the client replays on reconnect) and returns false.
//  - on_writable() fires when the queue falls to <= limit/2 after having been above it, and
//    also when it becomes empty after having held >= 64 frames since it was last empty (so
//    a service pacing a replay in batches smaller than limit/2 still gets resumed). At most
//    one call per write completion.
//  - close(code, reason) from the service: frames queued before it are still written, then
//    the close frame; later send() calls are dropped (return false). shutdown() (close_all)
//    drops the unsent frames and closes at once.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "base/ids.h"
#include "gateway/gateway_context.h"
#include "gateway/service_interface.h"
#include "gateway/session_registry.h"

namespace tern::gateway {

class WebSocketSession final : public Session, public Connection {
 public:
  using Request = boost::beast::http::request<boost::beast::http::string_body>;

  // Takes over an HTTP connection whose upgrade request was already authenticated.
  WebSocketSession(boost::beast::tcp_stream&& stream, std::shared_ptr<GatewayContext> ctx,
                   DeviceRef device);
  ~WebSocketSession() override;

  // Registers the session and answers the upgrade. Strand (the stream's executor).
  void run(Request request);

  // Connection.
  bool send(std::shared_ptr<const std::string> frame) override;  // strand
  size_t queued() const override;                                // strand
  size_t queue_limit() const override;                           // any thread
  void close(uint16_t code, std::string reason) override;        // strand
  void post(std::function<void()> fn) override;                  // any thread
  uint64_t id() const override;                                  // any thread

  // Session: closes with `ws_code`, dropping unsent frames. Any thread.
  void shutdown(uint16_t ws_code) override;

 private:
  std::shared_ptr<WebSocketSession> self();
  bool on_strand() const;

  void on_accept(boost::beast::error_code ec);
  void do_read();
  void on_read(boost::beast::error_code ec, std::size_t bytes);
  void do_write();
  void on_write(boost::beast::error_code ec, std::size_t bytes);
  // Starts closing once: `drop` discards frames not yet being written.
  void start_close(uint16_t code, std::string_view reason, bool drop);
  void maybe_send_close();
  void on_close_sent(boost::beast::error_code ec);
  void on_close_deadline(boost::beast::error_code ec);
  void drop_unsent();
  void hard_close();
  // The connection is over: runs on_close() once and releases the handler.
  void finish();

  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  const boost::asio::any_io_executor executor_;  // the strand; a copy, safe from any thread
  const std::shared_ptr<GatewayContext> ctx_;
  const DeviceRef device_;
  const uint64_t id_;
  boost::asio::steady_timer close_deadline_;

  // Strand-only state.
  boost::beast::flat_buffer rd_buf_;
  std::deque<std::shared_ptr<const std::string>> queue_;  // front is in flight if writing_
  std::shared_ptr<FrameHandler> handler_;
  boost::beast::websocket::close_reason close_reason_;
  size_t peak_ = 0;            // largest queue size since the queue was last empty
  bool above_half_ = false;    // queue went above limit/2 and has not come back yet
  bool writing_ = false;       // an async_write is in flight
  bool accepted_ = false;      // handshake done
  bool opened_ = false;        // service.open() called (so on_close() is owed)
  bool close_started_ = false; // close requested; sends are dropped from now on
  bool close_sent_ = false;    // async_close issued
  bool finished_ = false;      // read loop over, on_close() delivered
};

}  // namespace tern::gateway
