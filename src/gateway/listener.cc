#include "gateway/listener.h"

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <spdlog/spdlog.h>

#include "gateway/gateway_context.h"
#include "gateway/http_session.h"

namespace tern::gateway {

namespace beast = boost::beast;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// Accept errors such as EMFILE would spin if retried at once.
constexpr std::chrono::milliseconds kAcceptRetryDelay{100};

const std::string& overloaded_response() {
  static const std::string response = [] {
    const std::string body = R"({"error":"overloaded","message":"too many connections"})";
    return "HTTP/1.1 503 Service Unavailable\r\nServer: ternd\r\nContent-Type: application/json\r\n"
           "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  }();
  return response;
}

Result<void> validate(const GatewayOptions& o) {
  if (o.write_queue_bytes == 0) return make_error(ErrorCode::kInvalidArgument, "write_queue_bytes must be > 0");
  if (o.global_queue_bytes == 0) return make_error(ErrorCode::kInvalidArgument, "global_queue_bytes must be > 0");
  if (o.frames_per_turn == 0) return make_error(ErrorCode::kInvalidArgument, "frames_per_turn must be > 0");
  if (o.max_unauthenticated_connections == 0)
    return make_error(ErrorCode::kInvalidArgument, "max_unauthenticated_connections must be > 0");
  if (o.unauthenticated_timeout.count() <= 0)
    return make_error(ErrorCode::kInvalidArgument, "unauthenticated_timeout must be positive");
  if (!(o.control_frames_per_sec > 0) || !(o.control_frames_burst >= 1))
    return make_error(ErrorCode::kInvalidArgument, "control frame rate and burst must be positive");
  if (o.max_frame_bytes == 0) return make_error(ErrorCode::kInvalidArgument, "max_frame_bytes must be > 0");
  if (o.max_connections == 0) return make_error(ErrorCode::kInvalidArgument, "max_connections must be > 0");
  if (o.tls_cert_file.empty() != o.tls_key_file.empty())
    return make_error(ErrorCode::kInvalidArgument, "TLS needs both a certificate and a key file");
  if (o.handshake_timeout.count() <= 0 || o.http_idle_timeout.count() <= 0 || o.ping_interval.count() < 0)
    return make_error(ErrorCode::kInvalidArgument, "timeouts must be positive");
  return ok_result();
}

}  // namespace

// The listener's state, shared with its pending handlers (so they never outlive it).
// Acceptor work runs on loops[0] (on its own strand if that loop is shared by several
// threads); the flags are atomics read from any thread.
class ListenerState : public std::enable_shared_from_this<ListenerState> {
 public:
  ListenerState(std::vector<net::io_context*> loops, bool shared, GatewayOptions options, ServiceInterface& service)
      : ctx_(std::make_shared<GatewayContext>(std::move(loops), shared, std::move(options), service)),
        ioc_(*ctx_->contexts.front()),
        executor_(shared ? net::any_io_executor(net::make_strand(ioc_)) : net::any_io_executor(ioc_.get_executor())),
        acceptor_(executor_),
        retry_timer_(executor_) {}

  Result<uint16_t> start();
  void stop_accepting();
  void close_all(uint16_t code);
  size_t connections() const { return ctx_->registry.size(); }
  size_t authenticated() const { return ctx_->authenticated.load(); }
  size_t unauthenticated() const { return ctx_->unauthenticated.load(); }
  size_t queued_bytes() const { return ctx_->queued_bytes.load(); }
  const GatewayOptions& options() const { return ctx_->options; }
  Result<void> reload_tls() {
    if (!ctx_->tls) return make_error(ErrorCode::kInvalidArgument, "the listener has no TLS certificate");
    return ctx_->tls->reload();
  }

 private:
  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
  void reject(tcp::socket& socket);

  const std::shared_ptr<GatewayContext> ctx_;
  net::io_context& ioc_;             // loops[0]
  const net::any_io_executor executor_;  // acceptor work
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_;
  size_t next_loop_ = 0;             // round-robin; acceptor work only
  size_t accepting_loop_ = 0;        // the loop of the pending async_accept
  std::atomic<bool> started_{false};
  std::atomic<bool> stopping_{false};
};

Result<uint16_t> ListenerState::start() {
  if (auto valid = validate(ctx_->options); !valid) return valid.error();
  if (stopping_.load()) return make_error(ErrorCode::kInvalidArgument, "listener already stopped");
  if (started_.exchange(true)) return make_error(ErrorCode::kInvalidArgument, "listener already started");
  if (!ctx_->options.tls_cert_file.empty()) {
    auto tls = TlsContext::create(ctx_->options.tls_cert_file, ctx_->options.tls_key_file);
    if (!tls) return tls.error();
    ctx_->tls = std::move(*tls);
  }

  const GatewayOptions& o = ctx_->options;
  beast::error_code ec;
  tcp::endpoint endpoint;
  const auto address = net::ip::make_address(o.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, o.port);
  } else {
    tcp::resolver resolver(ioc_);
    auto results = resolver.resolve(o.host, std::to_string(o.port), ec);
    if (ec || results.empty())
      return make_error(ErrorCode::kInvalidArgument, "cannot resolve host " + o.host);
    endpoint = results.begin()->endpoint();
  }

