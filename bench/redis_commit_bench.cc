// What one Redis costs per message on the commit path, without ternd in the way: the batches
// the group committer sends in the pairs workload, committed through RedisStore (dense appends
// and the idempotency check on, as ternd sets them) to a real redis-server with
// `appendfsync always`, `batch` messages per commit. Per message: a send (append, idempotency
// record, the recipient's inbox mark) and the recipient's ack of it (cursor, inbox delete,
// receipt), over 50 pairs' conversations.
//
// Counter redis_us_per_msg: Redis's own CPU (INFO cpu: used_cpu_user + used_cpu_sys of the
// process) per message. It decides how many messages a second one Redis core can carry
// (docs/scaling.md "What one Redis carries"); ternd's CPU is not in it. commit_us_per_msg is
// this thread's wall time per message (round trip and fsync included).
//
// BM_RedisClusterCommitPairs: the same messages on a 3-master + 3-replica Redis Cluster, as
// the nodes commit them: the sends of `batch` messages in one commit, then their acks in
// another (the owner's node commits a send, the recipient's node its ack). Counters:
// scripts_per_msg (tern_redis_commit_scripts_total), masters_us_per_msg and
// replicas_us_per_msg (the processes' own CPU, INFO cpu, summed by role).
//
// Run: build/release/bench/redis_commit_bench (redis-server from Debian; a release build).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "store/redis/redis_store.h"
#include "store/redis/testing/redis_cluster_server.h"
#include "store/redis/testing/redis_info.h"
#include "store/redis/testing/redis_server.h"

