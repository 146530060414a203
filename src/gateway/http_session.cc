#include "gateway/http_session.h"

#include <atomic>
#include <charconv>
#include <chrono>
#include <exception>
#include <string_view>
#include <utility>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <spdlog/spdlog.h>

#include "base/error.h"
#include "base/heap_trim.h"
#include "gateway/websocket_session.h"
#include "gateway/ws_codec.h"

namespace tern::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

namespace {

constexpr size_t kMaxHeaderBytes = 8 * 1024;
// Draining after an error response: enough for a rejected body, short enough to be cheap.
constexpr size_t kLingerBytes = 1024 * 1024;
constexpr std::chrono::seconds kLingerTime{2};
constexpr std::string_view kWebSocketPath = "/v1/ws";
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// Messages are our own constants (no quoting needed); never a token or a body.
std::string json_error(std::string_view code, std::string_view message) {
  std::string out;
  out.reserve(32 + code.size() + message.size());
  out.append(R"({"error":")").append(code).append(R"(","message":")").append(message).append("\"}");
  return out;
}

// Value of `name` in a raw query "a=1&token=x". Tokens are URL-safe, so no decoding.
std::string query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) return eq == std::string_view::npos ? std::string() : std::string(pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "Authorization: Bearer <token>" (scheme case-insensitive, RFC 7235); empty if absent.
std::string bearer_token(std::string_view authorization) {
  authorization = trim(authorization);
  constexpr std::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size() ||
      !beast::iequals(authorization.substr(0, kScheme.size()), kScheme) ||
      (authorization[kScheme.size()] != ' ' && authorization[kScheme.size()] != '\t'))
    return {};
  return std::string(trim(authorization.substr(kScheme.size())));
}

// Status line and the headers every response carries.
template <class Message>
void set_head(Message& m, const HttpResponse& response, unsigned version, bool close) {
  const int status = (response.status >= 100 && response.status <= 599) ? response.status : 500;
  m.result(static_cast<http::status>(status));
  m.version(version);
  m.set(http::field::server, "ternd");
  m.set(http::field::content_type, response.content_type);
  m.keep_alive(!close);
  for (const auto& [name, value] : response.headers) m.set(name, value);
}

bool is_http_parse_error(const beast::error_code& ec) {
  return ec.category() == beast::error_code(http::error::bad_method).category();
}

// The stream from the accepted socket (and, for TLS, its SSL).
template <class Stream>
Stream make_stream(net::ip::tcp::socket&& socket, SslPtr ssl) {
  if constexpr (std::is_same_v<Stream, TlsStream>)
    return Stream(std::move(socket), std::move(ssl));
  else
    return Stream(std::move(socket));
}

}  // namespace

template <class Stream>
BasicHttpSession<Stream>::BasicHttpSession(net::ip::tcp::socket&& socket, SslPtr ssl,
                                           std::shared_ptr<GatewayContext> ctx, size_t loop_index, ConnectionSlot slot)
    : stream_(make_stream<Stream>(std::move(socket), std::move(ssl))),
      executor_(stream_.get_executor()),
      ctx_(std::move(ctx)),
      id_(next_session_id()),
      loop_index_(loop_index),
      slot_(std::move(slot)),
      buffer_(kMaxHeaderBytes + ctx_->options.max_http_body_bytes + 16 * 1024) {}

template <class Stream>
BasicHttpSession<Stream>::~BasicHttpSession() {
  if (charged_) {
    ctx_->refund(charged_);
    HeapTrim::released(executor_, charged_);  // an answer never read, freed at once
  }
  ctx_->registry.remove(id_);
}

template <class Stream>
std::shared_ptr<BasicHttpSession<Stream>> BasicHttpSession<Stream>::self() {
  return std::static_pointer_cast<BasicHttpSession>(shared_from_this());
}

