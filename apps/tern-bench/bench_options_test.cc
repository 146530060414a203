// Unit tests of tern-bench's pure parts: option checks, the split over workers, the control
// line codec and the step/report verdicts.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "bench_control.h"
#include "bench_options.h"
#include "bench_report.h"
#include "client/lean/lean_http.h"

namespace tern::bench {
namespace {

BenchOptions make(Workload w, int clients, int workers) {
  BenchOptions o;
  o.workload = w;
  o.clients = clients;
  o.workers = workers;
  EXPECT_TRUE(finalize(o).ok());
  return o;
}

TEST(BenchOptions, SplitsClientsOverWorkers) {
  for (int workers : {1, 2, 3, 7}) {
    auto pairs = make(Workload::kPairs, 101, workers);
    int total = 0;
    for (int w = 0; w < workers; ++w) {
      EXPECT_EQ(clients_of_worker(pairs, w) % 2, 0) << "pairs stay whole";
      EXPECT_EQ(first_client_of_worker(pairs, w), total);
      total += clients_of_worker(pairs, w);
    }
    EXPECT_EQ(total, 100);  // the odd client out has no partner
    EXPECT_EQ(total_clients(pairs), 100);

    auto idle = make(Workload::kIdle, 19000, workers);
    double rate = 0;
    total = 0;
    for (int w = 0; w < workers; ++w) {
      total += clients_of_worker(idle, w);
      rate += rate_of_worker(idle, w, 1000);
    }
    EXPECT_EQ(total, 19000);
    EXPECT_NEAR(rate, 1000, 1e-6);
  }
}

TEST(BenchOptions, DefaultsAndChecks) {
  auto b = make(Workload::kBroadcast, 10, 1);
  EXPECT_EQ(b.group_size, 1024);
  auto g = make(Workload::kGroup, 10, 1);
  EXPECT_EQ(g.group_size, 20);
  EXPECT_EQ(g.senders, 2);
  EXPECT_EQ(g.prefix.substr(0, 2), "tb");
  EXPECT_EQ(make(Workload::kIdle, 45000, 3).source_addrs, 3);

  BenchOptions o;
  o.workers = 0;
  EXPECT_FALSE(finalize(o).ok());
  o = BenchOptions{};
  o.rate = 0;
  EXPECT_FALSE(finalize(o).ok());
  o = BenchOptions{};
  o.workload = Workload::kIdle;
  o.find_max = true;
  EXPECT_FALSE(finalize(o).ok());
  o = BenchOptions{};
  o.prefix = "Bad Prefix";
  EXPECT_FALSE(finalize(o).ok());
  o = BenchOptions{};
  o.workload = Workload::kReconnectStorm;
  o.rate = 0;  // a storm without traffic is fine
  EXPECT_TRUE(finalize(o).ok());
  EXPECT_FALSE(parse_workload("nope").ok());
  EXPECT_EQ(*parse_workload("offline-drain"), Workload::kOfflineDrain);
}

TEST(BenchOptions, ChannelHasOnePosterAndSplitsOfflineSubscribers) {
  EXPECT_EQ(*parse_workload("channel"), Workload::kChannel);
  EXPECT_EQ(workload_name(Workload::kChannel), "channel");
  BenchOptions o;
  o.workload = Workload::kChannel;
  o.clients = 19000;
  o.workers = 2;
  o.offline_subscribers = 181001;
  ASSERT_TRUE(finalize(o).ok());
  EXPECT_EQ(clients_of_worker(o, 0) + clients_of_worker(o, 1), 19000);
  EXPECT_EQ(rate_of_worker(o, 0, 1), 1.0) << "the poster is worker 0's";
  EXPECT_EQ(rate_of_worker(o, 1, 1), 0.0);
  EXPECT_EQ(offline_subscribers_of_worker(o, 0), 90501);
  EXPECT_EQ(offline_subscribers_of_worker(o, 1), 90500);
  EXPECT_EQ(offline_subscribers_of_worker(make(Workload::kGroup, 10, 1), 0), 0);

  BenchOptions c;
  c.workload = Workload::kChannel;
  c.clients = 2;
  c.catchup = 100;
  EXPECT_FALSE(finalize(c).ok()) << "poster, a live subscriber and the catch-up one";
  c.clients = 3;
  EXPECT_TRUE(finalize(c).ok());
  c.find_max = true;
  EXPECT_FALSE(finalize(c).ok());

  // MQTT: the channel runs as a topic; a subscriber that never connected has no session.
  BenchOptions m;
  m.workload = Workload::kChannel;
  m.protocol = Protocol::kMqtt;
  m.clients = 3;
  EXPECT_TRUE(finalize(m).ok());
  m.offline_subscribers = 5;
  EXPECT_FALSE(finalize(m).ok());
  m.offline_subscribers = 0;
  m.catchup = 5;
  EXPECT_FALSE(finalize(m).ok());
  m.catchup = 0;
  m.workload = Workload::kGroup;
  EXPECT_FALSE(finalize(m).ok()) << "group has no MQTT mode";
  for (Workload w : {Workload::kPairs, Workload::kGroup, Workload::kBroadcast}) {
    BenchOptions x;
    x.workload = w;
    x.offline_subscribers = 5;
    EXPECT_FALSE(finalize(x).ok()) << workload_name(w);
    x.offline_subscribers = 0;
    x.catchup = 5;
    EXPECT_FALSE(finalize(x).ok()) << workload_name(w);
  }
  BenchOptions neg;
  neg.workload = Workload::kChannel;
  neg.offline_subscribers = -1;
  EXPECT_FALSE(finalize(neg).ok());
}

TEST(BenchOptions, OfflineMembersAreForGroups) {
  BenchOptions o;
  o.workload = Workload::kGroup;
  o.offline_members = 40;
  EXPECT_TRUE(finalize(o).ok());
  o.workload = Workload::kPairs;
  EXPECT_FALSE(finalize(o).ok());
  o.workload = Workload::kGroup;
  o.offline_members = -1;
  EXPECT_FALSE(finalize(o).ok());
}

TEST(BenchOptions, TypingIsForGroups) {
  BenchOptions o;
  o.workload = Workload::kGroup;
  o.typing = true;
  EXPECT_TRUE(finalize(o).ok());
  o.workload = Workload::kPairs;
  EXPECT_FALSE(finalize(o).ok());
}

TEST(BenchOptions, EncryptIsForTernPairsAndGroups) {
  BenchOptions o;
  o.encrypt = true;
  EXPECT_TRUE(finalize(o).ok());
  o.keyring_disk = true;
  EXPECT_TRUE(finalize(o).ok());
  BenchOptions g = o;
  g.workload = Workload::kGroup;
  EXPECT_TRUE(finalize(g).ok());
  g.workload = Workload::kBroadcast;
  EXPECT_FALSE(finalize(g).ok());
  BenchOptions m = o;
  m.protocol = Protocol::kMqtt;
  EXPECT_FALSE(finalize(m).ok());
  BenchOptions d;
  d.keyring_disk = true;
  EXPECT_FALSE(finalize(d).ok()) << "--keyring-disk without --encrypt";
}

TEST(BenchOptions, MqttIsForPairsAndChannelOnly) {
  EXPECT_EQ(*parse_protocol("mqtt"), Protocol::kMqtt);
  EXPECT_EQ(*parse_protocol("tern"), Protocol::kTern);
  EXPECT_FALSE(parse_protocol("amqp").ok());
  EXPECT_EQ(protocol_name(Protocol::kMqtt), "mqtt");
  BenchOptions o;
  EXPECT_EQ(o.protocol, Protocol::kTern);  // the default
  o.protocol = Protocol::kMqtt;
  EXPECT_TRUE(finalize(o).ok());
  o.find_max = true;
  EXPECT_TRUE(finalize(o).ok());
  for (Workload w : {Workload::kGroup, Workload::kBroadcast, Workload::kIdle, Workload::kOfflineDrain,
                     Workload::kReconnectStorm}) {
    BenchOptions m;
    m.protocol = Protocol::kMqtt;
    m.workload = w;
    EXPECT_FALSE(finalize(m).ok()) << workload_name(w);
  }
}

// --ca: an unreadable file, or a CA for a plain server, is a clear error before anything runs;
// MQTT has no TLS layer, so every way of asking for it is refused.
TEST(BenchOptions, CaFileAndTls) {
  BenchOptions o;
  o.server = "https://127.0.0.1:8443";
  EXPECT_TRUE(finalize(o).ok()) << "https without --ca: the system store";
  o.ca_file = "/nonexistent/tern-bench-ca.pem";
  auto missing = finalize(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(missing.error().message.find("--ca /nonexistent/tern-bench-ca.pem: cannot read"), std::string::npos)
      << missing.error().message;

  BenchOptions plain;
  plain.server = "http://127.0.0.1:8080";
  plain.ca_file = TERN_SOURCE_DIR "/CMakeLists.txt";  // readable: the scheme is the complaint
  auto p = finalize(plain);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("https://"), std::string::npos) << p.error().message;

  for (const char* url : {"https://127.0.0.1:8883", "mqtts://127.0.0.1:8883"}) {
    BenchOptions m;
    m.protocol = Protocol::kMqtt;
    m.server = url;
    auto r = finalize(m);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_NE(r.error().message.find("plain TCP only"), std::string::npos) << r.error().message;
  }
  auto mqtts = client::lean::parse_server_url("mqtts://127.0.0.1:8883");
  ASSERT_FALSE(mqtts.ok());
  EXPECT_NE(mqtts.error().message.find("mqtts://"), std::string::npos);
}

// parse_server_url: https:// and wss:// carry a TLS context for the host; http:// none; a CA
// file that is not PEM is refused with the URL in the message.
TEST(BenchOptions, ServerUrlSchemes) {
  auto plain = client::lean::parse_server_url("http://127.0.0.1:8080");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->tls, nullptr);
  EXPECT_EQ(plain->url(), "http://127.0.0.1:8080");
  for (const char* url : {"https://127.0.0.1:8443", "wss://127.0.0.1:8443/"}) {
    auto t = client::lean::parse_server_url(url);
    ASSERT_TRUE(t.ok()) << url;
    ASSERT_NE(t->tls, nullptr) << url;
    EXPECT_EQ(t->tls->host, "127.0.0.1");
    EXPECT_EQ(t->port, 8443);
    EXPECT_EQ(t->url(), "https://127.0.0.1:8443");
  }
  auto bad_ca = client::lean::parse_server_url("https://127.0.0.1:8443", TERN_SOURCE_DIR "/CMakeLists.txt");
  ASSERT_FALSE(bad_ca.ok());
  EXPECT_NE(bad_ca.error().message.find("https://127.0.0.1:8443: tls: CA file"), std::string::npos)
      << bad_ca.error().message;
}

TEST(BenchReport, PrometheusValue) {
  const std::string text =
      "# HELP tern_store_writes_total store write ops\n# TYPE tern_store_writes_total counter\n"
      "tern_store_writes_total_x 7\ntern_store_writes_total 1234\ntern_store_reads_total{a=\"b\"} 5\n"
      "tern_store_reads_total 56.5";
  EXPECT_EQ(prometheus_value(text, "tern_store_writes_total"), 1234.0);
  EXPECT_EQ(prometheus_value(text, "tern_store_reads_total"), 56.5) << "the unlabelled sample, last line";
  EXPECT_FALSE(prometheus_value(text, "tern_store").has_value());
  EXPECT_FALSE(prometheus_value("tern_x abc\n", "tern_x").has_value());
}

TEST(BenchControl, LinesRoundTrip) {
  const std::string line = encode_control_line('B', boost::json::object{{"name", "step_end"}, {"x", 1}});
  ASSERT_EQ(line.back(), '\n');
  auto back = parse_control_line(std::string_view(line).substr(0, line.size() - 1));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->first, 'B');
  EXPECT_EQ(back->second.at("name").as_string(), "step_end");
  EXPECT_FALSE(parse_control_line("B").ok());
  EXPECT_FALSE(parse_control_line("B {not json").ok());
}

