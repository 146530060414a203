// BenchOptions: tern-bench's command line as a value, plus the arithmetic that splits one run
// over worker processes (which clients, which share of the rate, which source addresses).
// Plain values and pure functions; thread-safe.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace tern::bench {

enum class Workload { kPairs, kGroup, kBroadcast, kIdle, kOfflineDrain, kReconnectStorm, kChannel };

Result<Workload> parse_workload(std::string_view name);
std::string_view workload_name(Workload w);

// What the clients speak: Tern's wire-v1 (WebSocket + HTTP set-up), or MQTT 3.1.1 with QoS 1
// against a broker such as mosquitto (pairs only; see docs/benchmarks.md, "Tern vs
// mosquitto, same generator").
enum class Protocol { kTern, kMqtt };
Result<Protocol> parse_protocol(std::string_view name);
std::string_view protocol_name(Protocol p);

struct BenchOptions {
  Workload workload = Workload::kPairs;
  Protocol protocol = Protocol::kTern;
  std::string server = "http://127.0.0.1:8080";  // https:// (or wss://): TLS, certificate verified
  std::string ca_file;         // --ca: PEM CA certificates trusted for https, besides the system store
  int clients = 100;
  double duration_s = 10;
  double rate = 1000;          // total sends per second, where the workload sends
  bool json = false;
  bool quiet = false;          // no progress lines
  int workers = 1;
  int server_pid = 0;          // 0: no server CPU / RSS figures
  size_t body_bytes = 100;     // decoded body size
  int group_size = 0;          // group / broadcast: members per group (0: workload default)
  int senders = 0;             // group: senders per group (0: default 2)
  int queued = 100;            // offline-drain: messages queued per offline receiver
  double storm_at = 0.5;       // reconnect-storm: when to drop, as a fraction of --duration
  bool find_max = false;
  double p99_bound_ms = 25;
  double step_factor = 1.25;   // find-max: next rate = rate × factor
  int max_steps = 30;
  double drain_timeout_s = 10;  // drain gives up after this long without progress...
  double drain_max_s = 300;     // ...or after this long in all
  double connect_timeout_s = 30;  // one client's connect + handshake + replay
  double setup_timeout_s = 300;   // all clients online
  int ack_interval_ms = 50;    // receivers ack at least this often...
  int ack_every = 64;          // ...or after this many messages
  int connect_concurrency = 256;  // in-flight connects per worker
  int setup_threads = 8;       // HTTP set-up connections per worker
  int source_addrs = 0;        // 127.0.0.1..N as source addresses (0: one per 20,000 clients)
  std::string prefix;          // user-name prefix (random per run when empty)
  size_t max_pending = 100000; // unacknowledged sends kept per device; beyond: local error
                               // (MQTT: at most 65,534, the packet ids a client has)
  int mqtt_keepalive_s = 60;   // MQTT: CONNECT keep-alive; a PINGREQ after half of it idle
  bool typing = false;         // group: every post is preceded by a typing frame of its sender
  int offline_subscribers = 0; // channel: subscribers that join over HTTP and never connect
  int offline_members = 0;     // group: more members per group, registered over HTTP, never connected
  int catchup = 0;             // channel: posts one subscriber misses while offline, then replays
  bool encrypt = false;        // pairs, group: end-to-end encrypted bodies (bench_crypto.h)
  bool keyring_disk = false;   // --encrypt: keyrings on disk (a temp dir per worker), not in memory

  // Derived.
  bool sends() const { return workload != Workload::kIdle; }
};

// Checks ranges and cross-field constraints; fills defaults (prefix, group size, senders).
Result<void> finalize(BenchOptions& o);

// This worker's share of the clients. Pair-based workloads (pairs, offline-drain,
// reconnect-storm) give each worker whole pairs, so a worker's count is even.
int clients_of_worker(const BenchOptions& o, int worker);
// Index of this worker's first client among all clients (for source-address spreading).
int first_client_of_worker(const BenchOptions& o, int worker);
int total_clients(const BenchOptions& o);
// channel: this worker's share of --offline-subscribers.
int offline_subscribers_of_worker(const BenchOptions& o, int worker);
// This worker's share of a total rate.
double rate_of_worker(const BenchOptions& o, int worker, double total_rate);

}  // namespace tern::bench
