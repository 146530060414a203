// Integration: the commit gap of a node on Redis (docs/scaling.md "The commit gap") holds a
// commit only while another recent sender may still submit: a lone client that waits for
// each `sent` is never held, and a second client's send is held while the first may send
// again. Checked through the node's own count of held commits, so the sends' source must
// reach the committer from the real send path.
#include <gtest/gtest.h>

#include "integration/redis_nodes.h"
#include "support/server_test.h"

namespace tern::test {
namespace {

constexpr const char* kWaits = "tern_store_commit_gap_waits_total";

TEST_F(RedisTest, TheCommitGapHoldsNoLoneSenderAndHoldsASecondWhileTheFirstMaySendAgain) {
  // The longest gap the option allows (100 ms): a send held by it is held for long, and one
  // right after another's `sent` comes well inside it.
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", {"--redis-commit-gap-us", "100000"}));
  Account alice = a_.api->must_register("alice");
  Account carol = a_.api->must_register("carol");
  a_.api->must_register("bob");
  a_.api->must_register("dave");
  // Their partners never connect: no ack or receipt joins the commits.
  const std::string to_bob = a_.api->must_direct(alice.token, "bob");
  const std::string to_dave = a_.api->must_direct(carol.token, "dave");
  Device da(alice), dc(carol);
  for (Device* d : {&da, &dc}) {
    ASSERT_EQ(d->connect(a_.server->port()), 101);
    ASSERT_TRUE(d->until_synced());
  }
  // Alice alone, each send after the `sent` of the one before: nothing is held.
  for (int i = 1; i <= 5; ++i) ASSERT_EQ(da.must_send(to_bob, "a" + std::to_string(i), "hi"), static_cast<Seq>(i));
  EXPECT_EQ(metric(a_, alice, kWaits), 0) << "a lone sender's commits were held for the gap";
  // Carol sends right after alice's `sent`: alice may send again, so carol's commit is held
  // (until the gap passes). Tried a few times, in case the machine stalled past the gap.
  for (int i = 1; i <= 5 && metric(a_, alice, kWaits) < 1; ++i) {
    ASSERT_GT(da.must_send(to_bob, "b" + std::to_string(i), "hi"), 0u);
    ASSERT_GT(dc.must_send(to_dave, "c" + std::to_string(i), "hi"), 0u);
  }
  EXPECT_GE(metric(a_, alice, kWaits), 1) << "a send was not held while another sender could still send";
}

}  // namespace
}  // namespace tern::test