template <class Stream>
void BasicHttpSession<Stream>::run() {
  // Registered here, synchronously, so the listener's max_connections count is exact.
  const bool closing = ctx_->registry.add(id_, weak_from_this()).has_value();
  net::dispatch(executor_, [self = self(), closing] {
    if (closing) return self->close_socket();  // accepted while the server shuts down
    if constexpr (kTls) {
      // The handshake counts as reading the first request: same deadline.
      self->arm_read_deadline();
      const auto handshake_deadline = std::chrono::steady_clock::now() + self->ctx_->options.handshake_timeout;
      self->stream_.expires_at(std::min(handshake_deadline, self->read_deadline()));
      self->stream_.async_handshake(beast::bind_front_handler(&BasicHttpSession::on_handshake, self));
    } else {
      self->do_read();
    }
  });
}

template <class Stream>
void BasicHttpSession<Stream>::on_handshake(beast::error_code ec) {
  if (ec) {
    // Not TLS (plain HTTP to a TLS port), a bad ClientHello, or too slow: just closed.
    ctx_->metrics.tls_handshake_failures.inc();
    spdlog::debug("event=tls_handshake_failed session={} error=\"{}\"", id_, ec.message());
    return close_socket();
  }
  do_read();
}

template <class Stream>
void BasicHttpSession<Stream>::shutdown(uint16_t /*ws_code*/) {
  net::post(executor_, [self = self()] {
    if (self->upgraded_ || self->closed_) return;
    if (self->busy_)
      self->close_after_response_ = true;
    else
      self->close_socket();
  });
}

template <class Stream>
void BasicHttpSession<Stream>::do_read() {
  parser_.emplace();
  parser_->header_limit(kMaxHeaderBytes);
  // The body limit is applied once the headers are read (on_header): a streamed upload may
  // announce more than max_http_body_bytes, and Beast would refuse it at the header.
  parser_->body_limit(boost::none);
  // An absolute deadline for the whole request: a slow trickle of header bytes cannot
  // hold the connection past it.
  arm_read_deadline();
  http::async_read_header(stream_, buffer_, *parser_,
                          beast::bind_front_handler(&BasicHttpSession::on_header, self()));
}

template <class Stream>
void BasicHttpSession<Stream>::on_header(beast::error_code ec, std::size_t /*bytes*/) {
  if (ec) return on_read_error(ec);
  if (parser_->is_done()) return handle_request();
  if (parser_->get().find(http::field::upgrade) != parser_->get().end()) return read_buffered();  // never streamed
  decide_body();
}

template <class Stream>
void BasicHttpSession<Stream>::read_buffered() {
  const auto length = parser_->content_length();
  if (length && *length > ctx_->options.max_http_body_bytes) return on_read_error(http::error::body_limit);
  parser_->body_limit(ctx_->options.max_http_body_bytes);  // chunked bodies are counted as they come
  if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
    net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                     beast::bind_front_handler(&BasicHttpSession::on_continue_written, self()));
    return;
  }
  read_body();
}

template <class Stream>
void BasicHttpSession<Stream>::on_continue_written(beast::error_code ec, std::size_t /*bytes*/) {
  if (ec) return close_socket();
  read_body();
}

template <class Stream>
void BasicHttpSession<Stream>::arm_read_deadline() {
  stream_.expires_at(read_deadline());
}

template <class Stream>
std::chrono::steady_clock::time_point BasicHttpSession<Stream>::read_deadline() const {
  const auto now = std::chrono::steady_clock::now();
  auto deadline = now + ctx_->options.http_idle_timeout;
  if (!slot_.is_authenticated()) deadline = std::min(deadline, accepted_at_ + ctx_->options.unauthenticated_timeout);
  if (deadline <= now) deadline = now + std::chrono::milliseconds(1);  // expires at once
  return deadline;
}

template <class Stream>
bool BasicHttpSession<Stream>::authenticate_connection() {
  if (slot_.authenticate()) return true;
  ctx_->metrics.connections_rejected.inc();
  spdlog::debug("event=connection_rejected reason=max_connections session={}", id_);
  return false;
}

