#include "gateway/gateway_context.h"

#include <stdexcept>

#include <boost/asio/strand.hpp>

namespace tern::gateway {

GatewayMetrics& GatewayMetrics::get() {
  // Looked up once: registry lookups take a mutex, the hot path must not. Every metric is
  // a lock-free atomic the sessions increment through these references.
  static GatewayMetrics metrics{
      MetricsRegistry::global().gauge("tern_connections", "Live WebSocket connections"),
      MetricsRegistry::global().counter("tern_http_requests_total", "HTTP requests received"),
      MetricsRegistry::global().counter("tern_ws_frames_in_total", "WebSocket messages received"),
      MetricsRegistry::global().counter("tern_ws_frames_out_total", "WebSocket messages written"),
      MetricsRegistry::global().counter("tern_ws_writes_total", "Gathered socket writes on WebSockets"),
      MetricsRegistry::global().counter("tern_ws_input_paused_total",
                                        "Times a WebSocket stopped being read because of its byte-rate limit"),
      MetricsRegistry::global().counter("tern_slow_consumer_closes_total",
                                        "WebSockets closed because their write queue was full"),
      MetricsRegistry::global().counter("tern_control_frame_closes_total",
                                        "WebSockets closed for sending too many control frames"),
      MetricsRegistry::global().counter("tern_connections_rejected_total",
                                        "TCP connections refused over a connection budget"),
      MetricsRegistry::global().counter("tern_http_overloaded_total",
                                        "HTTP responses replaced by 503 over the global byte budget"),
      MetricsRegistry::global().counter("tern_tls_handshake_failures_total",
                                        "TLS handshakes that failed or timed out (plain HTTP to a TLS port included)"),
  };
  return metrics;
}

GatewayContext::GatewayContext(std::vector<boost::asio::io_context*> ioc_list, bool shared, GatewayOptions opts,
                               ServiceInterface& svc)
    : options(std::move(opts)),
      service(svc),
      metrics(GatewayMetrics::get()),
      contexts(std::move(ioc_list)),
      shared_loops(shared),
      loops_(contexts.size()) {
  if (contexts.empty()) throw std::invalid_argument("Listener: no event loops");
  for (auto* c : contexts)
    if (!c) throw std::invalid_argument("Listener: null io_context");
}

boost::asio::any_io_executor GatewayContext::connection_executor(size_t index) const {
  if (shared_loops) return boost::asio::make_strand(*contexts.at(index));
  return contexts.at(index)->get_executor();
}

std::shared_ptr<Loop> GatewayContext::loop(size_t index) {
  std::lock_guard lock(loops_mu_);
  auto& weak = loops_.at(index);
  auto loop = weak.lock();
  if (!loop) {
    loop = std::make_shared<Loop>(*contexts[index], index);
    weak = loop;
  }
  return loop;
}

ConnectionSlot& ConnectionSlot::operator=(ConnectionSlot&& other) noexcept {
  if (this != &other) {
    release();
    ctx_ = other.ctx_;
    authenticated_ = other.authenticated_;
    other.ctx_ = nullptr;
  }
  return *this;
}

ConnectionSlot ConnectionSlot::unauthenticated(GatewayContext& ctx) {
  ConnectionSlot slot;
  if (ctx.unauthenticated.fetch_add(1, std::memory_order_relaxed) >= ctx.options.max_unauthenticated_connections) {
    ctx.unauthenticated.fetch_sub(1, std::memory_order_relaxed);
    return slot;
  }
  slot.ctx_ = &ctx;
  return slot;
}

bool ConnectionSlot::authenticate() {
  if (!ctx_) return false;
  if (authenticated_) return true;
  if (ctx_->authenticated.fetch_add(1, std::memory_order_relaxed) >= ctx_->options.max_connections) {
    ctx_->authenticated.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  ctx_->unauthenticated.fetch_sub(1, std::memory_order_relaxed);
  authenticated_ = true;
  return true;
}

void ConnectionSlot::release() {
  if (!ctx_) return;
  (authenticated_ ? ctx_->authenticated : ctx_->unauthenticated).fetch_sub(1, std::memory_order_relaxed);
  ctx_ = nullptr;
}

}  // namespace tern::gateway
