#include "services/group_committer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "base/metrics.h"
#include "services/commit_gate_fixture.h"
#include "store/memory/memory_store.h"
#include "store/rocksdb/rocksdb_store.h"

namespace tern::services {
namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/tern-gc-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

TEST(GroupCommitter, CommitsEveryEntryInOrderAndRunsCompletions) {
  TempDir dir;
  auto store = store::RocksDbStore::open(dir.path.string());
  ASSERT_TRUE(store);
  GroupCommitter gc(**store, /*sync*/ true, /*queue*/ 10000, /*max_batch*/ 64);
  gc.start();
  constexpr int kN = 500;
  std::vector<int> order;
  std::mutex mu;
  std::promise<void> all;
  std::atomic<int> done{0};
  for (int i = 1; i <= kN; ++i) {
    store::Batch b;
    b.add(store::AppendMessage{"c", static_cast<Seq>(i), "m" + std::to_string(i)});
    ASSERT_TRUE(gc.submit(std::move(b), [&, i](const Result<void>& r) {
      EXPECT_TRUE(r.ok());
      {
        std::lock_guard lock(mu);
        order.push_back(i);
      }
      if (++done == kN) all.set_value();
    }));
  }
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  gc.stop();
  for (int i = 0; i < kN; ++i) ASSERT_EQ(order[i], i + 1);
  EXPECT_EQ(*(*store)->head("c"), static_cast<Seq>(kN));
}

TEST(GroupCommitter, RejectsWhenQueueIsFullOrStopped) {
  TempDir dir;
  auto store = store::RocksDbStore::open(dir.path.string());
  ASSERT_TRUE(store);
  GroupCommitter gc(**store, true, /*queue*/ 2, 64);  // not started: nothing drains
  int rejected = 0;
  ErrorCode code = ErrorCode::kOk;
  auto cb = [&](const Result<void>& r) {
    if (!r) {
      ++rejected;
      code = r.error().code;
    }
  };
  EXPECT_TRUE(gc.submit(store::Batch{}, cb));
  EXPECT_TRUE(gc.submit(store::Batch{}, cb));
  EXPECT_FALSE(gc.submit(store::Batch{}, cb));
  EXPECT_EQ(rejected, 1);
  EXPECT_EQ(code, ErrorCode::kOverloaded);
  gc.start();
  gc.stop();  // drains the two queued entries
  EXPECT_FALSE(gc.submit(store::Batch{}, cb));
  EXPECT_EQ(code, ErrorCode::kDraining);
}

}  // namespace
}  // namespace tern::services

