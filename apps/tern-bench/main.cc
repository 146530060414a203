// tern-bench: load generator and delivery verifier for a Tern server. Parses the command line
// and hands over to the coordinator (bench_coordinator.h). See docs/benchmarks.md.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "bench_coordinator.h"
#include "bench_options.h"

int main(int argc, char** argv) {
  using tern::bench::BenchOptions;
  BenchOptions o;
  std::string workload;
  std::string protocol = "tern";
  CLI::App app{
      "tern-bench: registers its own users, drives many lean WebSocket clients against a Tern server, measures "
      "send-to-deliver latency and throughput, and verifies that nothing acknowledged is lost, duplicated or "
      "reordered (any violation: exit 1; a run that could not be carried out: exit 2).\n\n"
      "Workloads: pairs (1:1 at --rate), group (--group-size members, --senders of them send), broadcast (one "
      "sender, many receivers), idle (connections held; server RSS per connection with --server-pid), "
      "offline-drain (--queued messages per offline receiver, then time to replay), reconnect-storm (everyone drops "
      "and returns at once; time until all are synced), channel (one poster posts at --rate into a channel every other "
      "client subscribes to; --offline-subscribers more join and never connect; --catchup N: one subscriber misses N "
      "posts offline, then replays).\n\nWith --protocol mqtt the pairs and channel workloads run against an MQTT "
      "3.1.1 broker instead (QoS 1), with the same schedule, records, verifier and figures."};
  app.add_option("workload", workload, "pairs | group | broadcast | idle | offline-drain | reconnect-storm | channel")
      ->required();
  app.add_option("--server", o.server,
                 "server URL: http://host:port, or https://host:port for TLS (HTTPS set-up, WSS connections; the "
                 "certificate must verify and name the host); mqtt://host:port with --protocol mqtt")
      ->capture_default_str();
  app.add_option("--ca", o.ca_file,
                 "PEM file of CA certificates to trust for an https:// --server, besides the system store "
                 "(a private CA)");
  app.add_option("--protocol", protocol,
                 "tern (wire-v1 over WebSocket) or mqtt (MQTT 3.1.1, QoS 1, against a broker; pairs: client "
                 "i publishes to <prefix>/p/<pair>/a|b, its partner subscribes; channel: the poster publishes to "
                 "<prefix>/ch, every other client subscribes; PUBACK is the ack; plain TCP only: no mqtts://)")
      ->capture_default_str();
  app.add_option("--mqtt-keepalive", o.mqtt_keepalive_s, "MQTT CONNECT keep-alive, seconds (0: none)")
      ->capture_default_str();
  app.add_option("--clients", o.clients, "clients (one user and one connection each)")->capture_default_str();
  app.add_option("--duration", o.duration_s, "seconds of traffic per step (idle: seconds held)")->capture_default_str();
  app.add_option("--rate", o.rate, "total sends per second (open-loop schedule), where the workload sends")
      ->capture_default_str();
  app.add_flag("--json", o.json, "print the result as one JSON document on stdout");
  app.add_flag("--quiet", o.quiet, "no progress lines on stderr");
  app.add_option("--workers", o.workers, "worker processes (each holds clients/N connections)")->capture_default_str();
  app.add_option("--server-pid", o.server_pid, "server process id: report its CPU per message and RSS");
  app.add_option("--size", o.body_bytes, "message body bytes (before base64)")->capture_default_str();
  app.add_option("--group-size", o.group_size, "group/broadcast: members per group (default 20 / 1024)");
  app.add_option("--senders", o.senders, "group: senders per group (default 2)");
  app.add_flag("--typing", o.typing, "group: each sender sends a typing frame before every post (same rate)");
  app.add_option("--offline-subscribers", o.offline_subscribers,
                 "channel: this many more users join the channel over HTTP and never connect")
      ->capture_default_str();
  app.add_option("--offline-members", o.offline_members,
                 "group: this many more members per group, registered over HTTP, never connected (their deliveries "
                 "go to no connection)")
      ->capture_default_str();
  app.add_option("--catchup", o.catchup,
                 "channel: one subscriber stays offline while this many posts go in (at --rate), then connects; "
                 "reports the time from its connect to `synced` and to the last post")
      ->capture_default_str();
  app.add_flag("--encrypt", o.encrypt,
               "pairs, group: end-to-end encryption as a real client does it (SDK keyring, Signal v3): keys "
               "uploaded, sessions from the key directory's bundles, ciphertexts in `bodies` (group: sender keys "
               "distributed first, then one SenderKeyMessage per post), every message decrypted and checked; "
               "reports client CPU per encrypt and decrypt");
  app.add_flag("--keyring-disk", o.keyring_disk,
               "--encrypt: keyrings on disk (encrypted, saved with fsync before a send leaves and before an ack) in a temporary "
               "directory, instead of in memory");
  app.add_option("--queued", o.queued, "offline-drain: messages queued per offline receiver")->capture_default_str();
  app.add_option("--storm-at", o.storm_at, "reconnect-storm: drop at this fraction of --duration")->capture_default_str();
  app.add_flag("--find-max", o.find_max, "step the rate up (x --step-factor) until p99 exceeds the bound or anything fails");
  app.add_option("--p99-bound-ms", o.p99_bound_ms, "find-max: p99 bound")->capture_default_str();
  app.add_option("--step-factor", o.step_factor, "find-max: rate multiplier per step")->capture_default_str();
  app.add_option("--max-steps", o.max_steps, "find-max: most steps")->capture_default_str();
  app.add_option("--drain-timeout", o.drain_timeout_s,
                 "after sending, wait for outstanding acks and deliveries until this many seconds pass without "
                 "progress; what is missing then is lost")
      ->capture_default_str();
  app.add_option("--drain-max", o.drain_max_s, "...and at most this many seconds in all")->capture_default_str();
  app.add_option("--connect-timeout", o.connect_timeout_s, "seconds for one connect + handshake")->capture_default_str();
  app.add_option("--setup-timeout", o.setup_timeout_s, "seconds for all clients to be online")->capture_default_str();
  app.add_option("--ack-interval-ms", o.ack_interval_ms, "receivers ack at least this often")->capture_default_str();
  app.add_option("--ack-every", o.ack_every, "...or after this many messages")->capture_default_str();
  app.add_option("--connect-concurrency", o.connect_concurrency, "connects in flight per worker")->capture_default_str();
  app.add_option("--setup-threads", o.setup_threads, "HTTP set-up connections per worker")->capture_default_str();
  app.add_option("--source-addrs", o.source_addrs,
                 "spread connections over 127.0.0.1..N (default: one address per 20,000 clients)");
  app.add_option("--prefix", o.prefix, "user-name prefix (default: random per run)");
  app.add_option("--max-pending", o.max_pending, "unacknowledged sends kept per client")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto w = tern::bench::parse_workload(workload);
  if (!w) {
    std::fprintf(stderr, "tern-bench: %s\n", w.error().message.c_str());
    return 2;
  }
  o.workload = *w;
  auto p = tern::bench::parse_protocol(protocol);
  if (!p) {
    std::fprintf(stderr, "tern-bench: %s\n", p.error().message.c_str());
    return 2;
  }
  o.protocol = *p;
  if (auto r = tern::bench::finalize(o); !r) {
    std::fprintf(stderr, "tern-bench: %s\n", r.error().message.c_str());
    return 2;
  }
  return tern::bench::run_bench(o);
}