  // No async operation is pending yet, so touching the acceptor from this thread is safe.
  auto fail = [&](const char* what) -> Result<uint16_t> {
    beast::error_code ignored;
    acceptor_.close(ignored);
    return make_error(ErrorCode::kInternal, std::string(what) + " " + endpoint.address().to_string() + ":" +
                                                std::to_string(endpoint.port()) + ": " + ec.message());
  };
  acceptor_.open(endpoint.protocol(), ec);
  if (ec) return fail("open");
  acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (ec) return fail("reuse_address");
  acceptor_.bind(endpoint, ec);
  if (ec) return fail("bind");
  acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen");
  const uint16_t port = acceptor_.local_endpoint(ec).port();
  if (ec) return fail("local_endpoint");

  spdlog::info("event=listening address={} port={} tls={}", endpoint.address().to_string(), port,
               ctx_->tls ? "on" : "off");
  net::post(executor_, [self = shared_from_this()] { self->do_accept(); });
  return port;
}

void ListenerState::stop_accepting() {
  if (stopping_.exchange(true)) return;
  net::post(executor_, [self = shared_from_this()] {
    beast::error_code ignored;
    self->retry_timer_.cancel();
    self->acceptor_.close(ignored);
  });
}

void ListenerState::close_all(uint16_t code) {
  // Shut down outside the registry lock: a released session's destructor takes it.
  auto live = ctx_->registry.begin_close_all(code);
  for (auto& session : live) session->shutdown(code);
}

void ListenerState::do_accept() {
  if (stopping_.load() || !acceptor_.is_open()) return;
  // The socket is born on the loop it will live on (round-robin over the loops).
  accepting_loop_ = next_loop_;
  next_loop_ = (next_loop_ + 1) % ctx_->contexts.size();
  acceptor_.async_accept(ctx_->connection_executor(accepting_loop_),
                         beast::bind_front_handler(&ListenerState::on_accept, shared_from_this()));
}

void ListenerState::on_accept(beast::error_code ec, tcp::socket socket) {
  if (stopping_.load()) {
    beast::error_code ignored;
    socket.close(ignored);
    return;
  }
  if (ec) {
    if (ec == net::error::operation_aborted) return;
    spdlog::warn("event=accept_failed error=\"{}\"", ec.message());
    retry_timer_.expires_after(kAcceptRetryDelay);
    retry_timer_.async_wait([self = shared_from_this()](beast::error_code wait_ec) {
      if (!wait_ec) self->do_accept();
    });
    return;
  }
  beast::error_code ignored;
  // Frames are small and latency-bound; never wait for Nagle.
  socket.set_option(tcp::no_delay(true), ignored);
  // Every connection starts unauthenticated, in the small budget; it moves to the
  // max_connections budget when it authenticates.
  if (auto slot = ConnectionSlot::unauthenticated(*ctx_); !slot.held()) {
    reject(socket);
  } else if (ctx_->tls) {
    if (auto ssl = ctx_->tls->new_ssl())
      std::make_shared<TlsHttpSession>(std::move(socket), std::move(ssl), ctx_, accepting_loop_, std::move(slot))->run();
    else
      socket.close(ignored);
  } else {
    std::make_shared<HttpSession>(std::move(socket), SslPtr(), ctx_, accepting_loop_, std::move(slot))->run();
  }
  do_accept();
}

void ListenerState::reject(tcp::socket& socket) {
  // Best effort and never blocking: the answer fits any fresh socket's send buffer; if it
  // does not, the client just sees the connection closed.
  ctx_->metrics.connections_rejected.inc();
  spdlog::debug("event=connection_rejected reason=max_unauthenticated_connections");
  beast::error_code ec;
  socket.non_blocking(true, ec);
  // On a TLS port a plain-text answer would be garbage to the client: just close.
  if (!ec && !ctx_->tls) socket.write_some(net::buffer(overloaded_response()), ec);
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

Listener::Listener(std::vector<net::io_context*> loops, GatewayOptions options, ServiceInterface& service,
                   bool shared_loop)
    : state_(std::make_shared<ListenerState>(std::move(loops), shared_loop, std::move(options), service)) {}

Listener::Listener(std::vector<net::io_context*> loops, GatewayOptions options, ServiceInterface& service)
    : Listener(std::move(loops), std::move(options), service, false) {}

Listener::Listener(net::io_context& ioc, GatewayOptions options, ServiceInterface& service)
    : Listener(std::vector<net::io_context*>{&ioc}, std::move(options), service, true) {}

Listener::~Listener() { state_->stop_accepting(); }

Result<uint16_t> Listener::start() { return state_->start(); }
void Listener::stop_accepting() { state_->stop_accepting(); }
void Listener::close_all(uint16_t code) { state_->close_all(code); }
size_t Listener::connections() const { return state_->connections(); }
size_t Listener::authenticated_connections() const { return state_->authenticated(); }
size_t Listener::unauthenticated_connections() const { return state_->unauthenticated(); }
size_t Listener::queued_bytes() const { return state_->queued_bytes(); }
const GatewayOptions& Listener::options() const { return state_->options(); }
Result<void> Listener::reload_tls() { return state_->reload_tls(); }

}  // namespace tern::gateway