TEST(BenchReport, SustainedNeedsEverythingDeliveredInTime) {
  BenchOptions o = make(Workload::kPairs, 10, 1);
  o.p99_bound_ms = 25;
  StepSummary s;
  s.rate_target = 1000;
  s.send_s = 10;
  s.c.acked = 9900;
  s.acked_in_send = 9900;
  s.delivered_in_send = 9900;
  s.latency.record(5000, 100);  // 5 ms
  EXPECT_TRUE(s.sustained(o));
  EXPECT_NEAR(s.sent_per_s(), 990, 1e-9);

  StepSummary slow = s;
  slow.latency.record(40000, 10);  // 10 % at 40 ms: p99 over the bound
  EXPECT_FALSE(slow.sustained(o));
  StepSummary behind = s;
  behind.acked_in_send = 9000;  // 90 % of the target rate within the send window
  EXPECT_FALSE(behind.sustained(o));
  StepSummary lossy = s;
  lossy.undelivered = 1;
  EXPECT_FALSE(lossy.sustained(o));
  StepSummary refused = s;
  refused.c.send_failed = 1;
  EXPECT_FALSE(refused.sustained(o));
}

TEST(BenchReport, StepMergesWorkersAndExitCodes) {
  BenchOptions o = make(Workload::kPairs, 10, 2);
  StepSummary s;
  lean::LatencyHistogram h;
  h.record(1000);
  Counters c;
  c.acked = 10;
  c.delivered = 10;
  boost::json::object d{{"send_s", 2.0}, {"drain_s", 0.1}, {"drained", true}, {"counters", c.to_json()},
                        {"latency", h.to_json()}, {"gen_cpu_us", 500}, {"delivered_in_send", 10}};
  s.add_worker(d);
  d["send_s"] = 2.5;
  d["drained"] = false;
  s.add_worker(d);
  EXPECT_EQ(s.c.acked, 20u);
  EXPECT_EQ(s.latency.count(), 2u);
  EXPECT_DOUBLE_EQ(s.send_s, 2.5);
  EXPECT_FALSE(s.drained);
  EXPECT_EQ(s.gen_cpu_us, 1000);
  EXPECT_DOUBLE_EQ(s.gen_us_per_delivery(), 50.0);
  EXPECT_FALSE(s.server_us_per_delivery().has_value());
  s.server_cpu_us = 2000;
  EXPECT_DOUBLE_EQ(*s.server_us_per_delivery(), 100.0);

  Report r;
  r.opt = &o;
  r.clients = 10;
  r.online_at_end = 10;
  EXPECT_EQ(r.exit_code(), 0);
  r.verifier.losses = 1;
  EXPECT_EQ(r.exit_code(), 1);
  r.verifier.losses = 0;
  r.online_at_end = 9;
  EXPECT_EQ(r.exit_code(), 2);
  r.online_at_end = 10;
  r.fatal.push_back("x");
  EXPECT_EQ(r.exit_code(), 2);
  const auto j = r.to_json();
  EXPECT_EQ(j.at("exit_code").as_int64(), 2);
  EXPECT_FALSE(r.table().empty());
}

}  // namespace
}  // namespace tern::bench
