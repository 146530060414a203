// Integration: ternd --store redis (issue 10) against a real redis-server started by the test
// (AOF, appendfsync always): the key guarantees on one node, several nodes on one Redis, and
// Redis going away under traffic.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "base/clock.h"
#include "store/redis/testing/redis_server.h"
#include "support/admin_tool.h"
#include "support/key_install.h"
#include "support/server_test.h"
#include "integration/redis_nodes.h"

namespace tern::test {
namespace {

// One node: everything lives in Redis, so a SIGKILLed ternd finds it all there when it
// restarts; a resent client_msg_id gets its original seq.
TEST_F(RedisTest, OneNodeKeepsEverythingInRedisAcrossATerndSigkill) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  Pair p;
  ASSERT_NO_FATAL_FAILURE(connected_pair(a_, p));
  const Account &alice = p.alice, &bob = p.bob;
  const std::string& conv = p.conv;
  Device &da = *p.da, &db = *p.db;
  for (int i = 1; i <= 20; ++i) EXPECT_EQ(da.must_send(conv, "m" + std::to_string(i), "hello"), Seq(i));
  std::vector<json::object> live;
  for (int i = 0; i < 20; ++i) {
    auto f = db.read_until("message");
    ASSERT_TRUE(f);
    live.push_back(*f);
  }
  EXPECT_TRUE(dense_range(message_seqs(live, conv), 1, 20));

  a_.server->kill();
  ASSERT_TRUE(a_.server->restart()) << a_.server->error();
  a_.api->set_port(a_.server->port());
  auto log = a_.api->backfill_all(bob.token, conv);
  EXPECT_TRUE(dense_range(message_seqs(log, conv), 1, 20));
  Device again(alice);
  ASSERT_EQ(again.connect(a_.server->port()), 101);
  ASSERT_TRUE(again.until_synced());
  auto a = again.send_wait(conv, "m7", "hello");
  ASSERT_TRUE(a);
  EXPECT_EQ(type_of(*a), "sent") << dump(*a);
  EXPECT_EQ(seq_of(*a), 7u);
  EXPECT_EQ(again.must_send(conv, "m21", "next"), 21u);
}

// Two nodes on one Redis: accounts and conversations made on one are known on the other, a
// direct conversation has the same id from both sides, and concurrent sends from both nodes
// into one conversation get dense seqs, each message exactly once, and no client has to
// resend (a node whose head is behind sequences those sends again itself).
TEST_F(RedisTest, TwoNodesShareAccountsAndKeepSeqsDenseUnderConcurrentSends) {
  g_resends = 0;
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b"));
  Account alice = a_.api->must_register("alice");
  Account bob = b_.api->must_register("bob");
  const std::string conv = a_.api->must_direct(alice.token, "bob");
  EXPECT_EQ(b_.api->must_direct(bob.token, "alice"), conv);
  const std::string group = b_.api->must_group(bob.token, "g", {"alice"});
  ASSERT_FALSE(group.empty());

  constexpr int kEach = 60;
  const std::map<std::string, Seq> seqs = send_from_both(alice, bob, group, kEach);
  ASSERT_EQ(seqs.size(), 2u * kEach);
  EXPECT_EQ(g_resends.load(), 0) << "clients had to resend after `unavailable`";
  std::set<Seq> distinct;
  for (auto& [id, s] : seqs) {
    EXPECT_NE(s, 0u) << id << " never got `sent`";
    distinct.insert(s);
  }
  EXPECT_EQ(distinct.size(), 2u * kEach) << "two messages share a seq";
  // The log, read through either node: dense, each client_msg_id once, at its acknowledged seq.
  for (Node* n : {&a_, &b_}) expect_log_matches(*n, alice, group, seqs);
}

// A node's cached head follows what other nodes commit (the bus's head hint): alice on node
// a and bob on node b take turns in their direct conversation, each answering only after it
// received the other's message, so no send is ever behind. Without the hint every turn would
// find its node's head one behind and be sequenced twice.
TEST_F(RedisTest, TakingTurnsAcrossTwoNodesNeverFindsAHeadBehind) {
  // Routing off: both nodes sequence the conversation, and only the hints keep them current.
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", {"--redis-route-sends", "0"}));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", {"--redis-route-sends", "0"}));
  Account alice = a_.api->must_register("alice");
  Account bob = b_.api->must_register("bob");
  const std::string conv = a_.api->must_direct(alice.token, "bob");
  Device da(alice), db(bob);
  ASSERT_EQ(da.connect(a_.server->port()), 101);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(da.until_synced());
  ASSERT_TRUE(db.until_synced());
  constexpr int kTurns = 30;
  Seq expected = 1;  // the conversation's first message
  for (int i = 0; i < kTurns; ++i) {
    for (auto [from, to] : {std::pair{&da, &db}, std::pair{&db, &da}}) {
      const std::string id = (from == &da ? "a" : "b") + std::to_string(i);
      ASSERT_EQ(from->must_send(conv, id, id), expected) << id;
      auto got = to->read_until("message");
      ASSERT_TRUE(got) << id << " not delivered";
      ASSERT_EQ(seq_of(*got), expected);
      ++expected;
    }
  }
  for (auto [n, who] : {std::pair{&a_, &alice}, std::pair{&b_, &bob}}) {
    EXPECT_EQ(metric(*n, *who, "tern_store_commits_behind_total"), 0) << n->server->port();
    EXPECT_EQ(metric(*n, *who, "tern_sends_resequenced_total"), 0) << n->server->port();
    // Each node heard of the other's kTurns messages (the first of b's may find nothing cached).
    EXPECT_GE(metric(*n, *who, "tern_head_hints_applied_total"), kTurns - 1) << n->server->port();
  }
}

