// HttpSession (TlsHttpSession): one accepted TCP (TLS) connection speaking HTTP/1.1 (keep-alive), until it is
// closed or upgraded to a WebSocketSession.
//
// Ownership: owns itself through shared_ptr (pending handlers and the HttpReply given to the
// service each hold one). On upgrade the socket moves to a new WebSocketSession and this
// object ends.
//
// Threading: runs on the connection's loop (the socket's executor: the loop's io_context,
// or a strand of it when that io_context is shared by several threads). run() and
// shutdown() may be called from any thread. ServiceInterface::handle_http and
// ::authenticate are called on that loop; the HttpReply and authenticate's answer may be
// invoked from any thread (posted back onto the loop before they are used; nothing is read
// from the socket while a token is being checked).
//
// Behaviour:
//  - One request at a time: the next one is read only after the response is written, so
//    pipelined requests wait in the socket buffer (bounded by the kernel).
//  - Limits: request headers 8 KiB, body max_http_body_bytes (413 "too_large" and close);
//    a whole request must arrive within http_idle_timeout (else the connection is closed);
//    malformed HTTP → 400 "malformed" and close. "Expect: 100-continue" is honoured.
//  - `GET /v1/ws` with an `Upgrade: websocket` header: the upgrade must be valid
//    (GET, Connection: upgrade, Sec-WebSocket-Version: 13, a Sec-WebSocket-Key of 16
//    bytes), else 400 "malformed"; token from "Authorization: Bearer" or `?token=`; a
//    missing or refused token → 401 "unauthorized" and no upgrade. Then the raw socket and
//    any bytes already read past the request go to a WebSocketSession, which writes the 101.
//    Other requests go to service.handle_http.
//  - Budgets: the connection starts in the unauthenticated budget and must authenticate
//    within unauthenticated_timeout of being accepted (else it is closed, after the
//    response in progress); it authenticates by a valid upgrade, or by the first request
//    that carries a bearer token service.authenticate() accepts (checked once per
//    connection). Authenticating over max_connections → 503 `overloaded` and close.
//  - Each response is charged to the process-wide byte budget while it is written; one
//    that does not fit is replaced by 503 `overloaded` and the connection closed.
//  - A connection that ends with an error response is half-closed and drained briefly
//    (bounded in bytes and time) so the client reads the response instead of a reset.
//  - Streamed bodies (uploads): once the headers of a request with a body are read, the
//    service's decide_body() decides (inline or later; nothing more is read meanwhile). A BodySink gets the body in chunks of at most 64 KiB
//    (one buffer per session, reused), with the idle deadline re-armed per chunk instead of
//    one deadline for the whole request; max_http_body_bytes does not apply (the service
//    bounds the size from Content-Length). A connection error drops the sink unfinished.
//  - Streamed responses (downloads): a response with a BodySource is written as its header
//    (Content-Length = source_length) and then 64 KiB pieces read from the source one at a
//    time; one piece at a time is charged to the global byte budget.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/string_body.hpp>
#include <vector>

#include "gateway/gateway_context.h"
#include "gateway/service_interface.h"
#include "gateway/session_registry.h"
#include "gateway/tls_stream.h"

namespace tern::gateway {

// Stream: boost::beast::tcp_stream (plain TCP) or TlsStream (the TLS handshake comes first,
// bounded by handshake_timeout and the unauthenticated deadline; a failed handshake closes
// the connection). A template, not a virtual stream: the plain path stays as it was.
template <class Stream>
class BasicHttpSession final : public Session {
 public:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;
  // `socket` was accepted on loops[loop_index]; `slot` is its place in the unauthenticated
  // connection budget; `ssl` is its TLS state (TlsStream only; null for plain TCP).
  BasicHttpSession(boost::asio::ip::tcp::socket&& socket, SslPtr ssl, std::shared_ptr<GatewayContext> ctx,
                   size_t loop_index, ConnectionSlot slot);
  ~BasicHttpSession() override;

  // Registers the session and starts serving on its strand. Any thread.
  void run();
  // Closes now if idle, or right after the response in progress. Any thread.
  void shutdown(uint16_t ws_code) override;

