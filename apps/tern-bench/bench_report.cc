#include "bench_report.h"

#include <algorithm>
#include <cstdio>

#include <boost/json.hpp>

namespace tern::bench {
namespace json = boost::json;
namespace {

double num(const json::object& o, std::string_view k) {
  const auto* v = o.if_contains(k);
  if (!v) return 0;
  boost::system::error_code ec;
  const double d = v->to_number<double>(ec);
  return ec ? 0 : d;
}

json::value opt_num(const std::optional<double>& v) { return v ? json::value(*v) : json::value(nullptr); }

double ms(uint64_t us) { return static_cast<double>(us) / 1000.0; }

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

json::value latency_json(const lean::LatencyHistogram& h) {
  return json::object{{"count", h.count()},          {"p50", ms(h.quantile(0.5))},   {"p90", ms(h.quantile(0.9))},
                      {"p95", ms(h.quantile(0.95))},
                      {"p99", ms(h.quantile(0.99))}, {"p999", ms(h.quantile(0.999))}, {"max", ms(h.max())},
                      {"mean", h.mean() / 1000.0}};
}

std::optional<double> prometheus_value(std::string_view text, std::string_view name) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.size() <= name.size() || line.substr(0, name.size()) != name || line[name.size()] != ' ') continue;
    const std::string value(line.substr(name.size() + 1));
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (end != value.c_str()) return v;
  }
  return std::nullopt;
}

void StepSummary::add_worker(const json::value& data) {
  const auto* o = data.if_object();
  if (!o) return;
  send_s = std::max(send_s, num(*o, "send_s"));
  drain_s = std::max(drain_s, num(*o, "drain_s"));
  wall_s = std::max(wall_s, num(*o, "wall_s"));
  if (const auto* d = o->if_contains("drained"); d && d->is_bool() && !d->as_bool()) drained = false;
  if (const auto* cj = o->if_contains("counters")) c += Counters::from_json(*cj);
  delivered_in_send += static_cast<uint64_t>(num(*o, "delivered_in_send"));
  acked_in_send += static_cast<uint64_t>(num(*o, "acked_in_send"));
  undelivered += static_cast<uint64_t>(num(*o, "undelivered"));
  unacked += static_cast<uint64_t>(num(*o, "unacked"));
  violations += static_cast<uint64_t>(num(*o, "violations"));
  online += static_cast<uint64_t>(num(*o, "online"));
  gen_cpu_us += static_cast<int64_t>(num(*o, "gen_cpu_us"));
  if (const auto* h = o->if_contains("latency"))
    if (auto r = lean::LatencyHistogram::from_json(*h)) latency.merge(*r);
  if (const auto* h = o->if_contains("ack_latency"))
    if (auto r = lean::LatencyHistogram::from_json(*h)) ack_latency.merge(*r);
  if (o->contains("storm_s")) storm_s = std::max(storm_s, num(*o, "storm_s"));
  if (o->contains("replay_s")) replay_s = std::max(replay_s, num(*o, "replay_s"));
  if (o->contains("catchup_posts")) {
    catchup_posts += static_cast<uint64_t>(num(*o, "catchup_posts"));
    catchup_replayed += static_cast<uint64_t>(num(*o, "catchup_replayed"));
    catchup_synced_s = std::max(catchup_synced_s, num(*o, "catchup_synced_s"));
    catchup_last_post_s = std::max(catchup_last_post_s, num(*o, "catchup_last_post_s"));
  }
}

std::optional<double> StepSummary::server_us_per_delivery() const {
  if (!server_cpu_us || deliveries() == 0) return std::nullopt;
  return static_cast<double>(*server_cpu_us) / static_cast<double>(deliveries());
}

double StepSummary::gen_us_per_delivery() const {
  return deliveries() ? static_cast<double>(gen_cpu_us) / static_cast<double>(deliveries()) : 0;
}

bool StepSummary::sustained(const BenchOptions& o) const {
  return drained && undelivered == 0 && unacked == 0 && violations == 0 && c.send_failed == 0 &&
         c.disconnects == 0 && static_cast<double>(latency.quantile(0.99)) <= o.p99_bound_ms * 1000.0 &&
         sent_per_s() >= 0.95 * rate_target;
}

