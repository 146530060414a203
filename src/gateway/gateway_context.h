// GatewayContext: what every session of one Listener shares (options, the service, the
// session registry, the event loops, the process-wide budgets, metrics), and
// GatewayMetrics, the gateway's Prometheus metrics.
//
// Ownership: held by shared_ptr by the listener and by each session, so it outlives the
// last session even if the Listener object is destroyed first. The ServiceInterface and the
// io_contexts are references: the caller keeps them alive until the io_contexts have stopped.
// Thread-safety: options are immutable after construction; the registry, the budgets and
// the metrics are safe from any thread; a Loop's session list is guarded by its mutex; the
// service must accept calls from any loop's thread.
#pragma once
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "base/metrics.h"
#include "gateway/gateway_options.h"
#include "gateway/service_interface.h"
#include "gateway/session_registry.h"
#include "gateway/tls_context.h"

namespace tern::gateway {

struct GatewayMetrics {
  Gauge& connections;               // live WebSockets (opened, not yet closed)
  Counter& http_requests;           // HTTP requests parsed, upgrades included
  Counter& ws_frames_in;            // WebSocket messages received
  Counter& ws_frames_out;           // WebSocket messages written
  Counter& ws_writes;               // gathered writes (one writev each) on WebSockets
  Counter& ws_input_paused;         // times a WebSocket's reading paused on its byte rate
  Counter& slow_consumer_closes;    // closes with 1008 because the write queue was full
  Counter& control_frame_closes;    // closes with 1008 "too many control frames"
  Counter& connections_rejected;    // TCP connections refused (either connection budget)
  Counter& http_overloaded;         // HTTP responses replaced by 503 (global byte budget)
  Counter& tls_handshake_failures;  // TLS handshakes failed or timed out

  // The process-wide instance (registered once in MetricsRegistry::global()).
  static GatewayMetrics& get();
};

class WebSocketSession;

// The WebSocket state of one event loop. Held (shared_ptr) by that loop's WebSocket
// sessions and by its pending sweep, and only by them: it is created with the loop's first
// session and destroyed with its last, always by a handler of that loop's own io_context
// (never while another io_context is torn down).
struct Loop {
  Loop(boost::asio::io_context& ctx, size_t i) : index(i), sweep_timer(ctx) {}

  const size_t index;

  // The WebSocket sessions of this loop, swept once a second for liveness and deadlines
  // (one timer per loop instead of one per connection). Guarded by mu.
  std::mutex mu;
  std::vector<WebSocketSession*> sessions;
  boost::asio::steady_timer sweep_timer;
  bool sweep_armed = false;
};

struct GatewayContext {
  GatewayContext(std::vector<boost::asio::io_context*> ioc_list, bool shared, GatewayOptions opts,
                 ServiceInterface& svc);

  const GatewayOptions options;
  ServiceInterface& service;
  SessionRegistry registry;
  GatewayMetrics& metrics;
  // The event loops (not empty). `shared_loops`: run by several threads each (the
  // single-io_context Listener constructor), so every connection gets a strand.
  const std::vector<boost::asio::io_context*> contexts;
  const bool shared_loops;
  // The certificate when the listener speaks TLS (GatewayOptions::tls_cert_file); null for
  // plain TCP. Set by Listener::start() before the first accept, never changed after (the
  // TlsContext itself swaps certificates on reload).
  std::shared_ptr<TlsContext> tls;

  // The executor a connection on loop `index` runs on (its socket is born with it).
  boost::asio::any_io_executor connection_executor(size_t index) const;
  // The WebSocket state of loop `index`, created if no session holds it. Any thread.
  std::shared_ptr<Loop> loop(size_t index);

  // Process-wide byte budget (GatewayOptions::global_queue_bytes): payload bytes in every
  // WebSocket write queue plus HTTP responses being written.
  std::atomic<size_t> queued_bytes{0};
  // Connections by authentication state (see ConnectionSlot).
  std::atomic<size_t> unauthenticated{0};
  std::atomic<size_t> authenticated{0};

  bool global_budget_exceeded(size_t more) const {
    return queued_bytes.load(std::memory_order_relaxed) + more > options.global_queue_bytes;
  }
  void charge(size_t n) { queued_bytes.fetch_add(n, std::memory_order_relaxed); }
  void refund(size_t n) { queued_bytes.fetch_sub(n, std::memory_order_relaxed); }

 private:
  std::mutex loops_mu_;
  std::vector<std::weak_ptr<Loop>> loops_;
};

// A connection's place in one of the two connection budgets. Move-only; gives the place
// back when destroyed. Any thread.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  ConnectionSlot(ConnectionSlot&& other) noexcept : ctx_(other.ctx_), authenticated_(other.authenticated_) {
    other.ctx_ = nullptr;
  }
  ConnectionSlot& operator=(ConnectionSlot&& other) noexcept;
  ~ConnectionSlot() { release(); }

  // A place among the unauthenticated connections; empty if that budget is full.
  static ConnectionSlot unauthenticated(GatewayContext& ctx);
  // Moves this place to the authenticated connections. False (and unchanged) if
  // max_connections are already authenticated. True if already authenticated.
  bool authenticate();
  bool held() const { return ctx_ != nullptr; }
  bool is_authenticated() const { return ctx_ && authenticated_; }
  void release();

 private:
  GatewayContext* ctx_ = nullptr;
  bool authenticated_ = false;
};

}  // namespace tern::gateway
