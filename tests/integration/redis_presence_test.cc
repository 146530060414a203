// Integration: presence across ternd nodes on one Redis (issue 10, "Typing and presence cross
// nodes too"): changes, a node that dies, membership, blocks and consent made through another
// node than the subscriber's.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>

#include "integration/redis_nodes.h"
#include "support/server_test.h"

namespace tern::test {
namespace {

// Subscribes `d` to `user` again and again (at most 20 times, 500 ms each) until the answer
// comes: a change made through another node reaches this one through the bus first.
bool subscribed_until_answered(Device& d, const std::string& user, bool online) {
  for (int i = 0; i < 20; ++i) {
    if (!d.presence_subscribe({user})) return false;
    if (d.read_until(presence_of(user, online), ms(500))) return true;
  }
  return false;
}

// Presence crosses nodes (issue 10): bob, subscribed on node b, sees alice come online and
// go offline on node a, with her last_seen.
TEST_F(RedisTest, PresenceChangesOnOneNodeReachSubscribersOnAnother) {
  Account alice, bob;
  Device db;
  ASSERT_NO_FATAL_FAILURE(bob_on_b_watching_alice(alice, bob, db));
  std::vector<json::object> seen;
  Device da(alice);
  ASSERT_EQ(da.connect(a_.server->port()), 101);
  ASSERT_TRUE(da.until_synced());
  seen.clear();
  ASSERT_TRUE(db.read_until(presence_of("alice", true), ms(5000), &seen)) << "online did not cross nodes:\n"
                                                                         << dump_frames(seen);
  da.close();
  seen.clear();
  auto off = db.read_until(presence_of("alice", false), ms(5000), &seen);
  ASSERT_TRUE(off) << "offline did not cross nodes:\n" << dump_frames(seen);
  EXPECT_GT(jint(*off, "last_seen"), 0) << dump(*off);
}

// A node that dies (SIGKILL) detaches nobody: the other nodes see it leave the bus, remove
// its devices' registry entries, and the user whose last device it held goes offline for its
// subscribers on the other nodes (docs/scaling.md "Presence of a node that died"): within
// the 5 s a node must stay absent, not the registry's 30 s, and not never.
TEST_F(RedisTest, TheUsersOfAKilledNodeGoOfflineForSubscribersOnAnother) {
  Account alice, bob;
  Device db, da;
  ASSERT_NO_FATAL_FAILURE(bob_on_b_sees_alice_online_on_a(alice, bob, db, da));
  a_.server->kill();
  std::vector<json::object> seen;
  auto off = db.read_until(presence_of("alice", false), ms(15000), &seen);
  ASSERT_TRUE(off) << "alice stayed online after her node died:\n" << dump_frames(seen);
  EXPECT_GT(jint(*off, "last_seen"), 0) << dump(*off);
  EXPECT_GE(metric(b_, bob, "tern_bus_nodes_gone_total"), 1);
}

// A node that dies and is started again with the same id at once (deploy/ternd.service
// restarts it after 2 s) is back on the bus before it has been absent for node_gone_after, so
// the other nodes never count it gone. Its new run makes a roll call that says when it started:
// the registry entries its last run wrote for devices that did not come back are removed, and
// their users go offline for subscribers on the other nodes, not never (no node would have
// reported them: their entries only expire).
TEST_F(RedisTest, TheUsersOfANodeRestartedAtOnceGoOfflineForSubscribersOnAnother) {
  Account alice, bob;
  Device db, da;
  ASSERT_NO_FATAL_FAILURE(bob_on_b_sees_alice_online_on_a(alice, bob, db, da));
  a_.server->kill();
  ASSERT_TRUE(a_.server->restart()) << a_.server->error();
  std::vector<json::object> seen;
  auto off = db.read_until(presence_of("alice", false), ms(15000), &seen);
  ASSERT_TRUE(off) << "alice stayed online after her node restarted without her:\n" << dump_frames(seen);
  EXPECT_GT(jint(*off, "last_seen"), 0) << dump(*off);
  EXPECT_EQ(metric(b_, bob, "tern_bus_nodes_gone_total"), 0)
      << "node a was away longer than node_gone_after: the restart was not what removed the entry";
}

// A single node on Redis that dies and is started again at once: no node saw its last run
// end, so none holds that run's devices to mend. Its new run finds the entries the last run
// wrote (alice's, dave's) when a subscription reads them (RedisBus::online) and removes them
// once their devices had node_gone_after to reconnect: bob sees alice offline, with a
// last_seen, not online until her entry expires (30 s) and then never told. Dave's entry,
// read only once over, is removed by the read: bob is told dave is offline once, not twice
// (the mend's change and the subscription's answer).
TEST_F(RedisTest, TheUsersOfASingleNodeRestartedWithoutThemGoOfflineForASubscriber) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  Account alice = a_.api->must_register("alice");
  Account bob = a_.api->must_register("bob");
  Account dave = a_.api->must_register("dave");
  Account erin = a_.api->must_register("erin");
  for (const Account* who : {&alice, &dave, &erin}) a_.api->must_direct(who->token, "bob");
  Device da(alice), dd(dave);
  for (Device* d : {&da, &dd}) {
    ASSERT_EQ(d->connect(a_.server->port()), 101);
    ASSERT_TRUE(d->until_synced());
  }
  for (const char* who : {"alice", "dave"}) ASSERT_TRUE(registry_entry_written(redis_, who, 1, ms(5000))) << who;
  a_.server->kill();
  ASSERT_TRUE(a_.server->restart()) << a_.server->error();
  Device db(bob);
  ASSERT_EQ(db.connect(a_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  ASSERT_TRUE(db.presence_subscribe({"alice"}));
  std::vector<json::object> seen;
  auto off = db.read_until(presence_of("alice", false), ms(15000), &seen);
  ASSERT_TRUE(off) << "alice stayed online after her node restarted without her:\n" << dump_frames(seen);
  EXPECT_GT(jint(*off, "last_seen"), 0) << dump(*off);

  // Over by now (alice's was: the same run's). Erin's answer comes after every frame of
  // dave's subscription (one loader thread, in order).
  seen.clear();
  ASSERT_TRUE(db.presence_subscribe({"dave"}));
  ASSERT_TRUE(db.read_until(presence_of("dave", false), ms(5000), &seen)) << dump_frames(seen);
  seen.clear();
  ASSERT_TRUE(db.presence_subscribe({"erin"}));
  ASSERT_TRUE(db.read_until(presence_of("erin", false), ms(5000), &seen)) << dump_frames(seen);
  const auto of_dave = [](const json::object& f) { return type_of(f) == "presence" && jstr(f, "user") == "dave"; };
  EXPECT_EQ(std::count_if(seen.begin(), seen.end(), of_dave), 0) << "dave told offline twice:\n" << dump_frames(seen);
  EXPECT_GE(metric(a_, bob, "tern_bus_stale_entries_mended_total"), 2);
}

// Presence follows membership changes made on another node: a direct conversation created
// through node a (which sequences it here: --redis-route-sends 0) lets carol, subscribed on
// node b, see alice, whom b had refused her a moment before (they shared nothing).
TEST_F(RedisTest, AConversationCreatedOnOneNodeMakesPresenceVisibleOnAnother) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", {"--redis-route-sends", "0"}));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", {"--redis-route-sends", "0"}));
  Account alice = a_.api->must_register("alice");
  Account carol = a_.api->must_register("carol");
  Account mark = b_.api->must_register("mark");
  b_.api->must_direct(mark.token, "carol");  // sequenced on b: mark's presence is carol's to see
  ASSERT_NO_FATAL_FAILURE(await_both_live(alice, carol));
  Device dc(carol);
  ASSERT_EQ(dc.connect(b_.server->port()), 101);
  ASSERT_TRUE(dc.until_synced());
  ASSERT_TRUE(dc.presence_subscribe({"alice", "mark"}));
  std::vector<json::object> seen;
  ASSERT_TRUE(dc.read_until(presence_of("mark", false), ms(5000), &seen));
  for (const auto& f : seen) EXPECT_NE(jstr(f, "user"), "alice") << "carol shares nothing with alice yet";

