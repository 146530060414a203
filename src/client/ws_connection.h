// One WebSocket connection to /v1/ws: connect, handshake with the bearer token, read text
// frames, write from a bounded queue, close. It does not reconnect: the Client makes a new
// one per attempt and ignores callbacks of a connection it has dropped.
// Internal to the SDK (not part of the public header set).
//
// Thread affinity: everything (calls and callbacks) runs on the strand given at
// construction. Write queue: at most max_queue frames. Over a quarter of it, droppable
// frames (typing, presence) are dropped; at the limit a non-droppable frame closes the
// connection instead (everything it carried is recovered on reconnect: the outbox resends,
// the server replays).
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "base/result.h"
#include "client/server_url.h"

namespace tern::client {

struct WsHandlers {
  std::function<void()> on_open;
  std::function<void(std::string_view text)> on_text;
  // Exactly once, after on_open or instead of it. kUnauthorized when the upgrade was refused
  // with 401 (the token is bad: reconnecting will not help).
  std::function<void(Error)> on_close;
};

struct WsOptions {
  int64_t connect_timeout_ms = 10'000;  // TCP connect plus upgrade
  int64_t idle_timeout_ms = 30'000;     // pings at half of it; silence for all of it: closed
  size_t max_queue = 4096;
  size_t max_frame_bytes = 4 << 20;
};

class WsConnection : public std::enable_shared_from_this<WsConnection> {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  WsConnection(Strand strand, ServerUrl url, std::string token, WsOptions options, WsHandlers handlers);

  void start();
  // Queues a text frame; false if it was dropped (droppable and the queue is busy) or the
  // connection is not open.
  bool send(std::string frame, bool droppable = false);
  // Closes (normal closure); on_close follows.
  void close();
  bool open() const { return open_; }

 private:
  void on_resolve(boost::beast::error_code ec, boost::asio::ip::tcp::resolver::results_type results);
  void on_connect(boost::beast::error_code ec);
  void on_handshake(boost::beast::error_code ec);
  void read_next();
  void on_read(boost::beast::error_code ec, size_t bytes);
  void write_next();
  void on_write(boost::beast::error_code ec, size_t bytes);
  void finish(Error error);

  Strand strand_;
  boost::asio::ip::tcp::resolver resolver_;
  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  ServerUrl url_;
  std::string token_;
  WsOptions opts_;
  WsHandlers handlers_;
  boost::beast::websocket::response_type upgrade_response_;
  boost::beast::flat_buffer read_buffer_;
  std::deque<std::string> queue_;
  bool writing_ = false;
  bool open_ = false;
  bool closing_ = false;
  bool finished_ = false;
};

}  // namespace tern::client