template <class Stream>
void BasicHttpSession<Stream>::read_body() {
  arm_read_deadline();
  http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&BasicHttpSession::on_read, self()));
}

template <class Stream>
void BasicHttpSession<Stream>::on_read(beast::error_code ec, std::size_t /*bytes*/) {
  if (ec) return on_read_error(ec);
  handle_request();
}

template <class Stream>
void BasicHttpSession<Stream>::on_read_error(beast::error_code ec) {
  if (ec == net::error::operation_aborted || closed_) return close_socket();
  if (ec == http::error::end_of_stream || ec == http::error::partial_message || ec == beast::error::timeout)
    return close_socket();  // peer went away or idled out: nobody to answer
  if (ec == http::error::body_limit || ec == http::error::header_limit || ec == http::error::buffer_overflow) {
    ctx_->metrics.http_requests.inc();
    return write_error(413, code_name(ErrorCode::kTooLarge),
                       ec == http::error::header_limit ? "request headers too large" : "request body too large",
                       true);
  }
  if (is_http_parse_error(ec)) {
    ctx_->metrics.http_requests.inc();
    return write_error(400, code_name(ErrorCode::kMalformed), "malformed HTTP request", true);
  }
  spdlog::debug("event=http_read_failed session={} error=\"{}\"", id_, ec.message());
  close_socket();
}

template <class Stream>
void BasicHttpSession<Stream>::handle_request() {
  ctx_->metrics.http_requests.inc();
  Request req = parser_->release();
  parser_.reset();
  // The service may take its time; the deadline is for reading only.
  stream_.expires_never();
  version_ = req.version();
  keep_alive_ = req.keep_alive();
  busy_ = true;

  const std::string_view target = req.target();
  const size_t qmark = target.find('?');
  std::string path(target.substr(0, qmark));
  std::string query = qmark == std::string_view::npos ? std::string() : std::string(target.substr(qmark + 1));
  std::string bearer = bearer_token(req[http::field::authorization]);

  if (path == kWebSocketPath && req.find(http::field::upgrade) != req.end() &&
      beast::iequals(trim(req[http::field::upgrade]), "websocket"))
    return upgrade(std::move(req), query, bearer);

  HttpRequest request = request_head(req.base());
  request.body = std::move(req.body());
  authenticate_bearer(bearer, [self = self(), request = std::move(request)]() mutable {
    self->serve(std::move(request));
  });
}

template <class Stream>
void BasicHttpSession<Stream>::serve(HttpRequest request) {
  HttpReply reply = make_reply();
  try {
    ctx_->service.handle_http(std::move(request), reply);
  } catch (const std::exception& e) {
    spdlog::error("event=handler_exception where=handle_http session={} what=\"{}\"", id_, e.what());
    reply(HttpResponse{500, json_error(code_name(ErrorCode::kInternal), "internal error"), "application/json"});
  } catch (...) {
    spdlog::error("event=handler_exception where=handle_http session={} what=unknown", id_);
    reply(HttpResponse{500, json_error(code_name(ErrorCode::kInternal), "internal error"), "application/json"});
  }
}

template <class Stream>
HttpReply BasicHttpSession<Stream>::make_reply() {
  // Invoked once (later calls ignored), from any thread; keeps the session alive until then.
  auto done = std::make_shared<std::atomic<bool>>(false);
  return [self = self(), done](HttpResponse response) {
    if (done->exchange(true)) return;
    net::post(self->executor_, [self, response = std::move(response)]() mutable {
      self->write_response(std::move(response), false);
    });
  };
}