// Routing (on by default): the members of a group sit on two nodes and send at once, yet
// one node sequences the group, so no commit is ever behind: the other node hands its sends
// over (forwarded on one side, served on the other) and every answer is `sent` at once.
TEST_F(RedisTest, ConcurrentSendsFromTwoNodesAreSequencedByOneWithoutConflicts) {
  g_resends = 0;
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b"));
  Account alice = a_.api->must_register("alice");
  Account bob = b_.api->must_register("bob");
  const std::string group = a_.api->must_group(alice.token, "g", {"bob"});
  ASSERT_FALSE(group.empty());
  // Both nodes see both on the bus, so they agree on the group's owner from the first send.
  ASSERT_NO_FATAL_FAILURE(await_both_live(alice, bob));
  constexpr int kEach = 50;
  const std::map<std::string, Seq> seqs = send_from_both(alice, bob, group, kEach);
  EXPECT_EQ(g_resends.load(), 0) << "clients had to resend after `unavailable`";
  ASSERT_EQ(seqs.size(), 2u * kEach);
  for (Node* n : {&a_, &b_}) expect_log_matches(*n, alice, group, seqs);
  double forwarded = 0, served = 0;
  for (auto [n, who] : {std::pair{&a_, &alice}, std::pair{&b_, &bob}}) {
    EXPECT_EQ(metric(*n, *who, "tern_store_commits_behind_total"), 0) << n->server->port();
    forwarded += metric(*n, *who, "tern_sends_forwarded_total");
    served += metric(*n, *who, "tern_sends_served_total");
  }
  // One of the two nodes owns the group: the other's kEach sends went there.
  EXPECT_EQ(forwarded, kEach);
  EXPECT_EQ(forwarded, served);
}

// One device sends each client_msg_id through two nodes (the commit script, not a read before
// it, refuses the second, docs/scaling.md): first one after the other, then both at once. Each
// id is answered with one seq on both nodes, stored once, and the log stays dense.
TEST_F(RedisTest, AClientMsgIdSentThroughTwoNodesIsStoredOnceAtItsFirstSeq) {
  Account alice, bob;
  std::string conv;
  // Routing off, so that both nodes sequence the conversation: the commit script's check is
  // what refuses the second (with routing on, the owner node serializes them anyway). Device
  // routes off too: the device keeps a connection on each node at once (with them on, the
  // older one is closed as replaced, and only a resend after a reconnect could race).
  ASSERT_NO_FATAL_FAILURE(two_nodes_with_a_direct(alice, bob, conv,
                                                  {"--redis-route-sends", "0", "--redis-route-devices", "0"}));
  Device on_a(alice), on_b(alice);
  ASSERT_EQ(on_a.connect(a_.server->port()), 101);
  ASSERT_TRUE(on_a.until_synced());
  ASSERT_EQ(on_b.connect(b_.server->port()), 101);
  ASSERT_TRUE(on_b.until_synced());

  std::map<std::string, Seq> seqs;
  const Seq first = send_retrying(on_a, conv, "one");
  ASSERT_NE(first, 0u);
  EXPECT_EQ(send_retrying(on_b, conv, "one"), first);  // the other node answers the first seq
  seqs["one"] = first;

  constexpr int kIds = 20;
  std::map<std::string, Seq> got_a, got_b;
  auto sender = [&](Device& d, std::map<std::string, Seq>& got) {
    for (int i = 0; i < kIds; ++i) got["both" + std::to_string(i)] = send_retrying(d, conv, "both" + std::to_string(i));
  };
  std::thread ta(sender, std::ref(on_a), std::ref(got_a));
  std::thread tb(sender, std::ref(on_b), std::ref(got_b));
  ta.join();
  tb.join();
  ASSERT_EQ(got_a.size(), static_cast<size_t>(kIds));
  EXPECT_EQ(got_a, got_b) << "a client_msg_id got two seqs";
  for (const auto& [id, s] : got_a) {
    EXPECT_NE(s, 0u) << id;
    seqs[id] = s;
  }
  // Each id once, at its acknowledged seq, and nothing else but the creation's system message.
  for (Node* n : {&a_, &b_}) expect_log_matches(*n, bob, conv, seqs);
}