json::value StepSummary::to_json(const BenchOptions& o) const {
  json::object j{{"rate_target", rate_target},
                 {"sent_per_s", sent_per_s()},
                 {"delivered_per_s", delivered_per_s()},
                 {"scheduled", c.scheduled},
                 {"acked", c.acked},
                 {"acked_in_send", acked_in_send},
                 {"delivered_in_send", delivered_in_send},
                 {"delivered", c.delivered},
                 {"replayed", c.replayed},
                 {"redelivered", c.redelivered},
                 {"retransmitted", c.retransmitted},
                 {"send_failed", c.send_failed},
                 {"receipts", c.receipts},
                 {"receipts_to_non_senders", c.receipts_to_non_senders},
                 {"disconnects", c.disconnects},
                 {"send_s", send_s},
                 {"drain_s", drain_s},
                 {"wall_s", wall_s},
                 {"drained", drained},
                 {"undelivered", undelivered},
                 {"unacked", unacked},
                 {"latency_ms", latency_json(latency)},
                 {"ack_latency_ms", latency_json(ack_latency)},
                 {"generator_cpu_s", static_cast<double>(gen_cpu_us) / 1e6},
                 {"generator_cpu_us_per_delivery", gen_us_per_delivery()},
                 {"generator_cpu_util", wall_s > 0 ? static_cast<double>(gen_cpu_us) / 1e6 / wall_s : 0.0},
                 {"server_cpu_s", server_cpu_us ? json::value(static_cast<double>(*server_cpu_us) / 1e6) : json::value(nullptr)},
                 {"server_cpu_us_per_delivery", opt_num(server_us_per_delivery())},
                 {"server_cpu_us_per_sent",
                  server_cpu_us && c.acked ? json::value(static_cast<double>(*server_cpu_us) / static_cast<double>(c.acked))
                                           : json::value(nullptr)},
                 {"server_cpu_util", server_cpu_us && wall_s > 0 ? json::value(static_cast<double>(*server_cpu_us) / 1e6 / wall_s)
                                                                 : json::value(nullptr)},
                 {"server_rss_kb", server_rss_kb ? json::value(*server_rss_kb) : json::value(nullptr)},
                 {"server_runqueue_wait_s", server_runqueue_wait_us
                                                ? json::value(static_cast<double>(*server_runqueue_wait_us) / 1e6)
                                                : json::value(nullptr)},
                 {"sustained", sustained(o)}};
  if (storm_s >= 0) j["reconnect_s"] = storm_s;
  if (server_store) {
    j["server_store_writes"] = server_store->writes;
    j["server_store_reads"] = server_store->reads;
  }
  if (catchup_posts > 0 || catchup_synced_s >= 0)
    j["catchup"] = json::object{{"posts", catchup_posts},
                                {"replayed", catchup_replayed},
                                {"connect_to_synced_s", catchup_synced_s},
                                {"connect_to_last_post_s", catchup_last_post_s}};
  if (replay_s >= 0) {
    j["replay_s"] = replay_s;
    j["replay_per_s"] = replay_s > 0 ? static_cast<double>(c.replayed) / replay_s : 0.0;
  }
  return j;
}

int Report::exit_code() const {
  if (!fatal.empty()) return 2;
  if (!verifier.ok()) return 1;
  if (!all_connected || online_at_end < clients) return 2;
  return 0;
}

