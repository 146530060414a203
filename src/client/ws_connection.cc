#include "client/ws_connection.h"

#include <deque>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "client/errors.h"
#include "client/tls.h"

namespace tern::client {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// NextLayer: beast::tcp_stream or TlsStream.
template <class NextLayer>
class BasicWsConnection final : public WsConnection, public std::enable_shared_from_this<BasicWsConnection<NextLayer>> {
  static constexpr bool kTls = std::is_same_v<NextLayer, TlsStream>;
  using std::enable_shared_from_this<BasicWsConnection<NextLayer>>::shared_from_this;

 public:
  BasicWsConnection(Strand strand, ServerUrl url, std::string token, WsOptions options, WsHandlers handlers);

  void start() override;
  bool send(std::string frame, bool droppable) override;
  void close() override;
  bool open() const override { return open_; }

 private:
  static websocket::stream<NextLayer> make_ws(Strand strand, const ServerUrl& url) {
    if constexpr (kTls)
      return websocket::stream<NextLayer>(strand, *url.tls);
    else
      return websocket::stream<NextLayer>(strand);
  }
  void on_resolve(beast::error_code ec, tcp::resolver::results_type results);
  void on_connect(beast::error_code ec);
  void upgrade();
  void on_handshake(beast::error_code ec);
  void read_next();
  void on_read(beast::error_code ec, size_t bytes);
  void write_next();
  void on_write(beast::error_code ec, size_t bytes);
  void finish(Error error);