  a_.api->must_direct(alice.token, "carol");
  // Node b learns of it through the bus (a pub/sub hop and a snapshot read); a subscription
  // is answered once it has.
  EXPECT_TRUE(subscribed_until_answered(dc, "alice", false)) << "node b never let carol see alice";
}

// A block made through node a ends, on node b, the blocked user's presence subscription to
// the blocker: b drops its copy of alice's policy and checks bob's subscriptions again. Each
// round connects alice, then mark, to node a; both changes go from a to b in that order (one
// publisher), so bob seeing mark online means alice's change reached b before it.
TEST_F(RedisTest, ABlockMadeThroughOneNodeEndsThePresenceSubscriptionOnAnother) {
  Account alice, bob;
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(two_nodes_with_a_direct(alice, bob, conv));
  Account mark = a_.api->must_register("mark");
  a_.api->must_direct(mark.token, "bob");  // mark's presence is bob's to see
  ASSERT_NO_FATAL_FAILURE(await_both_live(alice, bob));
  Device db(bob);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  ASSERT_TRUE(db.presence_subscribe({"alice", "mark"}));
  ASSERT_TRUE(db.read_until(presence_of("mark", false), ms(5000)));
  // Whether bob heard alice come online in one round.
  auto alice_seen_online = [&]() -> std::optional<bool> {
    Device da(alice), dm(mark);
    if (da.connect(a_.server->port()) != 101 || !da.until_synced()) return std::nullopt;
    if (dm.connect(a_.server->port()) != 101 || !dm.until_synced()) return std::nullopt;
    std::vector<json::object> seen;
    if (!db.read_until(presence_of("mark", true), ms(5000), &seen)) return std::nullopt;
    const bool heard = std::any_of(seen.begin(), seen.end(), presence_of("alice", true));
    da.close();
    dm.close();
    if (!db.read_until(presence_of("mark", false), ms(5000))) return std::nullopt;
    return heard;
  };
  auto first = alice_seen_online();
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(*first) << "before the block bob sees alice";

  ASSERT_EQ(http_request(a_.server->port(), "PUT", "/v1/blocks/bob", std::nullopt, alice.token).status, 204);
  // Node b checks again once the change reached it (a pub/sub hop and a policy read).
  bool ended = false;
  for (int i = 0; i < 20 && !ended; ++i) {
    auto heard = alice_seen_online();
    ASSERT_TRUE(heard.has_value()) << "round " << i;
    ended = !*heard;
  }
  ASSERT_TRUE(ended) << "node b kept telling bob of alice's presence after she blocked him";
  auto again = alice_seen_online();
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(*again) << "the subscription stays ended";
}

