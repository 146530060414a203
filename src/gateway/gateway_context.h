// GatewayContext: what every session of one Listener shares (options, the service, the
// session registry, metrics), and GatewayMetrics, the gateway's Prometheus metrics.
//
// Ownership: held by shared_ptr by the listener and by each session, so it outlives the
// last session even if the Listener object is destroyed first. The ServiceInterface is a
// reference: the caller keeps it alive until the io_context has stopped.
// Thread-safety: options are immutable after construction; the registry and the metrics
// are safe from any thread; the service must accept calls from any io_context thread.
#pragma once
#include "base/metrics.h"
#include "gateway/gateway_options.h"
#include "gateway/service_interface.h"
#include "gateway/session_registry.h"

namespace tern::gateway {

struct GatewayMetrics {
  Gauge& connections;               // live WebSockets (opened, not yet closed)
  Counter& http_requests;           // HTTP requests parsed, upgrades included
  Counter& ws_frames_in;            // WebSocket messages received
  Counter& ws_frames_out;           // WebSocket messages written
  Counter& slow_consumer_closes;    // closes with 1008 because the write queue was full
  Counter& connections_rejected;    // TCP connections refused over max_connections

  // The process-wide instance (registered once in MetricsRegistry::global()).
  static GatewayMetrics& get();
};

struct GatewayContext {
  GatewayContext(GatewayOptions opts, ServiceInterface& svc)
      : options(std::move(opts)), service(svc), metrics(GatewayMetrics::get()) {}

  const GatewayOptions options;
  ServiceInterface& service;
  SessionRegistry registry;
  GatewayMetrics& metrics;
};

}  // namespace tern::gateway