namespace {

using tern::DeviceRef;
using tern::Seq;
namespace store = tern::store;
namespace redis = tern::store::redis;

// Redis's process CPU so far, in µs (INFO cpu), or -1.
double redis_cpu_us(uint16_t port) {
  const std::string info = redis::testing::redis_info(port, "cpu");
  const auto sys = redis::testing::info_field(info, "used_cpu_sys");
  const auto user = redis::testing::info_field(info, "used_cpu_user");
  return sys && user ? (*sys + *user) * 1e6 : -1;
}

// The pairs workload's store ops, over 50 pairs: message n goes from a<p> to b<p> in
// conversation c<p>, p = n mod 50.
struct Pairs {
  static constexpr int kPairs = 50;
  std::vector<Seq> head = std::vector<Seq>(kPairs, 0);
  const std::string frame = std::string(200, 'x');  // a small text message's stored frame (opaque here)
  uint64_t msg = 0;
  // The next message's send (append, idempotency record, the recipient's inbox mark) into
  // `sends`, and the recipient's ack of it (cursor, inbox delete, receipt) into `acks`.
  void next(store::Batch& sends, store::Batch& acks) {
    const int p = static_cast<int>(msg % kPairs);
    const std::string conv = "c" + std::to_string(p);
    const DeviceRef from{"a" + std::to_string(p), 1}, to{"b" + std::to_string(p), 1};
    const Seq seq = ++head[p];
    sends.add(store::AppendMessage{conv, seq, frame});
    sends.add(store::PutIdempotency{from, "m" + std::to_string(msg), store::IdempotencyRecord{conv, seq, 1, 4102444800000}});
    sends.add(store::InboxMark{to, conv, seq});
    acks.add(store::SetCursor{to, conv, seq});
    acks.add(store::InboxDelete{to, conv});
    acks.add(store::SetReceipt{conv, to.user, seq, 0});
    ++msg;
  }
};

// A RedisStore with dense appends, as ternd opens it; null (and `state` told why) if it fails.
std::unique_ptr<redis::RedisStore> open_store(benchmark::State& state, redis::RedisStoreOptions o) {
  o.dense_appends = true;
  auto opened = redis::RedisStore::open(o);
  if (!opened) {
    state.SkipWithError(("open: " + opened.error().message).c_str());
    return nullptr;
  }
  return std::move(opened).value();
}

void BM_RedisCommitPairs(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  redis::testing::RedisServer server;
  if (auto s = server.start(); !s) {
    state.SkipWithError(("redis-server: " + s.error().message).c_str());
    return;
  }
  redis::RedisStoreOptions o;
  o.address = redis::RedisAddress{"127.0.0.1", server.port()};
  auto db = open_store(state, o);
  if (!db) return;
  Pairs pairs;
  const double cpu0 = redis_cpu_us(server.port());
  const auto started = std::chrono::steady_clock::now();
  for (auto _ : state) {
    // A message and its ack in one commit (in ternd the ack rides in a later commit; the cost
    // on one redis-server is the same).
    store::Batch b;
    for (int i = 0; i < batch; ++i) pairs.next(b, b);
    if (auto r = db->commit(b, true); !r) {
      state.SkipWithError(("commit: " + r.error().message).c_str());
      return;
    }
  }
  const double cpu1 = redis_cpu_us(server.port());
  const double msgs = static_cast<double>(pairs.msg);
  if (cpu0 >= 0 && cpu1 >= 0 && msgs > 0) state.counters["redis_us_per_msg"] = (cpu1 - cpu0) / msgs;
  state.counters["msgs"] = msgs;
  const double wall_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
  if (msgs > 0) state.counters["commit_us_per_msg"] = wall_us / msgs;
}
BENCHMARK(BM_RedisCommitPairs)->Arg(1)->Arg(4)->Arg(16)->Arg(64)->UseRealTime()->Unit(benchmark::kMicrosecond);

// The CPU so far of the cluster's masters (first) and replicas (second), in µs.
std::pair<double, double> cluster_cpu_us(const redis::testing::RedisClusterServer& cluster) {
  std::pair<double, double> cpu{0, 0};
  for (uint16_t port : cluster.ports()) {
    auto role = cluster.command(port, {"ROLE"});
    const bool master = role.ok() && role->rfind("master", 0) == 0;
    (master ? cpu.first : cpu.second) += redis_cpu_us(port);
  }
  return cpu;
}

void BM_RedisClusterCommitPairs(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  redis::testing::RedisClusterServer cluster;
  if (auto s = cluster.start(); !s) {
    state.SkipWithError(("redis cluster: " + s.error().message).c_str());
    return;
  }
  redis::RedisStoreOptions o;
  auto seeds = redis::parse_redis_urls(cluster.seeds3());
  if (!seeds) {
    state.SkipWithError("seeds");
    return;
  }
  o.seeds = *seeds;
  auto db = open_store(state, o);
  if (!db) return;
  Pairs pairs;
  tern::Counter& scripts = tern::MetricsRegistry::global().counter("tern_redis_commit_scripts_total", "");
  const uint64_t scripts0 = scripts.value();
  const auto cpu0 = cluster_cpu_us(cluster);
  const auto started = std::chrono::steady_clock::now();
  for (auto _ : state) {
    store::Batch sends, acks;
    for (int i = 0; i < batch; ++i) pairs.next(sends, acks);
    for (const store::Batch* b : {&sends, &acks})
      if (auto r = db->commit(*b, true); !r) {
        state.SkipWithError(("commit: " + r.error().message).c_str());
        return;
      }
  }
  const auto cpu1 = cluster_cpu_us(cluster);
  const double msgs = static_cast<double>(pairs.msg);
  if (msgs > 0) {
    state.counters["masters_us_per_msg"] = (cpu1.first - cpu0.first) / msgs;
    state.counters["replicas_us_per_msg"] = (cpu1.second - cpu0.second) / msgs;
    state.counters["scripts_per_msg"] = static_cast<double>(scripts.value() - scripts0) / msgs;
    const double wall_us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
    state.counters["commit_us_per_msg"] = wall_us / msgs;
  }
  state.counters["msgs"] = msgs;
}
BENCHMARK(BM_RedisClusterCommitPairs)->Arg(1)->Arg(4)->Arg(16)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