// Consent given through one node reaches the others (presence under `contacts`, the
// default): bob created the direct conversation through node b, so alice has not accepted
// him yet and b refuses him her presence, keeping her policy cached. Her first message, which
// node a sequences (--redis-route-sends 0), accepts him; a announces it and b drops its copy,
// so bob's next subscription through b is answered (before, only once b's LRU evicted it).
TEST_F(RedisTest, ConsentGivenThroughOneNodeShowsPresenceOnAnother) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", {"--redis-route-sends", "0"}));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", {"--redis-route-sends", "0"}));
  Account alice = a_.api->must_register("alice");
  Account bob = a_.api->must_register("bob");
  Account mark = b_.api->must_register("mark");
  const std::string conv = b_.api->must_direct(bob.token, "alice");
  b_.api->must_direct(mark.token, "bob");  // mark's presence is bob's to see
  ASSERT_NO_FATAL_FAILURE(await_both_live(alice, bob));
  Device da(alice);
  ASSERT_EQ(da.connect(a_.server->port()), 101);
  ASSERT_TRUE(da.until_synced());
  Device db(bob);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  ASSERT_TRUE(db.presence_subscribe({"alice", "mark"}));
  std::vector<json::object> seen;
  ASSERT_TRUE(db.read_until(presence_of("mark", false), ms(5000), &seen)) << dump_frames(seen);
  for (const auto& f : seen) EXPECT_NE(jstr(f, "user"), "alice") << "alice has not accepted bob yet";

  ASSERT_NE(send_retrying(da, conv, "hello bob"), 0u);
  // Node b learns of it through the bus (a pub/sub hop, then a policy read).
  EXPECT_TRUE(subscribed_until_answered(db, "alice", true)) << "node b never let bob see alice after she accepted him";
}

}  // namespace
}  // namespace tern::test
