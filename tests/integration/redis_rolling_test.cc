// Integration: a rolling restart on Redis (issue 10). An operator upgrades the nodes one at a
// time with SIGTERM; the clients of the other nodes must not notice: a send that another node
// forwards to the stopping node is answered (`sent`), never refused with `draining` (that
// node's own clients are told that) and never left to wait out the request timeout.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "support/server_test.h"
#include "integration/redis_nodes.h"

namespace tern::test {
namespace {

TEST_F(RedisTest, ANodeStoppedWithSigtermLeavesNoForwardedSendWaiting) {
  // Bob's sends come one after another as fast as they are answered: no frame limit.
  Account alice, bob;
  std::string group;
  ASSERT_NO_FATAL_FAILURE(
      group_sequenced_on_a(alice, bob, group, {"--frame-rate", "100000", "--frame-burst", "100000"}));

  // Bob, on node b, sends one message after another: before node a is told to stop, while it
  // stops, and after it has gone (then node b sequences the group itself).
  Device db(bob);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  std::atomic<int> sent{0};
  std::atomic<bool> gone{false};
  std::map<std::string, Seq> acked;
  std::vector<std::string> refused;
  long long slowest_ms = 0;
  std::thread traffic([&] {
    int after_gone = 0;
    for (int i = 0; i < 20000 && after_gone < 50; ++i) {
      if (gone) ++after_gone;
      const std::string id = "r" + std::to_string(i);
      const auto t0 = std::chrono::steady_clock::now();
      auto a = db.send_wait(group, id, id, ms(10000));
      const auto took = std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0).count();
      if (!a) {
        refused.push_back(id + ": no answer within 10 s");
        break;
      }
      slowest_ms = std::max<long long>(slowest_ms, took);
      if (type_of(*a) == "sent") {
        acked[id] = seq_of(*a);
        ++sent;
      } else {
        refused.push_back(id + ": " + dump(*a) + " after " + std::to_string(took) + " ms");
      }
    }
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (sent < 50 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(ms(10));
  const double forwarded_before = metric(b_, bob, "tern_sends_forwarded_total");
  EXPECT_GE(forwarded_before, 50);
  EXPECT_EQ(a_.server->terminate(), 0) << a_.server->log_tail();
  const int sent_at_gone = sent;
  const double forwarded_at_gone = metric(b_, bob, "tern_sends_forwarded_total");
  gone = true;
  traffic.join();

  EXPECT_NE(a_.server->log_tail(20000).find("event=bus_leaving node=a other_nodes=1"), std::string::npos)
      << a_.server->log_tail();
  EXPECT_TRUE(refused.empty()) << refused.size() << " sends not acknowledged, the first: " << refused.front();
  // A forwarded send that waited out the request timeout (2 s) took at least that long.
  EXPECT_LT(slowest_ms, 1500) << "a send waited for the stopping node";
  EXPECT_GE(acked.size(), 100u);
  // After node a left, node b sequenced the group itself (at most the send in flight when
  // a's exit was seen went to a).
  EXPECT_GE(sent - sent_at_gone, 49);
  EXPECT_LE(metric(b_, bob, "tern_sends_forwarded_total") - forwarded_at_gone, 1);
  expect_log_matches(b_, bob, group, acked);
}

}  // namespace
}  // namespace tern::test
