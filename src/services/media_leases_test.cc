#include "services/media_leases.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace tern::services