// Three nodes, two groups, and every group written from all three nodes at once (one device
// per node, each sending into both groups in turn): no client resends, both logs dense, every
// message once at its acknowledged seq, each device's messages in the order it sent them.
TEST_F(RedisTest, ThreeNodesWriteTwoConversationsAtOnceWithoutResends) {
  g_resends = 0;
  Node* nodes[] = {&a_, &b_, &c_};
  const char* names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(start_node(*nodes[i], redis_, names[i]));
  Account users[] = {a_.api->must_register("alice"), b_.api->must_register("bob"), c_.api->must_register("carol")};
  const std::string g1 = a_.api->must_group(users[0].token, "g1", {"bob", "carol"});
  const std::string g2 = c_.api->must_group(users[2].token, "g2", {"alice", "bob"});
  ASSERT_FALSE(g1.empty());
  ASSERT_FALSE(g2.empty());
  constexpr int kEach = 40;  // per device and group
  std::map<std::string, Seq> seqs[2];
  std::mutex mu;
  auto sender = [&](int n) {
    Device d(users[n]);
    if (d.connect(nodes[n]->server->port()) != 101 || !d.until_synced()) {
      ADD_FAILURE() << names[n] << ": could not connect";
      return;
    }
    for (int i = 0; i < kEach; ++i) {
      for (int g = 0; g < 2; ++g) {
        const std::string id = std::string(names[n]) + std::to_string(g) + "-" + std::to_string(i);
        const Seq s = send_retrying(d, g == 0 ? g1 : g2, id);
        std::lock_guard lk(mu);
        seqs[g][id] = s;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int n = 0; n < 3; ++n) threads.emplace_back(sender, n);
  for (auto& t : threads) t.join();
  EXPECT_EQ(g_resends.load(), 0) << "clients had to resend after `unavailable`";
  for (int g = 0; g < 2; ++g) {
    ASSERT_EQ(seqs[g].size(), 3u * kEach);
    for (int n = 0; n < 3; ++n) {
      Seq last = 0;
      for (int i = 0; i < kEach; ++i) {
        const Seq s = seqs[g].at(std::string(names[n]) + std::to_string(g) + "-" + std::to_string(i));
        EXPECT_GT(s, last) << names[n] << " message " << i << " of group " << g << " never got `sent` or out of order";
        last = s;
      }
    }
    for (Node* n : nodes) expect_log_matches(*n, users[0], g == 0 ? g1 : g2, seqs[g]);
  }
}

// Members on different nodes: messages, typing and receipts cross nodes live over the Redis
// bus, in a direct conversation (fan-out on write) and a group that fans out on read
// (--fanout-read-threshold 2: the read-side path, LiveFanout on the other node).
TEST_F(RedisTest, MessagesTypingAndReadSidePostsCrossNodesLive) {
  auto args = [&](const std::string& node) {
    auto v = redis_args(redis_, node);
    v.insert(v.end(), {"--fanout-read-threshold", "2"});
    return v;
  };
  a_.server = std::make_unique<TestServer>(args("a"));
  ASSERT_TRUE(a_.server->start()) << a_.server->error();
  a_.api = std::make_unique<Api>(a_.server->port());
  b_.server = std::make_unique<TestServer>(args("b"));
  ASSERT_TRUE(b_.server->start()) << b_.server->error();
  b_.api = std::make_unique<Api>(b_.server->port());
  Account alice = a_.api->must_register("alice");
  Account bob = a_.api->must_register("bob");
  const std::string direct = a_.api->must_direct(alice.token, "bob");
  const std::string group = a_.api->must_group(alice.token, "g", {"bob"});
  Device da(alice), db(bob);
  ASSERT_EQ(da.connect(a_.server->port()), 101);
  ASSERT_TRUE(da.until_synced());
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  // Device routes: each node learns that the other holds its user's device (kAttached).
  const auto known = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((metric(a_, alice, "tern_bus_routes") < 1 || metric(b_, bob, "tern_bus_routes") < 1) &&
         std::chrono::steady_clock::now() < known)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(metric(a_, alice, "tern_bus_routes"), 1) << "node a knows bob's device on b";
  ASSERT_EQ(metric(b_, bob, "tern_bus_routes"), 1) << "node b knows alice's device on a";
  const double broadcast_before =
      metric(a_, alice, "tern_bus_broadcast_total") + metric(b_, bob, "tern_bus_broadcast_total");

  for (const std::string& conv : {direct, group}) {
    SCOPED_TRACE(conv);
    const Seq s = da.must_send(conv, "live-" + conv, "across");
    auto m = db.read_until([&](const json::object& o) {
      return type_of(o) == "message" && jstr(o, "conversation_id") == conv && seq_of(o) == s;
    }, ms(5000));
    ASSERT_TRUE(m) << "not delivered live across nodes";
    EXPECT_EQ(unb64(jstr(*m, "body")), "across");
    // And back: bob (node b) to alice (node a).
    const Seq back = db.must_send(conv, "back-" + conv, "back");
    auto m2 = da.read_until([&](const json::object& o) {
      return type_of(o) == "message" && jstr(o, "conversation_id") == conv && seq_of(o) == back;
    }, ms(5000));
    ASSERT_TRUE(m2) << "not delivered live back across nodes";
  }
  ASSERT_TRUE(db.typing(direct, true));
  auto t = da.read_until([&](const json::object& o) { return type_of(o) == "typing"; }, ms(5000));
  ASSERT_TRUE(t) << "typing did not cross nodes";
  EXPECT_EQ(jstr(*t, "conversation_id"), direct);
  // Every delivery to the other node's device went on that node's channel, none to every node.
  EXPECT_GE(metric(a_, alice, "tern_bus_routed_total") + metric(b_, bob, "tern_bus_routed_total"), 1);
  EXPECT_EQ(metric(a_, alice, "tern_bus_broadcast_total") + metric(b_, bob, "tern_bus_broadcast_total"),
            broadcast_before);
}

// A device that re-installs through node a (new keys, a new registration id) is addressed
// with its new registration id through node b, which had cached the old one: b drops it when
// a announces the new keys (else its send check called every send for the new keys stale).
// Every node sequences its own sends here (--redis-route-sends 0).
TEST_F(RedisTest, NewKeysUploadedThroughOneNodeAreCheckedOnTheOthers) {
  Account alice, bob;
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(two_nodes_with_a_direct(alice, bob, conv, {"--redis-route-sends", "0"}));
  ASSERT_NO_FATAL_FAILURE(await_both_live(alice, bob));
  Install old_install;
  ASSERT_EQ(put_keys(a_.server->port(), bob, old_install.upload(1, 1, 3)).status, 200);
  Device sender(alice);
  ASSERT_EQ(sender.connect(b_.server->port()), 101);
  ASSERT_TRUE(sender.until_synced());
  auto send = [&](const std::string& cmid, uint32_t registration_id) {
    json::object f{{"type", "send"}, {"client_msg_id", cmid}, {"conversation_id", conv},
                   {"bodies", json::object{{"bob:1", b64("c")}}},
                   {"registration_ids", json::object{{"bob:1", registration_id}}}};
    EXPECT_TRUE(sender.send_json(f));
    auto answer = sender.wait_answer(cmid);
    return answer ? *answer : json::object{};
  };
  auto first = send("m1", old_install.registration_id);
  ASSERT_EQ(type_of(first), "sent") << dump(first);  // node b now holds the old id

  Install fresh;
  while (fresh.registration_id == old_install.registration_id) fresh.registration_id = 1 + crypto::random_u32() % 16380;
  ASSERT_EQ(put_keys(a_.server->port(), bob, fresh.upload(1, 1, 3)).status, 200);
  // Through node b, once the announcement reached it (a pub/sub hop): the new id is accepted.
  // Each try is a new message; an answer `stale` means b still held the old id.
  bool sent = false;
  for (int i = 0; i < 50 && !sent; ++i) {
    auto a = send("m-fresh-" + std::to_string(i), fresh.registration_id);
    sent = type_of(a) == "sent";
    if (!sent) {
      ASSERT_EQ(jstr(a, "code"), "device_mismatch") << dump(a);
      std::this_thread::sleep_for(ms(20));
    }
  }
  EXPECT_TRUE(sent) << "node b kept calling bob's new keys stale";
  auto old = send("m-old", old_install.registration_id);
  EXPECT_EQ(jstr(old, "code"), "device_mismatch") << dump(old);
}

// A block made through one node holds on the others (issue 12's blocks, issue 10's nodes):
// each node caches block lists and presence settings, so a change is announced to the other
// nodes, which drop theirs. Every node sequences its own sends here (--redis-route-sends 0),
// so bob's sends go through node b, which had alice's list (empty) cached before she blocked
// him through node a.
TEST_F(RedisTest, ABlockMadeThroughOneNodeHoldsOnTheOthers) {
  Account alice, bob;
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(two_nodes_with_a_direct(alice, bob, conv, {"--redis-route-sends", "0"}));
  ASSERT_NO_FATAL_FAILURE(await_both_live(alice, bob));
  Device da(alice), db(bob);
  ASSERT_EQ(da.connect(a_.server->port()), 101);
  ASSERT_TRUE(da.until_synced());
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  ASSERT_EQ(db.must_send(conv, "b-1", "hello"), 1u);
  ASSERT_EQ(da.collect_messages(conv, 1).size(), 1u);

  ASSERT_EQ(http_request(a_.server->port(), "PUT", "/v1/blocks/bob", std::nullopt, alice.token).status, 204);
  // Node b learns of it through the bus (a pub/sub hop): bob's next send there is withheld
  // from alice. Bounded: until a send is withheld, each one a new message.
  Seq withheld = 0;
  for (int i = 0; i < 50 && withheld == 0; ++i) {
    const Seq s = db.must_send(conv, "b-after-" + std::to_string(i), "are you there");
    ASSERT_GT(s, 0u);
    auto log = a_.api->backfill_all(alice.token, conv);
    ASSERT_FALSE(log.empty());
    if (seq_of(log.back()) == s && jbool(log.back(), "withheld")) withheld = s;
    else std::this_thread::sleep_for(ms(20));
  }
  ASSERT_GT(withheld, 0u) << "node b kept sequencing bob's sends to alice unblocked";
  // Alice got nothing live from bob after the block took hold on node b.
  for (const auto& f : da.drain(ms(300)))
    EXPECT_FALSE(type_of(f) == "message" && seq_of(f) >= withheld) << "alice got " << dump(f);
}

// A message to a device that no node holds goes to no node (docs/scaling.md "Events for
// devices connected nowhere"): node a, whose view of the nodes is complete, sends bob's
// deliveries nowhere, none to every node; bob, connecting to node b later, gets them by replay.
TEST_F(RedisTest, AMessageToADeviceConnectedNowhereGoesToNoNodeAndIsReplayedOnConnect) {
  a_.server = std::make_unique<TestServer>(redis_args(redis_, "a"));
  ASSERT_TRUE(a_.server->start()) << a_.server->error();
  a_.api = std::make_unique<Api>(a_.server->port());
  b_.server = std::make_unique<TestServer>(redis_args(redis_, "b"));
  ASSERT_TRUE(b_.server->start()) << b_.server->error();
  b_.api = std::make_unique<Api>(b_.server->port());
  Account alice = a_.api->must_register("alice");
  Account bob = a_.api->must_register("bob");
  const std::string direct = a_.api->must_direct(alice.token, "bob");
  Device da(alice);
  ASSERT_EQ(da.connect(a_.server->port()), 101);
  ASSERT_TRUE(da.until_synced());
  // Either node may sequence the conversation (its owner): both count.
  auto both = [&](std::string_view name) { return metric(a_, alice, name) + metric(b_, alice, name); };
  const auto known = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (both("tern_bus_routes_complete") != 2 && std::chrono::steady_clock::now() < known)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(both("tern_bus_routes_complete"), 2) << "each node knows every device the other holds";
  const double broadcast_before = both("tern_bus_broadcast_total");
  const double nowhere_before = both("tern_bus_nowhere_total");
  std::vector<Seq> sent;
  for (int i = 0; i < 3; ++i) sent.push_back(da.must_send(direct, "offline-" + std::to_string(i), "while away"));
  // The deliveries are published after the commit, not necessarily before `sent` reached alice.
  const auto published = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (both("tern_bus_nowhere_total") - nowhere_before < 3 && std::chrono::steady_clock::now() < published)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(both("tern_bus_nowhere_total") - nowhere_before, 3);
  EXPECT_EQ(both("tern_bus_broadcast_total"), broadcast_before) << "none went to every node";
  Device db(bob);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  for (Seq s : sent) {
    auto m = db.read_until([&](const json::object& o) {
      return type_of(o) == "message" && jstr(o, "conversation_id") == direct && seq_of(o) == s;
    }, ms(5000));
    ASSERT_TRUE(m) << "seq " << s << " not replayed";
    EXPECT_EQ(unb64(jstr(*m, "body")), "while away");
  }
}

// One connection per device, across nodes (docs/protocol.md "One connection per device"):
// bob's phone reconnects to node b while its old connection on node a is still open (a
// half-open TCP connection that a has not timed out yet). Node a learns of the newer
// connection from b's announcement and closes the old one with 1008 "replaced"; what alice
// sends through a from then on reaches bob on b live.
TEST_F(RedisTest, ADeviceThatReconnectsToAnotherNodeReplacesItsOldConnection) {
  Account alice, bob;
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(two_nodes_with_a_direct(alice, bob, conv));
  Device da(alice), old_one(bob), new_one(bob);
  ASSERT_EQ(da.connect(a_.server->port()), 101);
  ASSERT_TRUE(da.until_synced());
  ASSERT_EQ(old_one.connect(a_.server->port()), 101);
  ASSERT_TRUE(old_one.until_synced());
  const Seq first = da.must_send(conv, "before", "before");
  ASSERT_TRUE(old_one.read_until([&](const json::object& o) { return type_of(o) == "message" && seq_of(o) == first; }));

  ASSERT_EQ(new_one.connect(b_.server->port()), 101);
  auto replay = new_one.read_until([&](const json::object& o) { return type_of(o) == "synced"; });
  ASSERT_TRUE(replay) << "the new connection replays from the last ack";
  ASSERT_TRUE(old_one.wait_closed(ms(5000))) << "node a closes the older connection";
  EXPECT_EQ(old_one.close_code().value_or(0), 1008);
  EXPECT_EQ(metric(a_, alice, "tern_bus_moved_total"), 1);

  const Seq second = da.must_send(conv, "after", "after");
  auto m = new_one.read_until([&](const json::object& o) {
    return type_of(o) == "message" && jstr(o, "conversation_id") == conv && seq_of(o) == second;
  }, ms(5000));
  ASSERT_TRUE(m) << "delivered live to the newer connection on the other node";
  EXPECT_EQ(unb64(jstr(*m, "body")), "after");
  EXPECT_TRUE(new_one.is_open()) << "the newer connection stays open";
  EXPECT_EQ(metric(b_, bob, "tern_bus_moved_total"), 0);
}

// A member added on node a is a recipient of the next send made through node b, whose
// snapshot of the group was cached before the change (the bus tells b to drop it). Node b
// keeps one conversation's sequencing state (--conversation-cache 1) and sends into another
// conversation in between, so its head of the group is reloaded from Redis (no append
// conflict, which would also drop the snapshot): only the bus can tell it.
TEST_F(RedisTest, AMembershipChangeOnOneNodeReachesTheOthersCache) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", {"--conversation-cache", "1", "--threads", "1"}));
  Account alice = a_.api->must_register("alice");
  Account bob = a_.api->must_register("bob");
  Account carol = a_.api->must_register("carol");
  const std::string group = a_.api->must_group(alice.token, "g", {"bob"});
  Device db(bob);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  const Seq first = db.must_send(group, "before", "before");  // node b caches the group now
  ASSERT_GT(first, 0u);
  const std::string other = a_.api->must_direct(bob.token, "alice");
  ASSERT_GT(db.must_send(other, "evict", "evict"), 0u);  // evicts the group's sequencing state on b
  // a's head of the group is behind (bob's send through b): the first try gets `unavailable`.
  auto added = a_.api->add_members(alice.token, group, {"carol"});
  for (int i = 0; i < 20 && added.status == 503; ++i) added = a_.api->add_members(alice.token, group, {"carol"});
  ASSERT_EQ(added.status, 200) << added.body;
  Device dc(carol);
  ASSERT_EQ(dc.connect(a_.server->port()), 101);
  auto replay = dc.until_synced();
  ASSERT_TRUE(replay);
  // The change reaches b over the bus (asynchronously): within a few sends carol, on node a,
  // gets b's sends live.
  Seq after = 0;
  std::vector<json::object> seen;
  for (int i = 0; i < 20 && after == 0; ++i) {
    // b's head of the group is behind (the add took a seq): its first try gets `unavailable`.
    const Seq s = send_retrying(db, group, "after" + std::to_string(i));
    ASSERT_GT(s, 0u);
    auto m = dc.read_until([&](const json::object& o) { return type_of(o) == "message" && seq_of(o) == s; }, ms(500),
                           &seen);
    if (m) after = s;
  }
  EXPECT_GT(after, first) << "carol never got a message sent through node b after she was added; replay "
                           << dump_frames(*replay) << " then " << dump_frames(seen) << " backfill via a "
                           << a_.api->messages(carol.token, group).body << " via b "
                           << b_.api->messages(carol.token, group).body << " added: " << added.body;
}

// A device linked through node a is announced to node b, which had cached the user's device
// list: b's next send into a shared conversation reaches the new device live.
TEST_F(RedisTest, ADeviceLinkedOnOneNodeIsAddressedByTheOthers) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b"));
  Account alice = a_.api->must_register("alice");
  Account bob = a_.api->must_register("bob");
  const std::string group = a_.api->must_group(alice.token, "g", {"bob"});
  Device db(bob);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  ASSERT_GT(send_retrying(db, group, "before"), 0u);  // node b caches alice's devices: {1}
  Account alice2 = a_.api->must_link(alice);
  ASSERT_EQ(alice2.device, 2u);
  Device d2(alice2);
  ASSERT_EQ(d2.connect(a_.server->port()), 101);
  ASSERT_TRUE(d2.until_synced());
  // The announcement crosses over pub/sub (asynchronously): within a few sends through b the
  // new device, on node a, gets one live. Without it b would never address device 2.
  Seq got = 0;
  std::vector<json::object> seen;
  for (int i = 0; i < 20 && got == 0; ++i) {
    const Seq s = send_retrying(db, group, "after" + std::to_string(i));
    ASSERT_GT(s, 0u);
    if (d2.read_until([&](const json::object& o) { return type_of(o) == "message" && seq_of(o) == s; }, ms(500), &seen))
      got = s;
  }
  EXPECT_GT(got, 0u) << "device 2 never got a message sent through node b live: " << dump_frames(seen);
}