template <class Stream>
void BasicHttpSession<Stream>::check_token(const std::string& token, TokenChecked then) {
  // Once: a service that throws after answering (or answers twice) is not asked again.
  auto answered = std::make_shared<std::atomic<bool>>(false);
  auto next = std::make_shared<TokenChecked>(std::move(then));
  auto done = [self = self(), answered, next](Result<DeviceRef> r) {
    if (answered->exchange(true)) return;
    // Inline when the service answered at once on this loop; else posted back to it.
    net::dispatch(self->executor_, [next, r = std::move(r)]() mutable { (*next)(std::move(r)); });
  };
  try {
    ctx_->service.authenticate(token, std::move(done));
  } catch (const std::exception& e) {
    spdlog::error("event=handler_exception where=authenticate session={} what=\"{}\"", id_, e.what());
    if (!answered->exchange(true)) (*next)(std::nullopt);
  } catch (...) {
    spdlog::error("event=handler_exception where=authenticate session={} what=unknown", id_);
    if (!answered->exchange(true)) (*next)(std::nullopt);
  }
}

template <class Stream>
void BasicHttpSession<Stream>::authenticate_bearer(const std::string& bearer, std::function<void()> next) {
  // The first bearer token on a connection decides whether it counts as authenticated.
  if (slot_.is_authenticated() || auth_tried_ || bearer.empty()) return next();
  auth_tried_ = true;
  check_token(bearer, [self = self(), next = std::move(next)](std::optional<Result<DeviceRef>> device) {
    // Invalid (or the service threw): the request goes on unauthenticated; the service
    // answers it itself.
    if (device && device->ok() && !self->authenticate_connection())
      return self->write_error(503, code_name(ErrorCode::kOverloaded), "too many connections", true);
    next();
  });
}

template <class Stream>
HttpRequest BasicHttpSession<Stream>::request_head(const http::request_header<>& h) const {
  const std::string_view target = h.target();
  const size_t qmark = target.find('?');
  HttpRequest r;
  r.method = std::string(h.method_string());
  r.path = std::string(target.substr(0, qmark));
  r.query = qmark == std::string_view::npos ? std::string() : std::string(target.substr(qmark + 1));
  r.bearer_token = bearer_token(h[http::field::authorization]);
  r.range = std::string(h[http::field::range]);
  r.content_range = std::string(h[http::field::content_range]);
  if (auto it = h.find(http::field::content_length); it != h.end()) {
    uint64_t n = 0;
    const std::string_view v = it->value();
    auto [p, e] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (e == std::errc() && p == v.data() + v.size()) r.content_length = n;
  }
  boost::system::error_code peer_ec;
  const auto peer = stream_.socket().remote_endpoint(peer_ec);
  if (!peer_ec) r.remote_address = peer.address().to_string();
  return r;
}

template <class Stream>
void BasicHttpSession<Stream>::decide_body() {
  // Nothing more is read from the socket until the service decided (busy_ holds a shutdown
  // back until then): a decision that reads a remote store answers later, from another thread.
  busy_ = true;
  auto answered = std::make_shared<std::atomic<bool>>(false);
  auto done = [self = self(), answered](BodyDecision decision) {
    if (answered->exchange(true)) return;
    // Inline when the service answered at once on this loop; else posted back to it.
    net::dispatch(self->executor_,
                  [self, decision = std::move(decision)]() mutable { self->on_body_decided(std::move(decision)); });
  };
  try {
    ctx_->service.decide_body(request_head(parser_->get()), done);
  } catch (...) {
    spdlog::error("event=handler_exception where=open_body session={}", id_);
    done(HttpResponse{500, json_error(code_name(ErrorCode::kInternal), "internal error"), "application/json"});
  }
}

template <class Stream>
void BasicHttpSession<Stream>::on_body_decided(BodyDecision decision) {
  busy_ = false;
  if (closed_) return;  // a streaming sink, if any, is dropped unfinished
  // The server began shutting down meanwhile: no new request is taken.
  if (close_after_response_) return close_socket();
  if (std::holds_alternative<std::monostate>(decision)) return read_buffered();
  const auto& h = parser_->get();
  ctx_->metrics.http_requests.inc();
  version_ = h.version();
  keep_alive_ = h.keep_alive();
  busy_ = true;
  const std::string bearer = bearer_token(h[http::field::authorization]);
  authenticate_bearer(bearer, [self = self(), decision = std::move(decision)]() mutable {
    self->stream_body(std::move(decision));
  });
}