json::value Report::to_json() const {
  const BenchOptions& o = *opt;
  json::array steps_json;
  for (const auto& s : steps) steps_json.push_back(s.to_json(o));
  json::object j{{"workload", workload_name(o.workload)},
                 {"protocol", protocol_name(o.protocol)},
                 {"server", o.server},
                 {"clients", clients},
                 {"workers", o.workers},
                 {"duration_s", o.duration_s},
                 {"rate", o.rate},
                 {"body_bytes", o.body_bytes},
                 {"prefix", o.prefix},
                 {"ok", exit_code() == 0},
                 {"exit_code", exit_code()},
                 {"connections", json::object{{"clients", clients},
                                              {"online_after_connect", online_after_connect},
                                              {"all_connected", all_connected},
                                              {"online_at_end", online_at_end},
                                              {"connects", counters.connects},
                                              {"connect_failures", counters.connect_failures},
                                              {"disconnects", counters.disconnects}}},
                 {"steps", std::move(steps_json)},
                 {"counters", counters.to_json()},
                 {"errors", errors_to_json(errors)},
                 {"verifier", verifier.to_json()},
                 {"generator", json::object{{"cpu_s", static_cast<double>(gen_cpu_us) / 1e6}}}};
  if (!steps.empty()) {
    // The headline figures: the best sustained step under --find-max, else the only step.
    const StepSummary* main = &steps.back();
    if (o.find_max) {
      for (const auto& s : steps)
        if (s.sustained(o)) main = &s;
    }
    j["result"] = main->to_json(o);
  }
  if (o.find_max)
    j["find_max"] = json::object{{"max_sustained_rate", max_sustained_rate ? json::value(*max_sustained_rate) : json::value(0.0)},
                                 {"p99_bound_ms", o.p99_bound_ms},
                                 {"step_factor", o.step_factor}};
  json::object server{{"pid", o.server_pid}};
  if (rss_ready_kb) server["rss_kb_before_connect"] = *rss_ready_kb;
  if (rss_connected_kb) server["rss_kb_connected"] = *rss_connected_kb;
  if (server_cpu_total_us) server["cpu_s_total"] = static_cast<double>(*server_cpu_total_us) / 1e6;
  j["server_process"] = std::move(server);
  if (o.workload == Workload::kIdle) {
    json::object idle{{"connections", online_after_connect},
                      {"held_s", o.duration_s},
                      {"disconnects_while_held", idle_disconnects},
                      {"generator_cpu_s_while_held", static_cast<double>(idle_gen_cpu_us) / 1e6}};
    if (rss_ready_kb && rss_connected_kb && online_after_connect > 0) {
      idle["server_rss_kb_before"] = *rss_ready_kb;
      idle["server_rss_kb_after"] = *rss_connected_kb;
      idle["server_bytes_per_connection"] =
          static_cast<double>(*rss_connected_kb - *rss_ready_kb) * 1024.0 / static_cast<double>(online_after_connect);
    } else {
      idle["server_bytes_per_connection"] = nullptr;
    }
    if (rss_held_kb) idle["server_rss_kb_end"] = *rss_held_kb;
    if (online_after_connect > 0)
      idle["generator_bytes_per_connection"] =
          static_cast<double>(gen_rss_connected_kb - gen_rss_ready_kb) * 1024.0 / static_cast<double>(online_after_connect);
    j["idle"] = std::move(idle);
  }
  if (o.workload == Workload::kChannel && !steps.empty()) j["channel"] = channel_json();
  if (!fatal.empty()) {
    json::array f;
    for (const auto& s : fatal) f.emplace_back(s);
    j["fatal"] = std::move(f);
  }
  return j;
}

json::value Report::channel_json() const {
  const StepSummary& s = steps.back();
  const uint64_t subscribers = clients > 0 ? clients - 1 : 0;  // all but the poster
  return json::object{{"id", channel_id},
                      {"posts", channel_posts},
                      {"subscribers_connected", subscribers},
                      {"offline_subscribers", offline_subscribers},
                      {"expected", channel_posts * subscribers},
                      {"delivered", verifier.delivered},
                      {"delivered_live", s.c.delivered},
                      {"lost", verifier.losses},
                      {"duplicates", verifier.duplicates},
                      {"redelivered", verifier.redelivered},
                      {"latency_ms", latency_json(s.latency)},
                      // ternd's tern_store_writes_total over the probe's posts, made while no
                      // subscriber acked (so no cursor writes); null without /metrics.
                      {"probe_posts", probe_posts},
                      {"store_writes_per_post",
                       probe_store && probe_posts ? json::value(probe_store->writes / static_cast<double>(probe_posts))
                                                  : json::value(nullptr)},
                      {"store_reads_per_post",
                       probe_store && probe_posts ? json::value(probe_store->reads / static_cast<double>(probe_posts))
                                                  : json::value(nullptr)}};
}

