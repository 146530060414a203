// What tern-bench reports: one StepSummary per measured step (merged over workers, with the
// server's CPU over the step), and the final Report (JSON document and human table).
// Plain values; owned by the coordinator thread.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <boost/json/value.hpp>

#include "bench_options.h"
#include "bench_stats.h"
#include "client/lean/lean_histogram.h"
#include "client/lean/lean_verifier.h"

namespace tern::bench {

namespace lean = tern::client::lean;

// The value of an unlabelled sample `name` in Prometheus text (GET /metrics), if present.
std::optional<double> prometheus_value(std::string_view text, std::string_view name);

// ternd's store counters (tern_store_writes_total, tern_store_reads_total) at one instant.
struct StoreCounters {
  double writes = 0;
  double reads = 0;
};

struct StepSummary {
  double rate_target = 0;  // total sends per second asked for
  double send_s = 0;       // longest send phase among workers
  double drain_s = 0;
  double wall_s = 0;
  bool drained = true;
  Counters c;
  uint64_t delivered_in_send = 0;  // deliveries while the schedule ran (not in the drain)
  uint64_t acked_in_send = 0;
  uint64_t undelivered = 0;
  uint64_t unacked = 0;
  uint64_t violations = 0;
  uint64_t online = 0;
  int64_t gen_cpu_us = 0;
  lean::LatencyHistogram latency;      // send → deliver, µs, live deliveries
  lean::LatencyHistogram ack_latency;  // send → `sent`, µs
  double storm_s = -1;
  double replay_s = -1;
  // channel --catchup: posts missed while offline, how many replayed, seconds from the
  // connect to `synced` and to the last post (-1: did not happen).
  uint64_t catchup_posts = 0, catchup_replayed = 0;
  double catchup_synced_s = -1, catchup_last_post_s = -1;
  std::optional<int64_t> server_cpu_us;  // over the whole step (send + drain)
  std::optional<int64_t> server_runqueue_wait_us;  // its threads' wait for a CPU, same span
  std::optional<int64_t> server_rss_kb;  // at the end of the step
  // channel: ternd's store write and read ops over the step (GET /metrics with the poster's
  // token); acks count too (one cursor write per ack frame the server commits).
  std::optional<StoreCounters> server_store;

  // Adds one worker's step data (see Worker::step_json).
  void add_worker(const boost::json::value& data);
  uint64_t deliveries() const { return c.delivered + c.replayed; }
  double sent_per_s() const { return send_s > 0 ? static_cast<double>(acked_in_send) / send_s : 0; }
  double delivered_per_s() const { return send_s > 0 ? static_cast<double>(delivered_in_send) / send_s : 0; }
  std::optional<double> server_us_per_delivery() const;
  double gen_us_per_delivery() const;
  // Kept up with the rate: p99 within the bound, everything acknowledged and delivered after
  // the drain, nothing refused or dropped, no violation.
  bool sustained(const BenchOptions& o) const;
  boost::json::value to_json(const BenchOptions& o) const;
};

boost::json::value latency_json(const lean::LatencyHistogram& h);

struct Report {
  const BenchOptions* opt = nullptr;
  std::vector<StepSummary> steps;
  std::optional<double> max_sustained_rate;  // find-max
  Counters counters;
  ErrorCounts errors;
  lean::VerifierTotals verifier;
  uint64_t clients = 0;
  uint64_t online_after_connect = 0;
  uint64_t online_at_end = 0;
  bool all_connected = true;
  int64_t gen_cpu_us = 0;
  // Server samples (with --server-pid).
  std::optional<int64_t> rss_ready_kb, rss_connected_kb, rss_held_kb, server_cpu_total_us;
  int64_t gen_rss_ready_kb = 0, gen_rss_connected_kb = 0;  // Σ over workers
  uint64_t idle_disconnects = 0;
  std::string channel_id;            // channel: the one channel
  uint64_t channel_posts = 0;        // channel: posts acknowledged to the poster
  uint64_t offline_subscribers = 0;  // channel: joined, never connected
  uint64_t probe_posts = 0;          // channel: posts of the store probe (acks paused)...
  std::optional<StoreCounters> probe_store;  // ...and ternd's store ops while they went in
  int64_t idle_gen_cpu_us = 0;
  std::vector<std::string> fatal;

  int exit_code() const;
  boost::json::value to_json() const;
  std::string table() const;
  // channel: posts, subscribers, expected (posts × subscribers that connect), delivered,
  // lost, duplicates, post → receive latency.
  boost::json::value channel_json() const;
};

}  // namespace tern::bench