  Strand strand_;
  tcp::resolver resolver_;
  websocket::stream<NextLayer> ws_;
  ServerUrl url_;
  std::string token_;
  WsOptions opts_;
  WsHandlers handlers_;
  websocket::response_type upgrade_response_;
  beast::flat_buffer read_buffer_;
  std::deque<std::string> queue_;
  bool writing_ = false;
  bool open_ = false;
  bool closing_ = false;
  bool finished_ = false;
};

template <class NextLayer>
BasicWsConnection<NextLayer>::BasicWsConnection(Strand strand, ServerUrl url, std::string token, WsOptions options,
                                                WsHandlers handlers)
    : strand_(strand),
      resolver_(strand),
      ws_(make_ws(strand, url)),
      url_(std::move(url)),
      token_(std::move(token)),
      opts_(options),
      handlers_(std::move(handlers)) {}

template <class NextLayer>
void BasicWsConnection<NextLayer>::start() {
  beast::get_lowest_layer(ws_).expires_after(std::chrono::milliseconds(opts_.connect_timeout_ms));
  resolver_.async_resolve(url_.host, std::to_string(url_.port),
                          [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type r) {
                            self->on_resolve(ec, std::move(r));
                          });
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::on_resolve(beast::error_code ec, tcp::resolver::results_type results) {
  if (closing_) return finish(network_error("closed"));
  if (ec) return finish(network_error("resolve: " + ec.message()));
  beast::get_lowest_layer(ws_).async_connect(
      results, [self = shared_from_this()](beast::error_code ec2, const tcp::endpoint&) { self->on_connect(ec2); });
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::on_connect(beast::error_code ec) {
  if (closing_) return finish(network_error("closed"));
  if (ec) return finish(network_error("connect: " + ec.message()));
  beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true));
  if constexpr (kTls) {
    if (auto r = prepare_tls(ws_.next_layer().native_handle(), url_.host); !r) return finish(r.error());
    ws_.next_layer().async_handshake(asio::ssl::stream_base::client, [self = shared_from_this()](beast::error_code ec2) {
      if (self->closing_) return self->finish(network_error("closed"));
      if (ec2) return self->finish(tls_handshake_error(ec2));
      self->upgrade();
    });
  } else {
    upgrade();
  }
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::upgrade() {
  ws_.set_option(websocket::stream_base::decorator([token = token_](websocket::request_type& req) {
    req.set(http::field::user_agent, "tern-client/1");
    req.set(http::field::authorization, "Bearer " + token);
  }));
  ws_.read_message_max(opts_.max_frame_bytes);
  ws_.async_handshake(upgrade_response_, url_.host_header(), url_.prefix + "/v1/ws",
                      [self = shared_from_this()](beast::error_code ec2) { self->on_handshake(ec2); });
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::on_handshake(beast::error_code ec) {
  if (ec) {
    if (upgrade_response_.result_int() == 401)
      return finish(make_error(ErrorCode::kUnauthorized, "the server refused the device token"));
    if (closing_) return finish(network_error("closed"));
    return finish(network_error("websocket upgrade: " + ec.message() +
                                (upgrade_response_.result_int() ? " (HTTP " + std::to_string(upgrade_response_.result_int()) + ")" : "")));
  }
  beast::get_lowest_layer(ws_).expires_never();
  websocket::stream_base::timeout t{};
  t.handshake_timeout = std::chrono::milliseconds(opts_.connect_timeout_ms);
  t.idle_timeout = std::chrono::milliseconds(opts_.idle_timeout_ms);
  t.keep_alive_pings = true;
  ws_.set_option(t);
  ws_.text(true);
  open_ = true;
  if (closing_) {  // close() came during the handshake
    open_ = false;
    ws_.async_close(websocket::close_code::normal, [self = shared_from_this()](beast::error_code) {
      self->finish(network_error("closed"));
    });
    return;
  }
  if (handlers_.on_open) handlers_.on_open();
  read_next();
  write_next();
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::read_next() {
  ws_.async_read(read_buffer_, [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_read(ec, n); });
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::on_read(beast::error_code ec, size_t) {
  if (ec) {
    std::string why = ec == websocket::error::closed
                          ? "closed by server (" + std::to_string(ws_.reason().code) + " " + std::string(ws_.reason().reason.data(), ws_.reason().reason.size()) + ")"
                          : "read: " + ec.message();
    return finish(network_error(why));
  }
  if (finished_) return;
  const auto data = read_buffer_.cdata();
  std::string_view text(static_cast<const char*>(data.data()), data.size());
  if (ws_.got_text() && !closing_ && handlers_.on_text) handlers_.on_text(text);
  read_buffer_.consume(read_buffer_.size());
  if (finished_) return;
  read_next();  // also while closing: the read reports the end of the connection
}

template <class NextLayer>
bool BasicWsConnection<NextLayer>::send(std::string frame, bool droppable) {
  if (!open_ || closing_ || finished_) return false;
  if (droppable && queue_.size() >= opts_.max_queue / 4) return false;
  if (queue_.size() >= opts_.max_queue) {
    // Too far behind to keep order and bound memory: start over on a new connection.
    close();
    return false;
  }
  queue_.push_back(std::move(frame));
  write_next();
  return true;
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::write_next() {
  if (writing_ || queue_.empty() || !open_ || closing_) return;
  writing_ = true;
  ws_.async_write(asio::buffer(queue_.front()),
                  [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_write(ec, n); });
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::on_write(beast::error_code ec, size_t) {
  writing_ = false;
  if (ec) {
    // The read side reports the closure; make sure it does by closing the socket.
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
    return;
  }
  if (!queue_.empty()) queue_.pop_front();
  write_next();
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::close() {
  if (closing_ || finished_) return;
  closing_ = true;
  if (!open_) {
    // Connecting: abort the pending operation; its handler reports the closure.
    resolver_.cancel();
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
    return;
  }
  open_ = false;
  // A close handshake needs the write side: with a write in progress, drop the socket
  // instead. The close handshake itself is bounded by the stream's handshake timeout.
  if (writing_) {
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
    return;
  }
  ws_.async_close(websocket::close_code::normal,
                  [self = shared_from_this()](beast::error_code) { self->finish(network_error("closed")); });
}

template <class NextLayer>
void BasicWsConnection<NextLayer>::finish(Error error) {
  if (finished_) return;
  finished_ = true;
  open_ = false;
  queue_.clear();
  beast::error_code ignored;
  beast::get_lowest_layer(ws_).socket().close(ignored);
  auto on_close = std::move(handlers_.on_close);
  handlers_ = {};
  if (on_close) on_close(std::move(error));
}

}  // namespace

std::shared_ptr<WsConnection> WsConnection::create(Strand strand, ServerUrl url, std::string token, WsOptions options,
                                                   WsHandlers handlers) {
  if (url.tls)
    return std::make_shared<BasicWsConnection<TlsStream>>(strand, std::move(url), std::move(token), options,
                                                          std::move(handlers));
  return std::make_shared<BasicWsConnection<beast::tcp_stream>>(strand, std::move(url), std::move(token), options,
                                                                std::move(handlers));
}

}  // namespace tern::client