// A node SIGKILLed under traffic: its client reconnects to the other node and finds every
// acknowledged message there, once, dense.
TEST_F(RedisTest, ClientsOfAKilledNodeReconnectToAnotherAndLoseNothing) {
  Account alice, bob;
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(two_nodes_with_a_direct(alice, bob, conv));
  std::atomic<bool> stop{false};
  std::map<std::string, Seq> acked;
  std::thread traffic([&] {
    Device d(alice);
    if (d.connect(a_.server->port()) != 101 || !d.until_synced()) return;
    for (int i = 0; i < 5000 && !stop; ++i) {
      const std::string id = "k" + std::to_string(i);
      auto a = d.send_wait(conv, id, id, ms(3000));
      if (!a) break;  // the node died
      if (type_of(*a) == "sent") acked[id] = seq_of(*a);
    }
  });
  // Let some traffic through, then kill the node in the middle of it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (a_.api->head(alice.token, conv) < 30 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(ms(20));
  a_.server->kill();
  stop = true;
  traffic.join();
  ASSERT_GE(acked.size(), 30u);

  // Bob (and alice's device) now come in through node b.
  Device db(bob);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  auto replay = db.until_synced(ms(20000));
  ASSERT_TRUE(replay);
  auto got = message_seqs(*replay, conv);
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(dense_range(got, 1, got.back()));
  std::set<Seq> have(got.begin(), got.end());
  for (auto& [id, s] : acked) EXPECT_TRUE(have.count(s)) << id << " acknowledged at " << s << " but not replayed";
  Device da(alice);
  ASSERT_EQ(da.connect(b_.server->port()), 101);
  ASSERT_TRUE(da.until_synced());
  // Node b may still route the conversation to the dead node for a moment (until it sees
  // a's bus connection gone, or the forwarded send times out): the send then answers
  // `unavailable` and the client resends the same client_msg_id, as clients do.
  EXPECT_EQ(send_retrying(da, conv, "after", 10), got.back() + 1);
}