namespace tern::services {
namespace {

// Counts the commits that reach the store; its gate (closed) holds them in the store, the
// writer inside a commit.
using GatedStore = testing::CommitGatedStore;

// Device n, the source of an entry for the commit gap (stable address: submit takes a pointer).
const DeviceRef* device(int n) {
  static std::map<int, DeviceRef> devices;
  return &devices.try_emplace(n, DeviceRef{"u" + std::to_string(n), 1}).first->second;
}

// Waits (at most 10 s) until the writer holds a commit back for the gap.
bool wait_holding(GroupCommitter& gc) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!gc.holding_for_gap() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  return gc.holding_for_gap();
}

store::Batch append(Seq seq) {
  store::Batch b;
  b.add(store::AppendMessage{"c", seq, "m" + std::to_string(seq)});
  return b;
}

// With a commit gap (a store over the network), while another source may still submit,
// entries that arrive while the previous commit is less than the gap old wait and go into
// one commit together.
TEST(GroupCommitter, WithAGapEntriesArrivingMeanwhileShareOneCommitWhileOtherSourcesMaySubmit) {
  GatedStore store;
  GroupCommitter gc(store, /*sync*/ true, /*queue*/ 1000, /*max_batch*/ 64);
  gc.set_min_gap(std::chrono::seconds(1));  // far longer than the submits below take
  gc.start();
  store.close();
  std::promise<void> first;
  ASSERT_TRUE(gc.submit(
      append(1),
      [&](const Result<void>& r) {
        EXPECT_TRUE(r.ok());
        first.set_value();
      },
      device(1)));
  // Idle: the first entry goes to the store at once; it waits there while held.
  ASSERT_TRUE(store.await_arrived(1));
  constexpr int kN = 10;
  std::atomic<int> done{0};
  std::promise<void> rest;
  auto count = [&](const Result<void>& r) {
    EXPECT_TRUE(r.ok());
    if (++done == kN) rest.set_value();
  };
  ASSERT_TRUE(gc.submit(append(2), count, device(2)));
  store.open();
  ASSERT_EQ(first.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  // Source 1 submitted lately and has nothing outstanding: the writer holds entry 2 back for
  // the gap. These arrive meanwhile (from sources it does not wait for) and join it.
  ASSERT_TRUE(wait_holding(gc)) << "entry 2 was not held for the gap";
  for (int i = 3; i <= kN + 1; ++i) ASSERT_TRUE(gc.submit(append(static_cast<Seq>(i)), count, device(i)));
  ASSERT_EQ(rest.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  gc.stop();
  EXPECT_EQ(store.commits.load(), 2) << "the entries submitted within the gap were not committed together";
  EXPECT_EQ(*store.head("c"), static_cast<Seq>(kN + 1));
}

// A lone submitter that waits for each commit before its next entry (a client waiting for
// each `sent`): no other source is expected, so each of its commits starts at once, not one
// per gap.
TEST(GroupCommitter, WithAGapALoneSubmitterWaitingForEachCommitIsNotHeld) {
  GatedStore store;
  GroupCommitter gc(store, /*sync*/ true, /*queue*/ 1000, /*max_batch*/ 64);
  gc.set_min_gap(std::chrono::seconds(60));  // held once, an entry would miss the 10 s below
  gc.start();
  constexpr int kN = 5;
  for (int i = 1; i <= kN; ++i) {
    std::promise<void> committed;
    ASSERT_TRUE(gc.submit(
        append(static_cast<Seq>(i)),
        [&](const Result<void>& r) {
          EXPECT_TRUE(r.ok());
          committed.set_value();
        },
        device(7)));
    ASSERT_EQ(committed.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready)
        << "entry " << i << " was held by the gap";
  }
  gc.stop();
  EXPECT_EQ(store.commits.load(), kN);
  EXPECT_EQ(*store.head("c"), static_cast<Seq>(kN));
}

// Two such submitters: the writer holds one's entry only until the other's is in, then
// commits both at once.
TEST(GroupCommitter, WithAGapAHeldCommitStartsOnceTheLastExpectedSourceSubmits) {
  GatedStore store;
  GroupCommitter gc(store, /*sync*/ true, /*queue*/ 1000, /*max_batch*/ 64);
  gc.set_min_gap(std::chrono::seconds(60));  // waited out, the entries would miss the 10 s below
  gc.start();
  store.close();
  std::promise<void> a1, both;
  std::atomic<int> done{0};
  auto count = [&](const Result<void>& r) {
    EXPECT_TRUE(r.ok());
    if (++done == 2) both.set_value();
  };
  ASSERT_TRUE(gc.submit(append(1), [&](const Result<void>&) { a1.set_value(); }, device(1) /*A*/));
  ASSERT_TRUE(store.await_arrived(1));
  ASSERT_TRUE(gc.submit(append(2), count, device(2) /*B*/));
  store.open();
  ASSERT_EQ(a1.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  // B's entry is held: A, done, may send again.
  ASSERT_TRUE(wait_holding(gc));
  ASSERT_TRUE(gc.submit(append(3), count, device(1) /*A*/));
  ASSERT_EQ(both.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "the held commit did not start when A submitted";
  gc.stop();
  EXPECT_EQ(store.commits.load(), 2) << "B's entry and A's second did not share a commit";
  EXPECT_EQ(*store.head("c"), 3u);
}

// A source is waited for only while its last submit is less than kBusyGaps gaps old: one that
// went quiet does not hold the commits of the clients still sending.
TEST(GroupCommitter, WithAGapASourceWhoseLastSubmitIsTenGapsOldIsNoLongerWaitedFor) {
  const Counter& held = MetricsRegistry::global().counter("tern_store_commit_gap_waits_total", "");
  GatedStore store;
  GroupCommitter gc(store, /*sync*/ true, /*queue*/ 1000, /*max_batch*/ 64);
  constexpr auto kGap = std::chrono::milliseconds(100);
  gc.set_min_gap(kGap);
  gc.start();
  Seq seq = 0;
  auto commit = [&](int source) {
    std::promise<void> committed;
    EXPECT_TRUE(gc.submit(append(++seq), [&](const Result<void>&) { committed.set_value(); }, device(source)));
    return committed.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  };
  ASSERT_TRUE(commit(/*A*/ 1));
  // The behaviour under test is time passing: A's submit ages past the window.
  std::this_thread::sleep_for(GroupCommitter::kBusyGaps * kGap + std::chrono::milliseconds(100));
  const uint64_t before = held.value();
  ASSERT_TRUE(commit(/*B*/ 2));
  ASSERT_TRUE(commit(/*B*/ 2));  // within the gap of the one before: held if A were still waited for
  EXPECT_EQ(held.value(), before) << "a source quiet for more than the window was still waited for";
  // Against it: A submits again, within the gap, and is held for B (recent, idle); B's next
  // entry, right after, is held for A.
  ASSERT_TRUE(commit(/*A*/ 1));
  ASSERT_TRUE(commit(/*B*/ 2));
  EXPECT_EQ(held.value(), before + 2) << "a recent source was not waited for";
  gc.stop();
}

// A wave of entries from many sources (acks of a large group) is forgotten once the window
// has passed: what the gap keeps track of is bounded by the recent submits.
TEST(GroupCommitter, WithAGapTheSourcesOfAWaveAreForgottenOnceTheWindowPassed) {
  GatedStore store;
  GroupCommitter gc(store, /*sync*/ true, /*queue*/ 20000, /*max_batch*/ 1024);
  constexpr auto kGap = std::chrono::milliseconds(10);
  gc.set_min_gap(kGap);
  gc.start();
  constexpr int kWave = 10000;
  std::atomic<int> done{0};
  std::promise<void> all;
  for (int i = 1; i <= kWave; ++i)
    ASSERT_TRUE(gc.submit(
        append(static_cast<Seq>(i)),
        [&](const Result<void>&) {
          if (++done == kWave) all.set_value();
        },
        device(i)));
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  // The behaviour under test is time passing: the wave ages past the window.
  std::this_thread::sleep_for(GroupCommitter::kBusyGaps * kGap + std::chrono::milliseconds(50));
  std::promise<void> one;
  ASSERT_TRUE(gc.submit(append(kWave + 1), [&](const Result<void>&) { one.set_value(); }, device(kWave + 1)));
  ASSERT_EQ(one.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(gc.tracked_sources(), 1u) << "the wave's sources were kept after the window";
  gc.stop();
}

// With the completion thread (Redis mode), a completion of a submitter that is not a loop
// (an HTTP handler on a reader thread) that waits, e.g. for a store read, does not hold up
// the next commit; completions still run in commit order, and stop() runs them all.
TEST(GroupCommitter, ACompletionThreadKeepsTheWriterCommittingWhileACompletionWaits) {
  GatedStore store;
  GroupCommitter gc(store, /*sync*/ true, /*queue*/ 1000, /*max_batch*/ 64);
  gc.set_completion_thread(true);
  gc.start();
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> first_running;
  std::mutex mu;
  std::vector<int> order;
  store::Batch b1;
  b1.add(store::AppendMessage{"c", 1, "m1"});
  ASSERT_TRUE(gc.submit(std::move(b1), [&](const Result<void>& r) {
    EXPECT_TRUE(r.ok());
    first_running.set_value();
    released.wait();  // a completion that waits (a store read over the network)
    std::lock_guard lock(mu);
    order.push_back(1);
  }));
  ASSERT_EQ(first_running.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  // The first completion is still waiting: later entries are committed all the same.
  constexpr int kN = 5;
  for (int i = 2; i <= kN; ++i) {
    store::Batch b;
    b.add(store::AppendMessage{"c", static_cast<Seq>(i), "m" + std::to_string(i)});
    ASSERT_TRUE(gc.submit(std::move(b), [&, i](const Result<void>& r) {
      EXPECT_TRUE(r.ok());
      std::lock_guard lock(mu);
      order.push_back(i);
    }));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (*store.head("c") != static_cast<Seq>(kN) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(*store.head("c"), static_cast<Seq>(kN)) << "the writer waited for a completion";
  {
    std::lock_guard lock(mu);
    EXPECT_TRUE(order.empty()) << "a later completion ran before the waiting one";
  }
  release.set_value();
  gc.stop();  // runs every completion handed off
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4, 5}));
}


// A device that must be new and is stored already (two nodes linked the same number) fails
// its own entry only: the entries merged with it into one commit are committed, in order, and
// the committer goes on (it is not a fatal store failure).
TEST(GroupCommitter, AnEntryRefusedWithExistsFailsAloneAndTheRestOfItsCommitLands) {
  GatedStore store;
  store::Batch seed;
  seed.add(store::PutDevice{DeviceRef{"alice", 2}, "tok-first"});
  ASSERT_TRUE(store.commit(seed, true).ok());
  GroupCommitter gc(store, /*sync*/ true, /*queue*/ 1000, /*max_batch*/ 64);
  gc.set_min_gap(std::chrono::milliseconds(300));  // the three entries below share one commit
  gc.start();
  std::promise<void> warm;
  ASSERT_TRUE(gc.submit(store::Batch{}, [&](const Result<void>&) { warm.set_value(); }));
  ASSERT_EQ(warm.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const int commits_before = store.commits.load();
  std::vector<std::promise<Result<void>>> results(3);
  store::Batch a, b, c;
  a.add(store::AppendMessage{"c1", 1, "m1"});
  b.add(store::PutDevice{DeviceRef{"alice", 2}, "tok-second", /*must_be_new=*/true});
  c.add(store::AppendMessage{"c1", 2, "m2"});
  store::Batch* batches[] = {&a, &b, &c};
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(gc.submit(std::move(*batches[i]), [&, i](const Result<void>& r) { results[i].set_value(r); }));
  std::vector<Result<void>> got;
  for (auto& p : results) {
    auto f = p.get_future();
    ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    got.push_back(f.get());
  }
  EXPECT_TRUE(got[0].ok());
  ASSERT_FALSE(got[1].ok());
  EXPECT_EQ(got[1].error().code, ErrorCode::kExists);
  EXPECT_TRUE(got[2].ok());
  EXPECT_EQ(store.commits.load() - commits_before, 4) << "one merged commit refused, then each entry alone";
  EXPECT_EQ(*store.head("c1"), 2u);
  EXPECT_EQ(*store.find_token("tok-first"), std::optional<DeviceRef>(DeviceRef{"alice", 2}));
  std::promise<Result<void>> later;
  store::Batch d;
  d.add(store::AppendMessage{"c1", 3, "m3"});
  ASSERT_TRUE(gc.submit(std::move(d), [&](const Result<void>& r) { later.set_value(r); }));
  auto lf = later.get_future();
  ASSERT_EQ(lf.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_TRUE(lf.get().ok()) << "writes go on";
  gc.stop();
}

}  // namespace
}  // namespace tern::services
