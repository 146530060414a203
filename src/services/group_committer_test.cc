#include "services/group_committer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <future>

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