template <class Stream>
void BasicHttpSession<Stream>::stream_body(BodyDecision decision) {
  const auto& h = parser_->get();
  if (auto* refuse = std::get_if<HttpResponse>(&decision)) {
    // Answered before the body is read: the connection cannot be reused (the body follows).
    stream_.expires_never();
    write_response(std::move(*refuse), true);
    return;
  }
  sink_ = std::move(std::get<std::shared_ptr<BodySink>>(decision));
  const bool expect_continue = beast::iequals(h[http::field::expect], "100-continue");
  stream_parser_.emplace(std::move(*parser_));
  parser_.reset();
  stream_parser_->body_limit(boost::none);  // the service bounded it by Content-Length
  chunk_.resize(64 * 1024);
  if (expect_continue) {
    net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                     [self = self()](beast::error_code ec, std::size_t) {
                       if (ec) {
                         self->sink_.reset();
                         return self->close_socket();
                       }
                       self->read_stream();
                     });
    return;
  }
  read_stream();
}

template <class Stream>
void BasicHttpSession<Stream>::read_stream() {
  auto& body = stream_parser_->get().body();
  body.data = chunk_.data();
  body.size = chunk_.size();
  // Idle deadline per chunk: a big upload may take long, a stalled one may not.
  if (slot_.is_authenticated())
    stream_.expires_after(ctx_->options.http_idle_timeout);
  else
    arm_read_deadline();
  http::async_read(stream_, buffer_, *stream_parser_, beast::bind_front_handler(&BasicHttpSession::on_stream_read, self()));
}

template <class Stream>
void BasicHttpSession<Stream>::on_stream_read(beast::error_code ec, std::size_t /*bytes*/) {
  if (ec == http::error::need_buffer) ec = {};
  const size_t got = chunk_.size() - stream_parser_->get().body().size;
  if (ec) {
    // What did arrive still goes to the sink (a resumable upload keeps it), then it is
    // dropped unfinished.
    if (got > 0) (void)sink_->write(std::string_view(chunk_.data(), got));
    // Truncated (peer gone, timeout, bad framing): the sink is dropped unfinished.
    sink_.reset();
    stream_parser_.reset();
    chunk_ = {};
    if (is_http_parse_error(ec) && ec != http::error::partial_message)
      return write_error(400, code_name(ErrorCode::kMalformed), "malformed HTTP request", true);
    return close_socket();
  }
  if (got > 0) {
    auto r = sink_->write(std::string_view(chunk_.data(), got));
    if (!r) {
      sink_.reset();
      stream_parser_.reset();
      chunk_ = {};
      write_response(HttpResponse{http_status(r.error().code),
                                  json_error(code_name(r.error().code), r.error().message), "application/json"},
                     true);
      return;
    }
  }
  if (!stream_parser_->is_done()) return read_stream();
  stream_.expires_never();
  stream_parser_.reset();
  chunk_ = {};
  auto sink = std::move(sink_);
  HttpReply reply = make_reply();
  try {
    sink->finish(reply);
  } catch (...) {
    spdlog::error("event=handler_exception where=body_finish session={}", id_);
    reply(HttpResponse{500, json_error(code_name(ErrorCode::kInternal), "internal error"), "application/json"});
  }
}