std::string Report::table() const {
  const BenchOptions& o = *opt;
  std::string t;
  t += "tern-bench " + std::string(workload_name(o.workload)) +
       (o.protocol == Protocol::kMqtt ? " (mqtt, QoS 1)" : "") + ": " + std::to_string(clients) + " clients, " +
       std::to_string(o.workers) + " worker(s), server " + o.server + "\n";
  t += "connections: " + std::to_string(online_after_connect) + "/" + std::to_string(clients) + " online after connect, " +
       std::to_string(counters.connects) + " opened, " + std::to_string(counters.connect_failures) + " failed, " +
       std::to_string(counters.disconnects) + " dropped\n";
  if (!steps.empty()) {
    char line[512];
    std::snprintf(line, sizeof line, "%4s %9s %9s %9s %8s %8s %8s %8s %8s %10s %10s %4s\n", "step", "target/s",
                  "sent/s", "deliv/s", "p50 ms", "p90 ms", "p99 ms", "p999 ms", "ack p99", "srv us/msg", "gen us/msg",
                  "ok");
    t += line;
    for (size_t i = 0; i < steps.size(); ++i) {
      const auto& s = steps[i];
      const auto srv = s.server_us_per_delivery();
      std::snprintf(line, sizeof line, "%4zu %9.0f %9.0f %9.0f %8.2f %8.2f %8.2f %8.2f %8.2f %10s %10.1f %4s\n", i + 1,
                    s.rate_target, s.sent_per_s(), s.delivered_per_s(), ms(s.latency.quantile(0.5)),
                    ms(s.latency.quantile(0.9)), ms(s.latency.quantile(0.99)), ms(s.latency.quantile(0.999)),
                    ms(s.ack_latency.quantile(0.99)), srv ? fmt("%.1f", *srv).c_str() : "-", s.gen_us_per_delivery(),
                    s.sustained(o) ? "yes" : "no");
      t += line;
      if (s.storm_s >= 0) t += "     reconnect storm: every client synced again after " + fmt("%.3f", s.storm_s) + " s\n";
      if (s.replay_s >= 0)
        t += "     offline drain: " + std::to_string(s.c.replayed) + " queued messages replayed in " +
             fmt("%.3f", s.replay_s) + " s (" + fmt("%.0f", s.replay_s > 0 ? s.c.replayed / s.replay_s : 0) + "/s)\n";
      if (s.catchup_posts > 0)
        t += "     catch-up: " + std::to_string(s.catchup_replayed) + "/" + std::to_string(s.catchup_posts) +
             " posts replayed; connect -> synced " + fmt("%.3f", s.catchup_synced_s) + " s, -> last post " +
             fmt("%.3f", s.catchup_last_post_s) + " s\n";
      if (!s.drained)
        t += "     not drained after " + fmt("%.1f", s.drain_s) + " s: " + std::to_string(s.undelivered) +
             " deliveries and " + std::to_string(s.unacked) + " acks missing\n";
    }
  }
  if (o.find_max)
    t += "find-max: highest sustained rate " + fmt("%.0f", max_sustained_rate.value_or(0)) + " msg/s (p99 bound " +
         fmt("%.1f", o.p99_bound_ms) + " ms)\n";
  if (o.workload == Workload::kIdle) {
    t += "idle: " + std::to_string(online_after_connect) + " connections held " + fmt("%.0f", o.duration_s) + " s, " +
         std::to_string(idle_disconnects) + " dropped";
    if (rss_ready_kb && rss_connected_kb && online_after_connect > 0)
      t += "; server RSS " + fmt("%.1f", *rss_ready_kb / 1024.0) + " MB -> " + fmt("%.1f", *rss_connected_kb / 1024.0) +
           " MB = " +
           fmt("%.0f", static_cast<double>(*rss_connected_kb - *rss_ready_kb) * 1024.0 / online_after_connect) +
           " bytes per connection";
    t += "\n";
  }
  if (o.workload == Workload::kChannel && !steps.empty()) {
    const uint64_t subs = clients > 0 ? clients - 1 : 0;
    t += "channel: " + std::to_string(channel_posts) + " posts x " + std::to_string(subs) + " connected subscribers (" +
         std::to_string(offline_subscribers) + " more offline): " + std::to_string(verifier.delivered) + "/" +
         std::to_string(channel_posts * subs) + " delivered, p95 " + fmt("%.2f", ms(steps.back().latency.quantile(0.95))) +
         " ms, max " + fmt("%.2f", ms(steps.back().latency.max())) + " ms" +
         (probe_store && probe_posts ? ", " + fmt("%.2f", probe_store->writes / static_cast<double>(probe_posts)) +
                                           " store writes per post"
                                     : std::string()) +
         "\n";
  }
  const auto& v = verifier;
  t += "verifier: " + std::to_string(v.acked) + " acknowledged, " + std::to_string(v.delivered) + "/" +
       std::to_string(v.expected) + " expected deliveries, " + std::to_string(v.redelivered) + " redelivered, " +
       std::to_string(v.duplicates) + " duplicates, " + std::to_string(v.order_violations) + " order violations, " +
       std::to_string(v.losses) + " lost" + (v.ok() ? " -> OK\n" : " -> VIOLATION\n");
  for (const auto& s : v.samples) t += "  " + s + "\n";
  if (!errors.empty()) {
    t += "errors:";
    for (const auto& [k, n] : errors) t += " " + k + "=" + std::to_string(n) + ";";
    t += "\n";
  }
  for (const auto& f : fatal) t += "fatal: " + f + "\n";
  return t;
}

}  // namespace tern::bench