 private:
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;

  std::shared_ptr<BasicHttpSession> self();
  void on_handshake(boost::beast::error_code ec);

  void do_read();
  void on_header(boost::beast::error_code ec, std::size_t bytes);
  void on_continue_written(boost::beast::error_code ec, std::size_t bytes);
  void read_body();
  void on_read(boost::beast::error_code ec, std::size_t bytes);
  void on_read_error(boost::beast::error_code ec);
  void handle_request();
  void upgrade(Request request, const std::string& query, const std::string& bearer);
  // Moves the connection to the authenticated budget; false if that is full.
  bool authenticate_connection();
  // The read deadline: http_idle_timeout, cut to the authentication deadline.
  void arm_read_deadline();
  std::chrono::steady_clock::time_point read_deadline() const;
  void write_response(HttpResponse response, bool close);
  void write_error(int status, std::string_view code, std::string_view message, bool close);
  void on_write(bool close, boost::beast::error_code ec, std::size_t bytes);
  void linger();
  void on_linger(boost::beast::error_code ec, std::size_t bytes);
  void close_socket();
  // After the headers of a request with a body: asks the service what becomes of the body
  // (decide_body, answered inline or later from any thread), then on_body_decided() on this
  // loop buffers it (read_buffered), streams it into a sink or answers at once (streaming:
  // see the header comment).
  void decide_body();
  void on_body_decided(BodyDecision decision);
  void read_buffered();
  // Asks the service about a token; `then` runs on this session's loop, once, with the
  // answer (nullopt: the service threw).
  using TokenChecked = std::function<void(std::optional<Result<DeviceRef>>)>;
  void check_token(const std::string& token, TokenChecked then);
  // The first bearer token of a connection authenticates it; then `next` (not when 503 was
  // written because the authenticated budget is full).
  void authenticate_bearer(const std::string& bearer, std::function<void()> next);
  void on_upgrade_checked(std::optional<Result<DeviceRef>> device, const std::string& accept);
  void serve(HttpRequest request);       // hands a whole request to the service
  void stream_body(BodyDecision decision);  // on_body_decided() after the bearer check
  HttpReply make_reply();  // the service's answer, posted back onto this session's loop  // false: over max_connections (503 written)
  HttpRequest request_head(const boost::beast::http::request_header<>& h) const;
  void read_stream();
  void on_stream_read(boost::beast::error_code ec, std::size_t bytes);
  void write_streamed(HttpResponse response, bool close);
  void pump_source(bool close);

  Stream stream_;
  const boost::asio::any_io_executor executor_;  // the strand; a copy, safe from any thread
  const std::shared_ptr<GatewayContext> ctx_;
  const uint64_t id_;
  const size_t loop_index_;
  const std::chrono::steady_clock::time_point accepted_at_ = std::chrono::steady_clock::now();
  ConnectionSlot slot_;

  // Strand-only state.
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::optional<Response> response_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool busy_ = false;                  // a request is with the service or being answered
  bool close_after_response_ = false;  // shutdown() arrived while busy_
  bool upgraded_ = false;              // the socket now belongs to a WebSocketSession
  bool closed_ = false;
  bool auth_tried_ = false;            // service.authenticate() was asked for a bearer token
  size_t linger_left_ = 0;
  size_t charged_ = 0;                 // bytes of the response in progress, in the global budget
  // Streaming state (strand-only).
  std::optional<boost::beast::http::request_parser<boost::beast::http::buffer_body>> stream_parser_;
  std::shared_ptr<BodySink> sink_;
  std::optional<boost::beast::http::response<boost::beast::http::empty_body>> stream_head_;
  std::shared_ptr<BodySource> source_;
  uint64_t source_left_ = 0;
  std::vector<char> chunk_;  // the one transfer buffer, allocated while streaming
};

using HttpSession = BasicHttpSession<boost::beast::tcp_stream>;
using TlsHttpSession = BasicHttpSession<TlsStream>;
extern template class BasicHttpSession<boost::beast::tcp_stream>;
extern template class BasicHttpSession<TlsStream>;

}  // namespace tern::gateway