template <class Stream>
void BasicHttpSession<Stream>::upgrade(Request request, const std::string& query, const std::string& bearer) {
  // RFC 6455 §4.2.1. (Beast's is_upgrade() also wants HTTP/1.1 and a Connection token.)
  const std::string_view version = trim(request[http::field::sec_websocket_version]);
  const std::string_view key = trim(request[http::field::sec_websocket_key]);
  if (!beast::websocket::is_upgrade(request) || version != "13" || !ws::valid_client_key(key))
    return write_error(400, code_name(ErrorCode::kMalformed), "bad WebSocket upgrade request", true);

  const std::string token = bearer.empty() ? query_param(query, "token") : bearer;
  if (token.empty())
    return write_error(401, code_name(ErrorCode::kUnauthorized), "missing token", false);

  // Nothing is read from the socket until the service answered (busy_ holds a shutdown
  // back until then).
  check_token(token, [self = self(), accept = ws::accept_key(key)](std::optional<Result<DeviceRef>> device) {
    self->on_upgrade_checked(std::move(device), accept);
  });
}

template <class Stream>
void BasicHttpSession<Stream>::on_upgrade_checked(std::optional<Result<DeviceRef>> device, const std::string& accept) {
  // The server began shutting down while the token was checked: no new WebSocket.
  if (close_after_response_) return close_socket();
  if (!device) return write_error(500, code_name(ErrorCode::kInternal), "internal error", false);
  if (!device->ok()) return write_error(401, code_name(ErrorCode::kUnauthorized), "bad token", false);

  if (!authenticate_connection())
    return write_error(503, code_name(ErrorCode::kOverloaded), "too many connections", true);

  // The socket moves to the WebSocket session, which shares our loop (and strand); we end
  // here. Leave the registry first so the connection is never counted twice.
  ctx_->registry.remove(id_);
  upgraded_ = true;
  busy_ = false;
  const auto pending = buffer_.data();
  std::string early(static_cast<const char*>(pending.data()), pending.size());
  buffer_.clear();
  buffer_.shrink_to_fit();
  std::shared_ptr<WebSocketSession> ws;
  if constexpr (kTls) {
    // The SSL goes along with whatever it has buffered (records past the request).
    auto [socket, ssl] = stream_.release();
    ws = std::make_shared<WebSocketSession>(std::move(socket), std::move(ssl), ctx_, loop_index_, std::move(slot_),
                                            std::move(*device).value());
  } else {
    ws = std::make_shared<WebSocketSession>(stream_.release_socket(), SslPtr(), ctx_, loop_index_, std::move(slot_),
                                            std::move(*device).value());
  }
  ws->run(accept, std::move(early));
}

template <class Stream>
void BasicHttpSession<Stream>::write_error(int status, std::string_view code, std::string_view message, bool close) {
  busy_ = true;
  write_response(HttpResponse{status, json_error(code, message), "application/json"}, close);
}

template <class Stream>
void BasicHttpSession<Stream>::write_response(HttpResponse response, bool close) {
  if (closed_) return;
  if (response.source) return write_streamed(std::move(response), close);
  // The response is charged to the process-wide byte budget until written (headers: an
  // estimate); one that does not fit is refused with 503 and the connection closed.
  constexpr size_t kHeaderEstimate = 256;
  size_t charge = response.body.size() + kHeaderEstimate;
  if (ctx_->global_budget_exceeded(charge)) {
    ctx_->metrics.http_overloaded.inc();
    spdlog::debug("event=http_overloaded session={} bytes={}", id_, response.body.size());
    response = HttpResponse{503, json_error(code_name(ErrorCode::kOverloaded), "server busy"), "application/json"};
    charge = response.body.size() + kHeaderEstimate;  // small: always admitted
    close = true;
  }
  ctx_->charge(charge);
  charged_ += charge;
  close = close || !keep_alive_ || close_after_response_;
  response_.emplace();
  set_head(*response_, response, version_, close);
  response_->body() = std::move(response.body);
  response_->prepare_payload();
  // A client that never reads its response cannot pin the session.
  stream_.expires_after(ctx_->options.http_idle_timeout);
  http::async_write(stream_, *response_, beast::bind_front_handler(&BasicHttpSession::on_write, self(), close));
}

