#include "gateway/gateway_context.h"

namespace tern::gateway {

GatewayMetrics& GatewayMetrics::get() {
  // Looked up once: registry lookups take a mutex, the hot path must not.
  static GatewayMetrics metrics{
      MetricsRegistry::global().gauge("tern_connections", "Live WebSocket connections"),
      MetricsRegistry::global().counter("tern_http_requests_total", "HTTP requests received"),
      MetricsRegistry::global().counter("tern_ws_frames_in_total", "WebSocket messages received"),
      MetricsRegistry::global().counter("tern_ws_frames_out_total", "WebSocket messages written"),
      MetricsRegistry::global().counter("tern_slow_consumer_closes_total",
                                        "WebSockets closed because their write queue was full"),
      MetricsRegistry::global().counter("tern_connections_rejected_total",
                                        "TCP connections refused over max_connections"),
  };
  return metrics;
}

}  // namespace tern::gateway
