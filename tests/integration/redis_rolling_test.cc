// Integration: a rolling restart on Redis (issue 10). An operator upgrades the nodes one at a
// time with SIGTERM; the clients of the other nodes must not notice: a send that another node
// forwards to the stopping node is answered (`sent`), never refused with `draining` (that
// node's own clients are told that) and never left to wait out the request timeout. Nor
// does the stopping node's users' presence flap: a user whose device reconnects elsewhere is
// never shown `offline`; one whose device does not come back is.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
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

// A user whose device the stopping node closes (1001) and who reconnects to another node is
// never shown `offline` to a subscriber on another node, even if the device is back only after
// the node has started again: the stopping node leaves the registry entries of its devices
// for the others to mend (RedisBus::leave), which they do node_gone_after (5 s) after its new
// run's roll call (RedisBus::new_run). A user whose device does not come back is shown
// `offline` then.
TEST_F(RedisTest, ARollingRestartShowsNoOfflineForAUserWhoReconnectsElsewhere) {
  Account alice, bob;
  Device db, da;
  ASSERT_NO_FATAL_FAILURE(bob_on_b_sees_alice_online_on_a(alice, bob, db, da));
  Account carol = a_.api->must_register("carol");
  a_.api->must_direct(carol.token, "bob");
  ASSERT_TRUE(db.presence_subscribe({"carol"}));
  std::vector<json::object> seen;  // every frame bob reads from here on
  ASSERT_TRUE(db.read_until(presence_of("carol", false), ms(5000), &seen)) << dump_frames(seen);
  Device dc(carol);
  ASSERT_EQ(dc.connect(a_.server->port()), 101);
  ASSERT_TRUE(dc.until_synced());
  ASSERT_TRUE(db.read_until(presence_of("carol", true), ms(5000), &seen)) << dump_frames(seen);

  auto stopped = std::async(std::launch::async, [&] { return a_.server->terminate(); });
  ASSERT_TRUE(da.wait_closed(ms(10000))) << "node a did not close alice's connection";
  EXPECT_EQ(da.close_code(), std::optional<uint16_t>(1001));
  // Alice's app reconnects, through the load balancer, to node b, late: after node a has
  // gone (every detach of its drain done: a reconnect that wins the race with them would hide
  // the flap this test is about) and has started again (its new run seen by b).
  ASSERT_EQ(stopped.get(), 0) << a_.server->log_tail();
  EXPECT_NE(a_.server->log_tail(100000).find("event=bus_leaving node=a other_nodes=1 keeps_entries=true"),
            std::string::npos)
      << a_.server->log_tail();
  ASSERT_TRUE(a_.server->restart()) << a_.server->error();
  ASSERT_TRUE(b_.server->await_log("event=bus_node_new_run node=a devices=2")) << b_.server->log_tail();
  Device again(alice);
  ASSERT_EQ(again.connect(b_.server->port()), 101);
  ASSERT_TRUE(again.until_synced());
  auto off = db.read_until(presence_of("carol", false), ms(15000), &seen);
  ASSERT_TRUE(off) << "carol, who did not come back, stayed online:\n" << dump_frames(seen);
  EXPECT_TRUE(b_.server->await_log("event=bus_node_run_mended node=a devices=2")) << b_.server->log_tail();
  // A message from alice after all that: every presence frame of the drain and the restart,
  // which came a second and more before it, is in `seen` when bob has it.
  const std::string conv = b_.api->must_direct(alice.token, "bob");
  auto sent = again.send_wait(conv, "after-restart", "hi");
  ASSERT_TRUE(sent && type_of(*sent) == "sent") << (sent ? dump(*sent) : "no answer");
  ASSERT_TRUE(db.read_until("message", ms(5000), &seen)) << dump_frames(seen);
  int alice_offline = 0, alice_online = 0;
  for (const auto& f : seen) {
    alice_offline += presence_of("alice", false)(f) ? 1 : 0;
    alice_online += presence_of("alice", true)(f) ? 1 : 0;
  }
  EXPECT_EQ(alice_offline, 0) << "alice was shown offline while she reconnected:\n" << dump_frames(seen);
  // Her device's entry from node a still counted when it reconnected to b (Bus::Counted's
  // `added`): she was online all along, and no second `online` says otherwise.
  EXPECT_EQ(alice_online, 0) << "alice was shown online again:\n" << dump_frames(seen);
}

}  // namespace
}  // namespace tern::test