template <class Stream>
void BasicHttpSession<Stream>::write_streamed(HttpResponse response, bool close) {
  constexpr size_t kCharge = 64 * 1024 + 256;  // one piece in flight, plus the header
  if (ctx_->global_budget_exceeded(kCharge)) {
    ctx_->metrics.http_overloaded.inc();
    return write_response(HttpResponse{503, json_error(code_name(ErrorCode::kOverloaded), "server busy"),
                                       "application/json"},
                          true);
  }
  ctx_->charge(kCharge);
  charged_ += kCharge;
  close = close || !keep_alive_ || close_after_response_;
  stream_head_.emplace();
  set_head(*stream_head_, response, version_, close);
  stream_head_->content_length(response.source_length);
  source_ = std::move(response.source);
  source_left_ = response.source_length;
  chunk_.resize(64 * 1024);
  stream_.expires_after(ctx_->options.http_idle_timeout);
  http::async_write(stream_, *stream_head_, [self = self(), close](beast::error_code ec, std::size_t) {
    if (ec) return self->on_write(close, ec, 0);
    self->pump_source(close);
  });
}

template <class Stream>
void BasicHttpSession<Stream>::pump_source(bool close) {
  if (source_left_ == 0) {
    source_.reset();
    stream_head_.reset();
    chunk_ = {};
    return on_write(close, {}, 0);
  }
  const size_t want = static_cast<size_t>(std::min<uint64_t>(source_left_, chunk_.size()));
  auto got = source_->read(chunk_.data(), want);
  if (!got || *got == 0) {
    // The body cannot be completed: the client sees a short body and a closed connection.
    spdlog::warn("event=http_source_failed session={}", id_);
    source_.reset();
    return on_write(true, net::error::broken_pipe, 0);
  }
  source_left_ -= *got;
  stream_.expires_after(ctx_->options.http_idle_timeout);
  net::async_write(stream_, net::buffer(chunk_.data(), *got), [self = self(), close](beast::error_code ec, std::size_t) {
    if (ec) {
      self->source_.reset();
      return self->on_write(close, ec, 0);
    }
    self->pump_source(close);
  });
}

template <class Stream>
void BasicHttpSession<Stream>::on_write(bool close, beast::error_code ec, std::size_t /*bytes*/) {
  busy_ = false;
  response_.reset();
  ctx_->refund(charged_);
  charged_ = 0;
  if (ec) return close_socket();
  if (close || close_after_response_) return linger();
  do_read();
}

template <class Stream>
void BasicHttpSession<Stream>::linger() {
  // Half-close, then read and discard what the client still sends (e.g. the rest of a
  // rejected body) until it closes: closing with unread input would send a reset that can
  // destroy the response before the client reads it.
  beast::error_code ec;
  if constexpr (kTls)
    stream_.shutdown_send();  // close_notify first, then the TCP half-close
  else
    stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
  if (ec) return close_socket();
  linger_left_ = kLingerBytes;
  stream_.expires_after(kLingerTime);
  buffer_.clear();
  stream_.async_read_some(buffer_.prepare(4096), beast::bind_front_handler(&BasicHttpSession::on_linger, self()));
}

template <class Stream>
void BasicHttpSession<Stream>::on_linger(beast::error_code ec, std::size_t bytes) {
  if (ec || closed_ || bytes >= linger_left_) return close_socket();
  linger_left_ -= bytes;
  stream_.async_read_some(buffer_.prepare(4096), beast::bind_front_handler(&BasicHttpSession::on_linger, self()));
}

template <class Stream>
void BasicHttpSession<Stream>::close_socket() {
  if (closed_ || upgraded_) return;
  closed_ = true;
  if constexpr (!kTls) {
    beast::error_code ec;
    stream_.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  }
  stream_.close();
}

template class BasicHttpSession<beast::tcp_stream>;
template class BasicHttpSession<TlsStream>;

}  // namespace tern::gateway