// A node that hangs (SIGSTOP: alive, its bus connection open, not answering): a send that
// another node forwards to it answers `unavailable` after the request timeout (never a false
// `sent`, never a hang); the resend of the same client_msg_id is sequenced elsewhere (the
// hung node is suspected there); when the node resumes and finally handles the forwarded
// send, the message is not stored twice.
TEST_F(RedisTest, AHungOwnerNodeCostsOneTimeoutThenItsConversationsMoveOn) {
  Account alice, bob;
  std::string group;
  AdminTokenFile admin;
  ASSERT_NO_FATAL_FAILURE(group_sequenced_on_a(alice, bob, group, admin.ternd_args()));
  Device db(bob);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  const Seq before = db.must_send(group, "before", "before");  // forwarded to a, which answers
  ASSERT_GT(before, 0u);
  ASSERT_EQ(metric(b_, bob, "tern_sends_forwarded_total"), 1);

  ASSERT_EQ(::kill(a_.server->pid(), SIGSTOP), 0);
  struct Resume {
    pid_t pid;
    ~Resume() { ::kill(pid, SIGCONT); }
  } resume{a_.server->pid()};
  const auto t0 = std::chrono::steady_clock::now();
  auto first = db.send_wait(group, "during", "during", ms(10000));
  const auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(first) << "no answer while the owner hung";
  EXPECT_EQ(type_of(*first), "error") << dump(*first);
  EXPECT_EQ(jstr(*first, "code"), "unavailable") << dump(*first);
  EXPECT_LT(waited, std::chrono::seconds(5)) << "the forwarded send waited past its timeout";
  // The resend: node b now sequences the group itself.
  auto again = db.send_wait(group, "during", "during", ms(5000));
  ASSERT_TRUE(again);
  ASSERT_EQ(type_of(*again), "sent") << dump(*again);
  EXPECT_EQ(seq_of(*again), before + 1);
  // The operator sees it on node b (ternctl nodes): a still connected, and suspected.
  auto [rc, out] = run_ternctl(admin_port_in_log(b_.server->log_tail(1000000)), admin.path().string(), "nodes");
  ASSERT_EQ(rc, 0) << out;
  const auto listed = json::parse(out).as_object();
  const auto& nodes = listed.at("nodes").as_array();
  ASSERT_EQ(nodes.size(), 2u) << out;
  EXPECT_EQ(jstr(nodes[0].as_object(), "node"), "a") << out;
  EXPECT_GT(jint(nodes[0].as_object(), "suspected_ms"), 0) << out;
  EXPECT_EQ(jint(nodes[1].as_object(), "suspected_ms"), 0) << out;

  // Node a resumes and handles the forwarded send it had not read: the idempotency record
  // makes it the same message, not a second one.
  ::kill(a_.server->pid(), SIGCONT);
  const auto settle = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (metric(a_, alice, "tern_sends_served_total") < 2 && std::chrono::steady_clock::now() < settle)
    std::this_thread::sleep_for(ms(50));
  EXPECT_EQ(metric(a_, alice, "tern_sends_served_total"), 2) << "node a never handled the forwarded send";
  expect_log_matches(b_, bob, group, {{"before", before}, {"during", before + 1}});
}

