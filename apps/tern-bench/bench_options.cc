#include "bench_options.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>

namespace tern::bench {
namespace {

bool is_tls_url(std::string_view url) { return url.starts_with("https://") || url.starts_with("wss://"); }

bool pair_based(Workload w) {
  return w == Workload::kPairs || w == Workload::kOfflineDrain || w == Workload::kReconnectStorm;
}

Error bad(std::string m) { return make_error(ErrorCode::kInvalidArgument, std::move(m)); }

}  // namespace

Result<Workload> parse_workload(std::string_view name) {
  if (name == "pairs") return Workload::kPairs;
  if (name == "group") return Workload::kGroup;
  if (name == "broadcast") return Workload::kBroadcast;
  if (name == "idle") return Workload::kIdle;
  if (name == "offline-drain") return Workload::kOfflineDrain;
  if (name == "reconnect-storm") return Workload::kReconnectStorm;
  if (name == "channel") return Workload::kChannel;
  return bad("unknown workload '" + std::string(name) +
             "' (pairs, group, broadcast, idle, offline-drain, reconnect-storm, channel)");
}

std::string_view workload_name(Workload w) {
  switch (w) {
    case Workload::kPairs: return "pairs";
    case Workload::kGroup: return "group";
    case Workload::kBroadcast: return "broadcast";
    case Workload::kIdle: return "idle";
    case Workload::kOfflineDrain: return "offline-drain";
    case Workload::kReconnectStorm: return "reconnect-storm";
    case Workload::kChannel: return "channel";
  }
  return "?";
}

Result<Protocol> parse_protocol(std::string_view name) {
  if (name == "tern") return Protocol::kTern;
  if (name == "mqtt") return Protocol::kMqtt;
  return bad("unknown protocol '" + std::string(name) + "' (tern, mqtt)");
}

std::string_view protocol_name(Protocol p) { return p == Protocol::kMqtt ? "mqtt" : "tern"; }

Result<void> finalize(BenchOptions& o) {
  if (o.protocol == Protocol::kMqtt && o.workload != Workload::kPairs && o.workload != Workload::kChannel)
    return bad("--protocol mqtt supports the pairs and channel workloads only");
  // An MQTT subscriber that never connected has no session for the broker to queue into.
  if (o.protocol == Protocol::kMqtt && (o.catchup > 0 || o.offline_subscribers > 0))
    return bad("--catchup and --offline-subscribers need --protocol tern");
  // The MQTT client has no TLS layer; refuse rather than connect in plain text to a TLS port.
  if (o.protocol == Protocol::kMqtt && (is_tls_url(o.server) || o.server.starts_with("mqtts://") || !o.ca_file.empty()))
    return bad("--protocol mqtt speaks plain TCP only (no mqtts://, https:// or --ca)");
  if (!o.ca_file.empty()) {
    if (!is_tls_url(o.server)) return bad("--ca applies to an https:// --server only");
    if (!std::ifstream(o.ca_file).good()) return bad("--ca " + o.ca_file + ": cannot read the file");
  }
  if (o.mqtt_keepalive_s < 0 || o.mqtt_keepalive_s > 65535) return bad("--mqtt-keepalive must be 0..65535");
  if (o.workers < 1 || o.workers > 64) return bad("--workers must be 1..64");
  if (o.clients < 1) return bad("--clients must be positive");
  if (pair_based(o.workload) && o.clients < 2 * o.workers) return bad("this workload needs at least 2 clients per worker");
  if ((o.workload == Workload::kGroup || o.workload == Workload::kBroadcast || o.workload == Workload::kChannel) &&
      o.clients < 2 * o.workers)
    return bad("this workload needs at least 2 clients per worker");
  if (o.duration_s <= 0) return bad("--duration must be positive");
  if (o.sends() && o.workload != Workload::kReconnectStorm && o.rate <= 0) return bad("--rate must be positive");
  if (o.rate < 0) return bad("--rate must not be negative");
  if (o.body_bytes > 60 * 1024) return bad("--size must be at most 61440 bytes");
  if (o.find_max && !(o.workload == Workload::kPairs || o.workload == Workload::kGroup ||
                      o.workload == Workload::kBroadcast))
    return bad("--find-max applies to pairs, group and broadcast");
  if (o.step_factor <= 1.0) return bad("--step-factor must exceed 1");
  if (o.p99_bound_ms <= 0) return bad("--p99-bound-ms must be positive");
  if (o.storm_at <= 0 || o.storm_at >= 1) return bad("--storm-at must be in (0, 1)");
  if (o.drain_timeout_s <= 0 || o.drain_max_s <= 0) return bad("drain timeouts must be positive");
  if (o.queued < 1) return bad("--queued must be positive");
  if (o.ack_interval_ms < 1 || o.ack_every < 1) return bad("--ack-interval-ms and --ack-every must be positive");
  if (o.connect_concurrency < 1 || o.setup_threads < 1) return bad("concurrency options must be positive");
  if (o.source_addrs < 0 || o.source_addrs > 250) return bad("--source-addrs must be 0..250");
  if (o.group_size == 0) o.group_size = o.workload == Workload::kBroadcast ? 1024 : 20;
  if (o.group_size < 2) return bad("--group-size must be at least 2");
  if (o.senders == 0) o.senders = 2;
  if (o.senders < 1) return bad("--senders must be positive");
  o.senders = std::min(o.senders, o.group_size);
  if (o.typing && o.workload != Workload::kGroup) return bad("--typing applies to the group workload");
  if (o.offline_subscribers < 0 || o.catchup < 0) return bad("--offline-subscribers and --catchup must not be negative");
  if ((o.offline_subscribers > 0 || o.catchup > 0) && o.workload != Workload::kChannel)
    return bad("--offline-subscribers and --catchup apply to the channel workload");
  if (o.offline_members < 0) return bad("--offline-members must not be negative");
  if (o.offline_members > 0 && (o.workload != Workload::kGroup || o.protocol != Protocol::kTern))
    return bad("--offline-members applies to the group workload over --protocol tern");
  if (o.catchup > 0 && o.clients < 3) return bad("--catchup needs at least 3 clients (poster, subscriber, catch-up)");
  if (o.catchup > 0 && o.find_max) return bad("--catchup and --find-max do not combine");
  if (o.encrypt && ((o.workload != Workload::kPairs && o.workload != Workload::kGroup) || o.protocol != Protocol::kTern))
    return bad("--encrypt applies to the pairs and group workloads over the tern protocol");
  if (o.keyring_disk && !o.encrypt) return bad("--keyring-disk needs --encrypt");
  if (o.source_addrs == 0) o.source_addrs = 1 + o.clients / 20000;
  if (o.prefix.empty()) {
    std::random_device rd;
    char buf[16];
    std::snprintf(buf, sizeof buf, "tb%08x", rd());
    o.prefix = buf;
  }
  for (char c : o.prefix)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return bad("--prefix may use only [a-z0-9_.-]");
  if (o.prefix.size() > 40) return bad("--prefix is too long");
  return {};
}

int clients_of_worker(const BenchOptions& o, int worker) {
  if (pair_based(o.workload)) {
    const int pairs = o.clients / 2;
    return 2 * (pairs / o.workers + (worker < pairs % o.workers ? 1 : 0));
  }
  return o.clients / o.workers + (worker < o.clients % o.workers ? 1 : 0);
}

int first_client_of_worker(const BenchOptions& o, int worker) {
  int n = 0;
  for (int w = 0; w < worker; ++w) n += clients_of_worker(o, w);
  return n;
}

int total_clients(const BenchOptions& o) { return first_client_of_worker(o, o.workers); }

int offline_subscribers_of_worker(const BenchOptions& o, int worker) {
  if (o.workload != Workload::kChannel) return 0;
  return o.offline_subscribers / o.workers + (worker < o.offline_subscribers % o.workers ? 1 : 0);
}

double rate_of_worker(const BenchOptions& o, int worker, double total_rate) {
  if (o.workload == Workload::kBroadcast) return total_rate / o.workers;  // one sender each
  if (o.workload == Workload::kChannel) return worker == 0 ? total_rate : 0;  // one poster, in worker 0
  return total_rate * clients_of_worker(o, worker) / std::max(1, total_clients(o));
}

}  // namespace tern::bench
