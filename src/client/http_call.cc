#include "client/http_call.h"

#include <memory>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "client/errors.h"
#include "client/tls.h"

namespace tern::client {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// Stream: beast::tcp_stream (http://) or TlsStream (https://).
template <class Stream>
class HttpOp : public std::enable_shared_from_this<HttpOp<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;
  using std::enable_shared_from_this<HttpOp<Stream>>::shared_from_this;

 public:
  HttpOp(asio::io_context& ioc, ServerUrl url, HttpCallSpec spec, std::function<void(Result<HttpResult>)> done)
      : resolver_(ioc), stream_(make_stream(ioc, url)), url_(std::move(url)), spec_(std::move(spec)),
        done_(std::move(done)) {}

  void start() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::milliseconds(spec_.timeout_ms));
    // Name resolution has no deadline of its own (numeric hosts resolve at once).
    resolver_.async_resolve(url_.host, std::to_string(url_.port),
                            [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type r) {
                              self->on_resolve(ec, std::move(r));
                            });
  }

 private:
  void fail(std::string_view what, beast::error_code ec) {
    finish(network_error(std::string(what) + ": " + ec.message()));
  }
  void finish(Result<HttpResult> r) {
    if (!done_) return;
    auto done = std::move(done_);
    done_ = nullptr;
    beast::error_code ignored;
    // No TLS close_notify exchange: the request said "Connection: close" and the response
    // is complete.
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    done(std::move(r));
  }

  void on_resolve(beast::error_code ec, tcp::resolver::results_type results) {
    if (ec) return fail("resolve", ec);
    beast::get_lowest_layer(stream_).async_connect(
        results, [self = shared_from_this()](beast::error_code ec2, const tcp::endpoint&) { self->on_connect(ec2); });
  }

  static Stream make_stream(asio::io_context& ioc, const ServerUrl& url) {
    if constexpr (kTls)
      return Stream(ioc, *url.tls);
    else
      return Stream(ioc);
  }

  void on_connect(beast::error_code ec) {
    if (ec) return fail("connect", ec);
    if constexpr (kTls) {
      if (auto r = prepare_tls(stream_.native_handle(), url_.host); !r) return finish(r.error());
      stream_.async_handshake(asio::ssl::stream_base::client, [self = shared_from_this()](beast::error_code ec2) {
        if (ec2) return self->finish(tls_handshake_error(ec2));
        self->write_request();
      });
    } else {
      write_request();
    }
  }

  void write_request() {
    req_.method_string(spec_.method);
    req_.target(url_.prefix + spec_.target);
    req_.version(11);
    req_.set(http::field::host, url_.host_header());
    req_.set(http::field::user_agent, "tern-client/1");
    req_.set(http::field::connection, "close");
    if (!spec_.token.empty()) req_.set(http::field::authorization, "Bearer " + spec_.token);
    if (!spec_.body.empty() || spec_.method == "POST") {
      req_.set(http::field::content_type, "application/json");
      req_.body() = spec_.body;
    }
    req_.prepare_payload();
    http::async_write(stream_, req_, [self = shared_from_this()](beast::error_code ec2, size_t) {
      self->on_write(ec2);
    });
  }

  void on_write(beast::error_code ec) {
    if (ec) return fail("write", ec);
    parser_.body_limit(spec_.max_response_bytes);
    http::async_read(stream_, buffer_, parser_, [self = shared_from_this()](beast::error_code ec2, size_t) {
      self->on_read(ec2);
    });
  }

  void on_read(beast::error_code ec) {
    if (ec) return fail("read", ec);
    auto res = parser_.release();
    finish(HttpResult{static_cast<int>(res.result_int()), std::move(res.body())});
  }

  tcp::resolver resolver_;
  Stream stream_;
  ServerUrl url_;
  HttpCallSpec spec_;
  std::function<void(Result<HttpResult>)> done_;
  http::request<http::string_body> req_;
  beast::flat_buffer buffer_;
  http::response_parser<http::string_body> parser_;
};

}  // namespace

void http_call(asio::io_context& ioc, const ServerUrl& url, HttpCallSpec spec,
               std::function<void(Result<HttpResult>)> done) {
  if (url.tls)
    std::make_shared<HttpOp<TlsStream>>(ioc, url, std::move(spec), std::move(done))->start();
  else
    std::make_shared<HttpOp<beast::tcp_stream>>(ioc, url, std::move(spec), std::move(done))->start();
}

}  // namespace tern::client
