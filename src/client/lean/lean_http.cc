#include "client/lean/lean_http.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "client/tls.h"

namespace tern::client::lean {
namespace asio = boost::asio;
namespace http = boost::beast::http;

Result<ServerAddress> parse_server_url(std::string_view url, const std::string& ca_file) {
  if (url.starts_with("mqtts://"))
    return make_error(ErrorCode::kInvalidArgument, "mqtts:// is not supported: tern-bench speaks MQTT over plain TCP only");
  bool tls = false;
  for (std::string_view scheme : {"https://", "wss://"})
    if (url.starts_with(scheme)) {
      url.remove_prefix(scheme.size());
      tls = true;
    }
  for (std::string_view scheme : {"http://", "ws://", "mqtt://", "tcp://"})
    if (url.starts_with(scheme)) url.remove_prefix(scheme.size());
  while (!url.empty() && url.back() == '/') url.remove_suffix(1);
  ServerAddress a;
  const size_t colon = url.rfind(':');
  if (colon == std::string_view::npos) {
    a.host = std::string(url);
  } else {
    a.host = std::string(url.substr(0, colon));
    const std::string port(url.substr(colon + 1));
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p <= 0 || p > 65535)
      return make_error(ErrorCode::kInvalidArgument, "bad port in server URL");
    a.port = static_cast<uint16_t>(p);
  }
  if (a.host.empty()) return make_error(ErrorCode::kInvalidArgument, "empty host in server URL");
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  boost::system::error_code ec;
  auto results = resolver.resolve(asio::ip::tcp::v4(), a.host, std::to_string(a.port), ec);
  if (ec || results.empty()) return make_error(ErrorCode::kInvalidArgument, "cannot resolve " + a.host);
  a.endpoint = results.begin()->endpoint();
  if (tls) {
    auto t = make_lean_tls(a.host, ca_file);
    if (!t) return make_error(t.error().code, "https://" + a.host_header() + ": " + t.error().message);
    a.tls = std::move(*t);
  }
  return a;
}

HttpClient::HttpClient(ServerAddress server, int timeout_ms)
    : server_(std::move(server)), timeout_ms_(timeout_ms), socket_(io_) {}

HttpClient::~HttpClient() { disconnect(); }

void HttpClient::disconnect() {
  tls_.reset();
  boost::system::error_code ec;
  socket_.close(ec);
}

Result<void> HttpClient::ensure_connected() {
  if (socket_.is_open()) return {};
  boost::system::error_code ec;
  socket_.connect(server_.endpoint, ec);
  if (ec) {
    disconnect();
    return make_error(ErrorCode::kOverloaded, "connect to " + server_.host_header() + ": " + ec.message());
  }
  // Blocking reads and writes with a time bound, so a stuck server cannot hang set-up.
  timeval tv{timeout_ms_ / 1000, (timeout_ms_ % 1000) * 1000};
  ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  if (!server_.tls) return {};
  tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, *server_.tls->context);
  if (auto p = prepare_tls(tls_->native_handle(), server_.tls->host); !p) {
    disconnect();
    return make_error(ErrorCode::kInvalidArgument, server_.url() + ": " + p.error().message);
  }
  tls_->handshake(asio::ssl::stream_base::client, ec);
  if (ec) {
    disconnect();
    // A certificate that does not verify stays so: not worth a retry (kInvalidArgument).
    const Error e = tls_handshake_error(ec);
    return make_error(is_tls_verify_error(e) ? ErrorCode::kInvalidArgument : ErrorCode::kOverloaded,
                      server_.url() + ": " + e.message);
  }
  return {};
}

Result<HttpResponse> HttpClient::attempt(Method method, std::string_view target, std::string_view body,
                                         std::string_view token) {
  if (auto c = ensure_connected(); !c) return c.error();
  const bool post = method != Method::kGet;
  http::request<http::string_body> req(
      method == Method::kGet ? http::verb::get : method == Method::kPut ? http::verb::put : http::verb::post, target, 11);
  req.set(http::field::host, server_.host_header());
  req.keep_alive(true);
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + std::string(token));
  if (post) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::string(body);
    req.prepare_payload();
  }
  boost::system::error_code ec;
  if (tls_) {
    http::write(*tls_, req, ec);
  } else {
    http::write(socket_, req, ec);
  }
  if (ec) {
    disconnect();
    return make_error(ErrorCode::kOverloaded, "http write failed");
  }
  boost::beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(16 * 1024 * 1024);
  if (tls_) {
    http::read(*tls_, buf, parser, ec);
  } else {
    http::read(socket_, buf, parser, ec);
  }
  if (ec) {
    disconnect();
    return make_error(ErrorCode::kOverloaded, "http read failed: " + ec.message());
  }
  auto res = parser.release();
  if (!res.keep_alive()) disconnect();
  return HttpResponse{static_cast<int>(res.result_int()), std::move(res.body())};
}

Result<HttpResponse> HttpClient::request(Method method, std::string_view target, std::string_view body,
                                         std::string_view token) {
  const bool was_open = socket_.is_open();
  auto r = attempt(method, target, body, token);
  // A kept-alive connection the server has since closed fails on first use: retry once on a
  // fresh one. (Our requests are either idempotent or answer 409 when repeated.)
  if (!r && was_open) r = attempt(method, target, body, token);
  return r;
}

Result<HttpResponse> HttpClient::post_json(std::string_view target, std::string_view body, std::string_view token) {
  return request(Method::kPost, target, body, token);
}

Result<HttpResponse> HttpClient::put_json(std::string_view target, std::string_view body, std::string_view token) {
  return request(Method::kPut, target, body, token);
}

Result<HttpResponse> HttpClient::get(std::string_view target, std::string_view token) {
  return request(Method::kGet, target, {}, token);
}

}  // namespace tern::client::lean
