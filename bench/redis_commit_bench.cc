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
// Run: build/release/bench/redis_commit_bench (redis-server from Debian; a release build).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "store/redis/redis_store.h"
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

void BM_RedisCommitPairs(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  redis::testing::RedisServer server;
  if (auto s = server.start(); !s) {
    state.SkipWithError(("redis-server: " + s.error().message).c_str());
    return;
  }
  redis::RedisStoreOptions o;
  o.address = redis::RedisAddress{"127.0.0.1", server.port()};
  o.dense_appends = true;
  auto opened = redis::RedisStore::open(o);
  if (!opened) {
    state.SkipWithError(("open: " + opened.error().message).c_str());
    return;
  }
  auto& db = **opened;
  constexpr int kPairs = 50;
  std::vector<Seq> head(kPairs, 0);
  const std::string frame(200, 'x');  // a small text message's stored frame (opaque here)
  uint64_t msg = 0;
  const double cpu0 = redis_cpu_us(server.port());
  const auto started = std::chrono::steady_clock::now();
  for (auto _ : state) {
    store::Batch b;
    for (int i = 0; i < batch; ++i, ++msg) {
      const int p = static_cast<int>(msg % kPairs);
      const std::string conv = "c" + std::to_string(p);
      const DeviceRef from{"a" + std::to_string(p), 1}, to{"b" + std::to_string(p), 1};
      const Seq seq = ++head[p];
      const std::string cmid = "m" + std::to_string(msg);
      b.add(store::AppendMessage{conv, seq, frame});
      b.add(store::PutIdempotency{from, cmid, store::IdempotencyRecord{conv, seq, 1, 4102444800000}});
      b.add(store::InboxMark{to, conv, seq});
      // The recipient's ack of it (in ternd it rides in a later commit; the cost is the same).
      b.add(store::SetCursor{to, conv, seq});
      b.add(store::InboxDelete{to, conv});
      b.add(store::SetReceipt{conv, to.user, seq, 0});
    }
    if (auto r = db.commit(b, true); !r) {
      state.SkipWithError(("commit: " + r.error().message).c_str());
      return;
    }
  }
  const double cpu1 = redis_cpu_us(server.port());
  const double msgs = static_cast<double>(msg);
  if (cpu0 >= 0 && cpu1 >= 0 && msgs > 0) state.counters["redis_us_per_msg"] = (cpu1 - cpu0) / msgs;
  state.counters["msgs"] = msgs;
  const double wall_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
  if (msgs > 0) state.counters["commit_us_per_msg"] = wall_us / msgs;
}
BENCHMARK(BM_RedisCommitPairs)->Arg(1)->Arg(4)->Arg(16)->Arg(64)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