// GET /admin/v1/nodes (ternctl nodes) on one node lists every node connected to the bus, and
// a node SIGKILLed leaves the list at the next liveness check.
TEST_F(RedisTest, TheAdminListingOfNodesFollowsANodeThatDies) {
  AdminTokenFile admin;
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", admin.ternd_args()));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b"));
  ASSERT_NO_FATAL_FAILURE(start_node(c_, redis_, "c"));
  const uint16_t port = admin_port_in_log(a_.server->log_tail(1000000));
  ASSERT_NE(port, 0);
  // The listing as ternctl prints it, its node names; awaited (at most 10 s).
  std::string out;
  auto listed_names = [&] {
    auto [rc, text] = run_ternctl(port, admin.path().string(), "nodes");
    EXPECT_EQ(rc, 0) << text;
    out = text;
    std::vector<std::string> names;
    if (rc != 0) return names;
    const json::value v = json::parse(text);
    for (const auto& n : v.at("nodes").as_array()) names.push_back(jstr(n.as_object(), "node"));
    return names;
  };
  auto await_names = [&](const std::vector<std::string>& want) {
    for (int i = 0; i < 100; ++i) {
      if (listed_names() == want) return true;
      std::this_thread::sleep_for(ms(100));
    }
    return false;
  };
  ASSERT_TRUE(await_names({"a", "b", "c"})) << out;
  const auto v = json::parse(out).as_object();
  EXPECT_EQ(jstr(v, "node"), "a");
  EXPECT_TRUE(v.at("shared").as_bool());
  EXPECT_TRUE(v.at("subscribed").as_bool());
  EXPECT_EQ(dump(v.at("nodes").as_array()[0]), R"({"node":"a","self":true,"leaving":false,"suspected_ms":0})");
  EXPECT_EQ(dump(v.at("nodes").as_array()[2]), R"({"node":"c","self":false,"leaving":false,"suspected_ms":0})");
  c_.server->kill();
  EXPECT_TRUE(await_names({"a", "b"})) << out;
}

