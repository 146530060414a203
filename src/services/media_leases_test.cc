#include "services/media_leases.h"

#include <deque>
#include <functional>

#include <gtest/gtest.h>

#include "store/memory/memory_store.h"

namespace tern::services {
namespace {

TEST(MediaLeases, ALeasedBlobIsNotCollectedAndACollectedOneCannotBeLeased) {
  MediaLeases leases;
  {
    auto lease = leases.acquire({"a", "b"});
    ASSERT_TRUE(lease);
    EXPECT_EQ(leases.leased("a"), 1u);
    auto again = leases.acquire({"a"});  // two sends naming one blob
    ASSERT_TRUE(again);
    EXPECT_EQ(leases.leased("a"), 2u);
    EXPECT_FALSE(leases.begin_collect("a")) << "a send is in flight";
    EXPECT_FALSE(leases.begin_collect("b"));
    EXPECT_TRUE(leases.begin_collect("c"));
    auto refused = leases.acquire({"b", "c"});  // c is being collected: nothing is leased
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, ErrorCode::kNotFound);
    EXPECT_EQ(leases.leased("b"), 1u);
    EXPECT_EQ(leases.leased("c"), 0u);
    leases.end_collect("c");
    EXPECT_TRUE(leases.acquire({"c"}));  // and released again at once
  }
  // Every lease went out of scope: everything may be collected.
  EXPECT_EQ(leases.leased("a"), 0u);
  EXPECT_TRUE(leases.begin_collect("a"));
  EXPECT_TRUE(leases.begin_collect("b"));
  EXPECT_TRUE(leases.begin_collect("c"));
}

// Two nodes on one store that keeps media marks (as Redis does; here two MemoryStores on one
// State): a send's lease on node a keeps node b's sweep off the blob, b's collection refuses
// a's sends, and a lease dropped on a loop is given back in the store through the post.
TEST(MediaLeases, TheStoresMarksAreSeenByEveryNode) {
  store::MemoryStore store_a;
  store_a.keep_media_marks();
  store::MemoryStore store_b(store_a.state());
  std::deque<std::function<void()>> posted;  // node a's worker, run by hand
  MediaLeases a(&store_a, [&](std::function<void()> fn) {
    posted.push_back(std::move(fn));
    return true;
  });
  MediaLeases b(&store_b);

  auto lease = a.acquire({"x"});
  ASSERT_TRUE(lease);
  EXPECT_EQ(b.leased("x"), 0u) << "b's own count knows nothing of it";
  EXPECT_FALSE(b.begin_collect("x")) << "a send on node a names it";
  EXPECT_EQ(b.acquire({"x"}).ok(), true) << "leases do not exclude each other";

  ASSERT_TRUE(b.begin_collect("y"));
  auto refused = a.acquire({"z", "y"});
  ASSERT_FALSE(refused) << "node b collects y";
  EXPECT_EQ(refused.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(a.leased("z"), 0u);
  ASSERT_EQ(posted.size(), 1u) << "z's shared lease is given back";
  posted.front()();
  posted.pop_front();
  EXPECT_TRUE(b.begin_collect("z"));
  b.end_collect("z");
  b.end_collect("y");
  EXPECT_TRUE(a.acquire({"y"}).ok()) << "collection over";
  ASSERT_EQ(posted.size(), 1u);  // that lease was dropped at once, too
  posted.front()();
  posted.pop_front();

  lease->reset();  // the send committed (on an event loop: nothing is called in the store here)
  ASSERT_EQ(posted.size(), 1u);
  EXPECT_FALSE(b.begin_collect("x")) << "not given back until the post ran";
  posted.front()();
  posted.pop_front();
  EXPECT_TRUE(b.begin_collect("x"));
  EXPECT_FALSE(a.acquire({"x"})) << "node b collects x";
  b.end_collect("x");
}

// A store that keeps no marks (RocksDB, one node): the node's own marks decide, as before.
TEST(MediaLeases, AStoreWithoutMarksLeavesItToTheNode) {
  store::MemoryStore store;  // keep_media_marks() not called: as the embedded stores
  MediaLeases a(&store), b(&store);
  auto lease = a.acquire({"x"});
  ASSERT_TRUE(lease);
  EXPECT_FALSE(a.begin_collect("x"));
  EXPECT_TRUE(b.begin_collect("x")) << "another MediaLeases on a store without marks sees nothing";
}

}  // namespace
}  // namespace tern::services