// A node whose own clock is 40 s behind the others' (libfaketime) times the messages it
// sequences by the bus's clock, Redis's (docs/scaling.md "One clock for the bus"): their `ts`
// and `expires_at` agree with the other nodes', not 40 s back, out of order with the messages
// they sequenced before and expiring 40 s late.
TEST_F(RedisTest, ANodeWhoseClockIsBehindTimesItsMessagesByTheSharedClock) {
  const std::string faketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
  ASSERT_TRUE(std::filesystem::exists(faketime)) << faketime << ": faketime (scripts/setup.sh) must be installed";
  Account alice, bob;
  std::string group;
  ASSERT_NO_FATAL_FAILURE(group_sequenced_on_a(alice, bob, group, {},
                                               {"LD_PRELOAD=" + faketime, "FAKETIME=-40s", "FAKETIME_DONT_FAKE_MONOTONIC=1"}));
  // The preload took: node a measured its clock 40 s behind Redis's. Awaited: a measurement
  // whose round trip took over 50 ms (a loaded machine) is dropped and made again 10 s later.
  double offset = 0;
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(25);
       std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(ms(100))) {
    offset = metric(a_, alice, "tern_bus_clock_offset_ms");
    if (offset > 38000 && offset < 42000) break;
  }
  ASSERT_NEAR(offset, 40000, 2000);
  EXPECT_NEAR(metric(b_, bob, "tern_bus_clock_offset_ms"), 0, 2000);

  Device db(bob);
  ASSERT_EQ(db.connect(b_.server->port()), 101);
  ASSERT_TRUE(db.until_synced());
  json::object send;
  send["type"] = "send";
  send["client_msg_id"] = "timed";
  send["conversation_id"] = group;
  send["body"] = b64("x");
  send["ttl"] = 60;
  const int64_t before = now_ms();
  ASSERT_TRUE(db.send_json(send));
  auto sent = db.wait_answer("timed");
  const int64_t after = now_ms();
  ASSERT_TRUE(sent);
  ASSERT_EQ(type_of(*sent), "sent") << dump(*sent);
  EXPECT_EQ(metric(a_, alice, "tern_sends_served_total"), 1) << "node a sequenced it";
  const int64_t ts = jint(*sent, "ts");
  EXPECT_GE(ts, before - 1000) << "timed by node a's own clock";
  EXPECT_LE(ts, after + 1000);

  // alice, on node a, is handed it with the same ts and its expiry 60 s after.
  Device da(alice);
  ASSERT_EQ(da.connect(a_.server->port()), 101);
  auto replay = da.until_synced();
  ASSERT_TRUE(replay);
  std::vector<json::object> messages;
  for (const auto& f : *replay)
    if (type_of(f) == "message" && jstr(f, "conversation_id") == group && seq_of(f) == seq_of(*sent)) messages.push_back(f);
  ASSERT_EQ(messages.size(), 1u) << dump_frames(*replay);
  EXPECT_EQ(jint(messages[0], "ts"), ts);
  EXPECT_EQ(jint(messages[0], "expires_at"), ts + 60'000);
}

// Redis stopped for kRedisDown under traffic: every send is answered at once with
// `unavailable` (never `sent`), connections stay open, and the node heals by itself when
// Redis is back; nothing acknowledged before is lost and seqs stay dense.
TEST_F(RedisTest, RedisDownSendsGetUnavailableAtOnceAndTheNodeHeals) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  Pair p;
  ASSERT_NO_FATAL_FAILURE(connected_pair(a_, p));
  const Account& bob = p.bob;
  const std::string& conv = p.conv;
  Device &da = *p.da, &db = *p.db;
  for (int i = 1; i <= 10; ++i) ASSERT_EQ(da.must_send(conv, "before" + std::to_string(i), "x"), Seq(i));

  redis_.stop();
  const auto until = std::chrono::steady_clock::now() + kRedisDown;
  int answered = 0;
  for (int i = 0; std::chrono::steady_clock::now() < until; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto a = da.send_wait(conv, "down" + std::to_string(i), "x", ms(5000));
    const auto took = std::chrono::steady_clock::now() - t0;
    ASSERT_TRUE(a) << "no answer within 5 s while Redis is down";
    EXPECT_EQ(type_of(*a), "error") << dump(*a);
    EXPECT_EQ(jstr(*a, "code"), "unavailable") << dump(*a);
    EXPECT_LT(took, ms(1000)) << "an answer took " << std::chrono::duration_cast<ms>(took).count() << " ms";
    ++answered;
    std::this_thread::sleep_for(ms(200));
  }
  EXPECT_GT(answered, 10);
  EXPECT_TRUE(da.is_open());
  EXPECT_TRUE(db.is_open());
  // A link code is redeemed in Redis too: `unavailable` (retry), not "unknown code", and not
  // looked up in this node's memory, which no other node could have written.
  auto link = http_request(a_.server->port(), "POST", "/v1/devices/link", R"({"user":"bob","code":"ABCD-EFGH"})");
  EXPECT_EQ(link.status, 503) << link.body;
  EXPECT_EQ(link.error_code(), "unavailable") << link.body;

  ASSERT_TRUE(redis_.start().ok());
  // The node heals by itself: a resend of the first failed message is accepted within a few
  // seconds, with the next seq (nothing from the outage was stored).
  const auto heal_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  Seq s = 0;
  while (s == 0 && std::chrono::steady_clock::now() < heal_deadline) {
    auto a = da.send_wait(conv, "down0", "x", ms(5000));
    ASSERT_TRUE(a);
    if (type_of(*a) == "sent") s = seq_of(*a);
    else std::this_thread::sleep_for(ms(100));
  }
  EXPECT_EQ(s, 11u);
  EXPECT_TRUE(da.is_open());
  // Bob, still connected through the outage, gets the new message live; the log is dense.
  auto f = db.read_until([&](const json::object& o) { return type_of(o) == "message" && seq_of(o) == 11; });
  EXPECT_TRUE(f);
  auto log = a_.api->backfill_all(bob.token, conv);
  EXPECT_TRUE(dense_range(message_seqs(log, conv), 1, 11));
}

// A link code shown through node a is entered on a new device that the load balancer sends
// to node b: the code is in Redis (by hash), so b links the device, and the code is used up
// on both nodes; the limit of outstanding codes (5) counts the codes made through both.
TEST_F(RedisTest, ALinkCodeShownThroughOneNodeIsRedeemedThroughAnother) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b"));
  Account alice = a_.api->must_register("alice");
  const int64_t before = now_ms();
  auto code = http_request(a_.server->port(), "POST", "/v1/devices/link-codes", "{}", alice.token);
  ASSERT_EQ(code.status, 201) << code.body;
  const int64_t expires_at = code.obj().at("expires_at").as_int64();
  EXPECT_GE(expires_at, before + 600'000 - 5'000) << "ten minutes on Redis's clock";
  EXPECT_LE(expires_at, now_ms() + 600'000 + 5'000);
  const std::string body = R"({"user":"alice","code":")" + std::string(code.obj().at("code").as_string()) + R"("})";
  auto linked = http_request(b_.server->port(), "POST", "/v1/devices/link", body);
  ASSERT_EQ(linked.status, 201) << linked.body;
  EXPECT_EQ(linked.obj().at("device").as_int64(), 2);
  EXPECT_EQ(http_request(b_.server->port(), "POST", "/v1/devices/link", body).status, 404) << "single use";
  EXPECT_EQ(http_request(a_.server->port(), "POST", "/v1/devices/link", body).status, 404) << "used up on a too";

  for (int i = 0; i < 5; ++i) {
    auto more = http_request((i % 2 ? a_ : b_).server->port(), "POST", "/v1/devices/link-codes", "{}", alice.token);
    EXPECT_EQ(more.status, 201) << i << ": " << more.body;
  }
  auto sixth = http_request(a_.server->port(), "POST", "/v1/devices/link-codes", "{}", alice.token);
  EXPECT_EQ(sixth.status, 429) << sixth.body;
  EXPECT_EQ(sixth.error_code(), "rate_limited");
}

// Abuse reports filed through two nodes are all kept: their ids come from one counter in
// Redis. With each node counting on its own from the last stored id, both nodes handed out
// the same ids and each report through b replaced one through a.
TEST_F(RedisTest, ReportsFiledThroughTwoNodesAreAllKept) {
  AdminTokenFile admin;
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", admin.ternd_args()));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b"));
  Account alice = a_.api->must_register("alice");
  Account bob = a_.api->must_register("bob");
  const std::string group = a_.api->must_group(alice.token, "g", {"bob"});
  std::set<int64_t> ids;
  for (int i = 0; i < 4; ++i) {
    const bool through_b = i % 2;
    auto filed = http_request((through_b ? b_ : a_).server->port(), "POST", "/v1/reports",
                              json::serialize(json::object{{"conversation_id", group}, {"reason", "spam"}}),
                              (through_b ? bob : alice).token);
    ASSERT_EQ(filed.status, 201) << filed.body;
    ids.insert(filed.obj().at("report_id").as_int64());
  }
  EXPECT_EQ(ids.size(), 4u) << "an id handed out twice";
  const uint16_t port = admin_port_in_log(a_.server->log_tail(1000000));
  ASSERT_NE(port, 0);
  auto [rc, out] = run_ternctl(port, admin.path().string(), "reports");
  ASSERT_EQ(rc, 0) << out;
  std::set<int64_t> listed;
  const json::value listing = json::parse(out);
  for (const auto& r : listing.at("reports").as_array()) listed.insert(r.as_object().at("id").as_int64());
  EXPECT_EQ(listed, ids) << out;
}

// The limits by source address or user are one budget for all nodes (their buckets in
// Redis): registrations from one address through two nodes share one burst of 3, where each
// node's own bucket would have let 3 through each.
TEST_F(RedisTest, ARateLimitIsOneBudgetAcrossNodes) {
  const std::vector<std::string> limits{"--register-rate", "1", "--register-burst", "3"};  // 1 a minute
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", limits));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", limits));
  EXPECT_EQ(a_.api->register_user("u1").status, 201);
  EXPECT_EQ(b_.api->register_user("u2").status, 201);
  EXPECT_EQ(a_.api->register_user("u3").status, 201);
  auto refused = b_.api->register_user("u4");
  EXPECT_EQ(refused.status, 429) << refused.body;
  EXPECT_EQ(refused.error_code(), "rate_limited");
  EXPECT_EQ(a_.api->register_user("u5").status, 429);
}

}  // namespace
}  // namespace tern::test
