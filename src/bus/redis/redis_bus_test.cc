// RedisBus: the wire form of cross-node events (round trip, malformed input refused) and two
// buses on a real redis-server delivering to each other's endpoints.
#include "bus/redis/redis_bus.h"

#include <hiredis/hiredis.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <thread>

#include <gtest/gtest.h>

#include "base/byte_codec.h"
#include "base/clock.h"
#include "bus/redis/redis_bus_fixture.h"
#include "store/redis/testing/redis_cluster_server.h"
#include "store/redis/testing/redis_server.h"

namespace tern::bus {
namespace {

using namespace bustest;

TEST(RedisBusCodec, RoundTripsEveryField) {
  std::string out;
  RedisBus::encode(out, RedisBus::Event{RedisBus::Target::kDevice, DeviceRef{"bob", 7}, sample()});
  RedisBus::encode(out, RedisBus::Event{RedisBus::Target::kUser, DeviceRef{"carol", 0}, std::make_shared<Notification>()});
  std::vector<RedisBus::Event> got;
  ASSERT_TRUE(RedisBus::decode(out, got));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].target, RedisBus::Target::kDevice);
  EXPECT_EQ(got[0].device.user, "bob");
  EXPECT_EQ(got[0].device.device, 7u);
  const Notification& n = *got[0].n;
  EXPECT_EQ(n.kind, Notification::Kind::kMessage);
  EXPECT_EQ(n.conversation_id, "g-1");
  EXPECT_EQ(n.seq, 0x0102030405060708ull);
  EXPECT_TRUE(n.per_device);
  EXPECT_FALSE(n.system);
  EXPECT_TRUE(n.droppable);
  ASSERT_TRUE(n.frame);
  EXPECT_EQ(*n.frame, std::string("{\"x\":1}\0z", 9));
  EXPECT_EQ(n.origin.user, "alice");
  EXPECT_EQ(n.origin.device, 3u);
  EXPECT_EQ(got[1].target, RedisBus::Target::kUser);
  EXPECT_FALSE(got[1].n->frame);
}

// One publisher turn's events go out in the order they were queued, each run of events for
// one channel as one PUBLISH: a reply to a forwarded send queued before the next message to
// the same node is received before it. (They were grouped per channel, and the channels went
// out in name order: "tern:bus" before "{tern:bus}:n2", the message before the reply.)
TEST(RedisBusCodec, BatchesKeepTheQueuedOrderAcrossChannels) {
  auto reply = [](const char* node, uint64_t id) {
    auto n = std::make_shared<Notification>();
    n->seq = id;
    return RedisBus::Event{RedisBus::Target::kReply, DeviceRef{node, 0}, n};
  };
  std::deque<RedisBus::Event> events{reply("n2", 1),
                                     RedisBus::Event{RedisBus::Target::kDevice, DeviceRef{"bob", 7}, sample()},
                                     RedisBus::Event{RedisBus::Target::kDevice, DeviceRef{"carol", 1}, sample()},
                                     reply("n2", 2), reply("n3", 3)};
  const auto out = RedisBus::batches(events, /*resync=*/true, "n1");
  ASSERT_EQ(out.size(), 5u);
  const std::vector<std::string> channels{"tern:bus", "{tern:bus}:n2", "tern:bus", "{tern:bus}:n2", "{tern:bus}:n3"};
  const std::vector<std::vector<RedisBus::Target>> targets{
      {RedisBus::Target::kResync},
      {RedisBus::Target::kReply},
      {RedisBus::Target::kDevice, RedisBus::Target::kDevice},
      {RedisBus::Target::kReply},
      {RedisBus::Target::kReply}};
  std::vector<uint64_t> reply_ids;
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].channel, channels[i]) << i;
    ByteReader r{out[i].payload};
    EXPECT_EQ(r.str(), "n1") << "every batch starts with the sending node";
    std::vector<RedisBus::Event> got;
    ASSERT_TRUE(RedisBus::decode(r.in, got)) << i;
    ASSERT_EQ(got.size(), targets[i].size()) << i;
    for (size_t j = 0; j < got.size(); ++j) {
      EXPECT_EQ(got[j].target, targets[i][j]) << i << "/" << j;
      if (got[j].target == RedisBus::Target::kReply) reply_ids.push_back(got[j].n->seq);
    }
  }
  EXPECT_EQ(reply_ids, (std::vector<uint64_t>{1, 2, 3}));
}

TEST(RedisBusCodec, TruncatedOrBadInputIsRefused) {
  std::string out;
  RedisBus::encode(out, RedisBus::Event{RedisBus::Target::kDevice, DeviceRef{"bob", 7}, sample()});
  for (size_t len = 1; len < out.size(); ++len) {
    std::vector<RedisBus::Event> got;
    EXPECT_FALSE(RedisBus::decode(std::string_view(out).substr(0, len), got)) << len;
  }
  std::string bad = out;
  bad[0] = 'q';  // unknown target
  std::vector<RedisBus::Event> got;
  EXPECT_FALSE(RedisBus::decode(bad, got));
  std::string huge = out.substr(0, 1) + std::string("\xff\xff\xff\xff", 4);  // a length past the end
  EXPECT_FALSE(RedisBus::decode(huge, got));
}

TEST_F(RedisBusNodes, TwoNodesDeliverToEachOthersDevicesAndSeeEachOthersRegistry) {
  ASSERT_TRUE(a.start() && b.start());
  std::atomic<int> sunk{0};
  b.set_conversation_sink([&](std::shared_ptr<const Notification>) { ++sunk; });
  auto bob = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);
  EXPECT_TRUE(await([&] { return a.online("bob"); }));  // through the registry
  EXPECT_FALSE(a.online("nobody"));

  a.publish(DeviceRef{"bob", 1}, sample());
  a.publish_user("bob", sample());
  a.publish(DeviceRef{"bob", 2}, sample());  // not attached anywhere: nobody gets it
  a.publish_conversation(sample());
  ASSERT_TRUE(await([&] { return bob->count() == 2 && sunk == 1; })) << bob->count() << " " << sunk;
  EXPECT_EQ(bob->seen[0]->seq, sample()->seq);
  EXPECT_EQ(*bob->seen[0]->frame, *sample()->frame);

  b.detach(DeviceRef{"bob", 1}, bob.get());
  EXPECT_TRUE(await([&] { return !a.online("bob"); }));
}

// An admin disconnect on one node closes the device's connection on another.
TEST_F(RedisBusNodes, ADisconnectReachesTheDevicesNode) {
  ASSERT_TRUE(a.start() && b.start());
  auto bob = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);
  a.disconnect(DeviceRef{"bob", 1});
  EXPECT_TRUE(await([&] { return bob->replaced_count == 1; }));
}

// On a 3+3 Redis Cluster: sharded pub/sub on the channel's shard, registry keys on their
// slots; after a failover of the channel's master, and after its slot moved to another
// master, the subscribers subscribe again and delivery resumes.
// Whether `from` routes some of 64 conversations to `node` (its ring holds that node).
bool routes_some_to(RedisBus& from, const std::string& node) {
  for (int i = 0; i < 64; ++i)
    if (from.route("c" + std::to_string(i)) == node) return true;
  return false;
}

TEST(RedisBus, ShardedPubSubOnAClusterSurvivesFailoverAndSlotMove) {
  store::redis::testing::RedisClusterServer cluster;
  auto started = cluster.start();
  ASSERT_TRUE(started.ok()) << started.error().message;
  auto seeds = store::redis::parse_redis_urls(cluster.seeds3());
  ASSERT_TRUE(seeds.ok());
  RedisBusOptions oa, ob;
  oa.seeds = ob.seeds = *seeds;
  oa.node_id = "a";
  ob.node_id = "b";
  RedisBus a(oa), b(ob);
  std::atomic<int> presence_changes{0};
  b.set_presence_sink([&](const std::string& user, std::shared_ptr<const Notification>) {
    if (user == "alice") ++presence_changes;
  });
  ASSERT_TRUE(a.start());
  ASSERT_TRUE(b.start());
  auto bob = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);
  EXPECT_TRUE(await([&] { return a.online("bob"); }));
  // Registry entries of many users land on every master.
  std::vector<std::shared_ptr<Recorder>> others;
  for (int i = 0; i < 30; ++i) {
    others.push_back(std::make_shared<Recorder>());
    b.attach(DeviceRef{"u" + std::to_string(i), 1}, others.back());
  }
  EXPECT_TRUE(await([&] {
    for (int i = 0; i < 30; ++i)
      if (!a.online("u" + std::to_string(i))) return false;
    return true;
  }));
  a.publish(DeviceRef{"bob", 1}, sample());
  ASSERT_TRUE(await([&] { return bob->count() == 1; }));
  // Presence changes go on their own channel of the same shard (one SSUBSCRIBE holds all three).
  a.publish_presence("alice", sample());
  EXPECT_TRUE(await([&] { return presence_changes == 1; }));
  // The channel's shard is on the master of its slot: that master receives the SPUBLISH.
  const uint16_t slot = store::redis::key_slot("tern:bus");
  auto master = cluster.master_of(slot);
  ASSERT_TRUE(master.ok());
  auto numsub = cluster.command(*master, {"PUBSUB", "SHARDNUMSUB", "tern:bus"});
  ASSERT_TRUE(numsub.ok());
  EXPECT_EQ(*numsub, "tern:bus\n2");

  // Publishes until one arrives (events published while a node re-subscribes are lost).
  auto delivered_again = [&] {
    const size_t before = bob->count();
    return await([&] {
      a.publish(DeviceRef{"bob", 1}, sample());
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      return bob->count() > before;
    });
  };
  auto replica = cluster.replica_of(*master);
  ASSERT_TRUE(replica.ok()) << replica.error().message;
  auto f = cluster.failover(*replica);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_TRUE(delivered_again());
  // Both subscriptions move to the new master (the old one, now a replica, may hold them for
  // a moment: the nodes follow the topology at their next look).
  EXPECT_TRUE(await([&] {
    auto n = cluster.command(*replica, {"PUBSUB", "SHARDNUMSUB", "tern:bus"});
    return n.ok() && *n == "tern:bus\n2";
  }));

  auto other = cluster.another_master(*replica);
  ASSERT_TRUE(other.ok());
  const uint16_t to = *other;
  auto moved = cluster.move_slot(slot, to);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_TRUE(delivered_again());
  EXPECT_TRUE(await([&] {
    auto n = cluster.command(to, {"PUBSUB", "SHARDNUMSUB", "tern:bus"});
    return n.ok() && *n == "tern:bus\n2";
  }));

  // A stopping node's marker (leave()) goes to the channels' master where it is now, so the
  // other node leaves it out of its ring.
  ASSERT_TRUE(await([&] { return routes_some_to(b, "a") && routes_some_to(a, "b"); }));
  EXPECT_EQ(a.leave(), 2 * oa.node_check);
  EXPECT_TRUE(await([&] { return !routes_some_to(b, "a"); }));
}

// A change of what the nodes cache of a user (a device link, blocks, a setting) or of one
// device's keys reaches the other nodes' user-changed sink, not its own.
TEST_F(RedisBusNodes, ADeviceLinkIsAnnouncedToTheOtherNodes) {
  std::mutex mu;
  std::vector<std::pair<std::string, uint32_t>> linked_a, linked_b;
  a.set_user_changed_sink([&](const std::string& u, uint32_t d) {
    std::lock_guard lock(mu);
    linked_a.emplace_back(u, d);
  });
  b.set_user_changed_sink([&](const std::string& u, uint32_t d) {
    std::lock_guard lock(mu);
    linked_b.emplace_back(u, d);
  });
  ASSERT_TRUE(a.start() && b.start());
  a.announce_user_changed("alice");
  a.announce_keys_changed(DeviceRef{"bob", 3});
  ASSERT_TRUE(await([&] {
    std::lock_guard lock(mu);
    return linked_b.size() == 2;
  }));
  std::lock_guard lock(mu);
  EXPECT_EQ(linked_b, (std::vector<std::pair<std::string, uint32_t>>{{"alice", 0}, {"bob", 3}}));
  EXPECT_TRUE(linked_a.empty()) << "a node ignores its own announcements";
}

// A message committed on one node gives the other nodes one head hint (not one per recipient
// device, and none for a frame without a seq); the node that published it gets none.
TEST_F(RedisBusNodes, AMessageFromAnotherNodeGivesOneHeadHint) {
  std::mutex mu;
  std::vector<std::pair<std::string, Seq>> hints_a, hints_b;
  a.set_head_sink([&](const std::string& c, Seq s, std::shared_ptr<const std::string>) {
    std::lock_guard lock(mu);
    hints_a.emplace_back(c, s);
  });
  b.set_head_sink([&](const std::string& c, Seq s, std::shared_ptr<const std::string> frame) {
    std::lock_guard lock(mu);
    EXPECT_TRUE(frame && *frame == *sample()->frame);
    hints_b.emplace_back(c, s);
  });
  ASSERT_TRUE(a.start() && b.start());
  auto bob = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);
  ASSERT_TRUE(await([&] { return a.online("bob"); }));
  auto typing = std::make_shared<Notification>();
  typing->frame = std::make_shared<const std::string>("{}");
  typing->conversation_id = "g-1";
  auto next = std::make_shared<Notification>(*sample());
  next->seq = sample()->seq + 1;
  // One message for three devices of the user, a typing frame, then the next message.
  a.publish(DeviceRef{"bob", 1}, sample());
  a.publish(DeviceRef{"bob", 2}, sample());
  a.publish(DeviceRef{"carol", 1}, sample());
  a.publish(DeviceRef{"bob", 1}, typing);
  a.publish(DeviceRef{"bob", 1}, next);
  ASSERT_TRUE(await([&] { return bob->count() == 3; })) << bob->count();
  std::lock_guard lock(mu);
  const std::vector<std::pair<std::string, Seq>> want{{"g-1", sample()->seq}, {"g-1", sample()->seq + 1}};
  EXPECT_EQ(hints_b, want);
  EXPECT_TRUE(hints_a.empty()) << "a node ignores its own messages";
}

// Send routing: once both nodes' heartbeats are in, both pick the same owner for every
// conversation; a request reaches its node's request sink and the answer comes back; a
// request to a node that never answers fails `unavailable` after the timeout, and that node
// then owns nothing here.
TEST_F(RedisBusNodes, RequestsReachTheOwnerAndANodeThatDoesNotAnswerIsRoutedAround) {
  b.set_request_sink([](std::string payload, Bus::Respond respond) { respond("re:" + payload); });
  ASSERT_TRUE(a.start() && b.start());
  auto owner = [](RedisBus& bus, const std::string& self, const std::string& conv) {
    auto o = bus.route(conv);
    return o.empty() ? self : o;
  };
  // Both rings hold both nodes: each routes some conversation to the other.
  ASSERT_TRUE(await([&] {
    bool a_to_b = false, b_to_a = false;
    for (int i = 0; i < 64; ++i) {
      a_to_b |= a.route("c" + std::to_string(i)) == "b";
      b_to_a |= b.route("c" + std::to_string(i)) == "a";
    }
    return a_to_b && b_to_a;
  }));
  for (int i = 0; i < 64; ++i) {
    const std::string conv = "c" + std::to_string(i);
    EXPECT_EQ(owner(a, "a", conv), owner(b, "b", conv)) << conv;
  }

  std::mutex mu;
  std::vector<Result<std::string>> answers;
  auto collect = [&](Result<std::string> r) {
    std::lock_guard lock(mu);
    answers.push_back(std::move(r));
  };
  a.request("b", "ping", collect);
  a.request("ghost", "ping", collect);  // no such node: nobody answers
  ASSERT_TRUE(await([&] {
    std::lock_guard lock(mu);
    return answers.size() == 2;
  }));
  std::lock_guard lock(mu);
  ASSERT_TRUE(answers[0]) << answers[0].error().message;
  EXPECT_EQ(*answers[0], "re:ping");
  ASSERT_FALSE(answers[1]);
  EXPECT_EQ(answers[1].error().code, ErrorCode::kUnavailable);
}

// A node that is stopping (leave(), on SIGTERM) owns no conversation on the others once they
// have looked again, and still answers what they ask meanwhile.
TEST_F(RedisBusNodes, ALeavingNodeOwnsNothingElsewhereAndStillAnswers) {
  a.set_request_sink([](std::string payload, Bus::Respond respond) { respond("re:" + payload); });
  ASSERT_TRUE(a.start() && b.start());
  ASSERT_TRUE(await([&] { return routes_some_to(b, "a") && routes_some_to(a, "b"); }));
  EXPECT_EQ(a.leave(), 2 * RedisBusOptions{}.node_check);  // b is live: a serves for two looks
  ASSERT_TRUE(await([&] { return !routes_some_to(b, "a"); }));
  auto r = ask(b, "a", "ping");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "re:ping");
}

// What a node tells the admin API of the others (GET /admin/v1/nodes): the nodes its last
// liveness check listed, those of them leaving, those it does not forward sends to for now,
// and whether its subscription is held, also while Redis is away.
TEST_F(RedisBusNodes, NodesShowsTheLiveLeavingAndSuspectedNodesAndALostSubscription) {
  const NodesView before = a.nodes();
  EXPECT_TRUE(before.shared);
  EXPECT_EQ(before.self, "a");
  EXPECT_FALSE(before.subscribed);
  EXPECT_EQ(before.listed_ms_ago, -1) << "nothing listed before the bus starts";
  EXPECT_TRUE(before.live.empty());
  ASSERT_TRUE(a.start() && b.start());
  const std::vector<std::string> both{"a", "b"};
  ASSERT_TRUE(await([&] { return a.nodes().live == both; }));
  NodesView v = a.nodes();
  EXPECT_TRUE(v.subscribed);
  EXPECT_GE(v.listed_ms_ago, 0);
  EXPECT_LE(v.listed_ms_ago, 5000);
  EXPECT_TRUE(v.leaving.empty());
  EXPECT_TRUE(v.suspected.empty());

  // A request nobody answers suspects its node for suspect_for (5 s by default).
  auto r = ask(a, "ghost", "ping");
  ASSERT_FALSE(r);
  v = a.nodes();
  ASSERT_EQ(v.suspected.size(), 1u);
  EXPECT_EQ(v.suspected[0].first, "ghost");
  EXPECT_GT(v.suspected[0].second, 0);
  EXPECT_LE(v.suspected[0].second, RedisBusOptions{}.suspect_for.count());

  b.leave();
  ASSERT_TRUE(await([&] { return a.nodes().leaving == std::vector<std::string>{"b"}; }));
  EXPECT_EQ(a.nodes().live, both) << "a leaving node is still connected";
  b.stop();
  ASSERT_TRUE(await([&] { return a.nodes().live == std::vector<std::string>{"a"}; }));

  // Redis away: the subscription is lost and no list is read; both show, and heal.
  const int64_t stale = 3 * RedisBusOptions{}.node_check.count();
  redis_.server.stop();
  ASSERT_TRUE(await([&] { return !a.nodes().subscribed; }));
  ASSERT_TRUE(await([&] { return a.nodes().listed_ms_ago > stale; }));
  ASSERT_TRUE(redis_.server.start().ok());
  ASSERT_TRUE(await([&] { return a.nodes().subscribed && a.nodes().listed_ms_ago < stale; }, std::chrono::seconds(15)));
}

// A node whose own clock is off: the bus measures its offset to Redis's clock (TIME) and
// corrects the times it shares with the others by it.
RedisBusOptions skewed(RedisBusOptions o, std::chrono::seconds by) {
  o.local_wall_us = [by] { return tern::wall_us() + std::chrono::duration_cast<std::chrono::microseconds>(by).count(); };
  return o;
}

bool near(int64_t us, std::chrono::seconds want) {
  return std::llabs(us - std::chrono::duration_cast<std::chrono::microseconds>(want).count()) < 200'000;
}

// 40 s behind, more than the registry's TTL (30 s): by its own clock its devices' entries
// would have expired when written, and their users would count offline everywhere.
TEST_F(RedisBusNodes, ANodeWhoseClockIsBehindByMoreThanTheRegistryTtlKeepsItsDevicesOnline) {
  RedisBus c{skewed(options(redis_.server.port(), "c"), std::chrono::seconds(-40))};
  ASSERT_TRUE(a.start() && c.start());
  // Measured when its publisher connects; again 10 s later if that answer was slow (> 50 ms).
  ASSERT_TRUE(await([&] { return near(c.clock_offset_us(), std::chrono::seconds(40)); }, std::chrono::seconds(25)))
      << c.clock_offset_us();
  EXPECT_EQ(c.nodes().clock_offset_ms, c.clock_offset_us() / 1000) << "as the admin API shows it";
  EXPECT_TRUE(near(a.clock_offset_us(), std::chrono::seconds(0))) << a.clock_offset_us();
  EXPECT_LT(std::llabs(c.clock_us() - a.clock_us()), 200'000) << "both on Redis's clock";
  auto bob = std::make_shared<Recorder>();
  c.attach(DeviceRef{"bob", 1}, bob);
  ASSERT_TRUE(await([&] { return a.online("bob"); })) << "bob's entry, written by c, expired at once";
  EXPECT_TRUE(c.online("bob"));
}

// 40 s ahead: by its own clock a connection there would be newer than one made elsewhere
// after it, and would never be replaced (one connection per device, across nodes).
TEST_F(RedisBusNodes, ANodeWhoseClockIsAheadHasItsOlderConnectionReplacedByANewerOneElsewhere) {
  RedisBus c{skewed(options(redis_.server.port(), "c"), std::chrono::seconds(40))};
  ASSERT_TRUE(a.start() && c.start());
  ASSERT_TRUE(await([&] { return near(c.clock_offset_us(), std::chrono::seconds(-40)); }, std::chrono::seconds(25)))
      << c.clock_offset_us();
  auto on_c = std::make_shared<Recorder>();
  c.attach(DeviceRef{"bob", 1}, on_c);
  ASSERT_TRUE(await([&] { return a.online("bob"); }));
  auto on_a = std::make_shared<Recorder>();
  a.attach(DeviceRef{"bob", 1}, on_a);
  ASSERT_TRUE(await([&] { return on_c->replaced_count.load() == 1; })) << "c kept its older connection";
  EXPECT_EQ(on_a->replaced_count.load(), 0);
}

// A node that does not serve requests (no sink) answers at once, with an empty answer.
TEST_F(RedisBusNodes, ANodeWithoutARequestSinkAnswersEmpty) {
  ASSERT_TRUE(a.start() && b.start());
  auto r = ask(a, "b", "ping");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "");
}

}  // namespace
}  // namespace tern::bus

namespace tern::bus {
namespace {

// A node whose subscription was lost may have missed other nodes' invalidations (kChanged,
// kDevices): once subscribed again it drops its caches (the resync sink); its first
// subscription does not.
TEST_F(RedisBusNodes, ANodeWhoseSubscriptionWasLostDropsItsCachesOnceBack) {
  std::atomic<int> resyncs_a{0}, resyncs_b{0};
  a.set_resync_sink([&] { ++resyncs_a; });
  b.set_resync_sink([&] { ++resyncs_b; });
  ASSERT_TRUE(a.start() && b.start());
  // A round trip through the bus: both are subscribed and settled.
  std::atomic<int> linked{0};
  b.set_user_changed_sink([&](const std::string&, uint32_t) { ++linked; });
  a.announce_user_changed("alice");
  ASSERT_TRUE(await([&] { return linked.load() == 1; }));
  EXPECT_EQ(resyncs_a.load(), 0) << "a first subscription missed nothing";
  EXPECT_EQ(resyncs_b.load(), 0);
  auto admin = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                      std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(admin);
  auto killed = (*admin)->command({"CLIENT", "KILL", "TYPE", "pubsub"});
  ASSERT_TRUE(killed);
  ASSERT_EQ((*killed)->type, REDIS_REPLY_INTEGER);
  EXPECT_EQ((*killed)->integer, 2) << "both nodes' subscriber connections";
  ASSERT_TRUE(await([&] { return resyncs_a.load() == 1 && resyncs_b.load() == 1; }))
      << "resyncs a=" << resyncs_a.load() << " b=" << resyncs_b.load();
}

// A node that dropped some of its events (here: its queue was full) says so first in its next
// batch, and the other nodes drop their caches; the events after the drop still arrive.
TEST_F(RedisBusNodes, ANodeThatDroppedEventsMakesTheOthersDropTheirCaches) {
  RedisBusOptions o = options(redis_.server.port(), "c");
  o.queue_limit = 1;
  RedisBus c{o};
  std::atomic<int> resyncs_b{0};
  std::mutex mu;
  std::vector<std::string> linked;
  b.set_resync_sink([&] { ++resyncs_b; });
  b.set_user_changed_sink([&](const std::string& u, uint32_t) {
    std::lock_guard lock(mu);
    linked.push_back(u);
  });
  ASSERT_TRUE(b.start());
  // Not started yet: nothing drains c's queue of one.
  c.announce_user_changed("alice");
  c.announce_user_changed("bob");  // dropped: the queue is full
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(await([&] { return resyncs_b.load() == 1; }));
  ASSERT_TRUE(await([&] {
    std::lock_guard lock(mu);
    return linked.size() == 1;
  }));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(linked[0], "alice");
  }
  // Said once: later batches carry no resync.
  c.announce_user_changed("carol");
  ASSERT_TRUE(await([&] {
    std::lock_guard lock(mu);
    return linked.size() == 2;
  }));
  EXPECT_EQ(resyncs_b.load(), 1);
  c.stop();
}

// Requests and replies go on the asked node's own channel, not on the channel every node
// decodes: a listener on `tern:bus` sees the broadcast events but no request or reply.
TEST_F(RedisBusNodes, RequestsAndRepliesGoOnlyToTheirNodesOwnChannel) {
  auto listener = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                         std::chrono::milliseconds(500), std::chrono::milliseconds(300));
  ASSERT_TRUE(listener);
  auto sub = (*listener)->command({"SUBSCRIBE", "tern:bus"});
  ASSERT_TRUE(sub);
  b.set_request_sink([](std::string payload, Bus::Respond respond) { respond("re:" + payload); });
  ASSERT_TRUE(a.start() && b.start());
  auto r = ask(a, "b", "ping");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "re:ping");
  a.announce_user_changed("alice");  // a broadcast event, after the request and its reply
  // Read what reached `tern:bus` until the broadcast arrived (bounded: 50 pushes or a timeout).
  std::vector<RedisBus::Target> seen;
  bool broadcast = false;
  for (int i = 0; i < 50 && !broadcast; ++i) {
    auto m = (*listener)->read_push();
    if (!m) break;
    const redisReply* p = m->get();
    if (p->type != REDIS_REPLY_ARRAY || p->elements != 3 || std::string_view(p->element[0]->str) != "message") continue;
    std::string_view payload(p->element[2]->str, p->element[2]->len);
    ASSERT_GE(payload.size(), 4u);
    const uint32_t header = (static_cast<uint8_t>(payload[0]) << 24) | (static_cast<uint8_t>(payload[1]) << 16) |
                            (static_cast<uint8_t>(payload[2]) << 8) | static_cast<uint8_t>(payload[3]);
    std::vector<RedisBus::Event> events;
    ASSERT_TRUE(RedisBus::decode(payload.substr(4 + header), events));
    for (const auto& e : events) {
      seen.push_back(e.target);
      broadcast |= e.target == RedisBus::Target::kDevices;
    }
  }
  EXPECT_TRUE(broadcast) << "the broadcast channel carried the device announcement";
  for (RedisBus::Target t : seen) {
    EXPECT_NE(t, RedisBus::Target::kRequest);
    EXPECT_NE(t, RedisBus::Target::kReply);
  }
}

// Device routes (device_routes.h): with three nodes, an event for a device goes on the channel
// of the node that holds it; the third node does not receive it. A broadcast event published
// after them (one publisher thread: in order) shows that everything before it has arrived.
TEST_F(RedisBusNodes, DeviceEventsGoOnlyToTheNodeThatHoldsTheDevice) {
  RedisBus c{options(redis_.server.port(), "c")};
  std::atomic<int> barrier_c{0};
  c.set_user_changed_sink([&](const std::string&, uint32_t) { ++barrier_c; });
  ASSERT_TRUE(a.start() && b.start() && c.start());
  auto bob = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);
  auto routed_to_b = [&] {
    std::vector<std::string> nodes;
    return a.routes().find(DeviceRef{"bob", 1}, nodes) == DeviceRoutes::Where::kNodes &&
           nodes == std::vector<std::string>{"b"} && a.routes().complete();
  };
  ASSERT_TRUE(await(routed_to_b));
  const uint64_t b_before = b.device_events_received(), c_before = c.device_events_received();
  const uint64_t a_broadcast = a.broadcast();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(a.publish(DeviceRef{"bob", 1}, sample())) << "held on another node";
  a.announce_user_changed("barrier");
  ASSERT_TRUE(await([&] { return bob->count() == 5 && barrier_c == 1; })) << bob->count();
  EXPECT_EQ(b.device_events_received() - b_before, 5u);
  EXPECT_EQ(c.device_events_received() - c_before, 0u) << "none of bob's events reached c";
  EXPECT_EQ(a.routed(), 5u);
  EXPECT_EQ(a.broadcast(), a_broadcast);

  // A device connected nowhere: its event goes to no node (every node takes kMissed, which
  // heals a connect that raced it).
  ASSERT_TRUE(a.routes().may_drop());
  EXPECT_FALSE(a.publish(DeviceRef{"bob", 2}, sample()));
  EXPECT_EQ(a.broadcast(), a_broadcast);
  EXPECT_EQ(a.sent_nowhere(), 1u);
  a.announce_user_changed("barrier");
  ASSERT_TRUE(await([&] { return barrier_c == 2; }));
  EXPECT_EQ(c.device_events_received() - c_before, 0u);
  EXPECT_EQ(b.device_events_received() - b_before, 5u) << "nor b";

  // Detached: the view forgets it, and its events go nowhere too.
  b.detach(DeviceRef{"bob", 1}, bob.get());
  ASSERT_TRUE(await([&] {
    std::vector<std::string> nodes;
    return a.routes().find(DeviceRef{"bob", 1}, nodes) == DeviceRoutes::Where::kNowhere;
  }));
  EXPECT_FALSE(a.publish(DeviceRef{"bob", 1}, sample()));
  EXPECT_EQ(a.sent_nowhere(), 2u);
  EXPECT_EQ(a.broadcast(), a_broadcast);
  c.stop();
}

// Typing and presence (publish_user) go to the nodes of the user's devices only, and nowhere
// when a complete view knows none.
TEST_F(RedisBusNodes, UserEventsGoOnlyToTheNodesOfTheUsersDevices) {
  RedisBus c{options(redis_.server.port(), "c")};
  std::atomic<int> barrier_b{0}, barrier_c{0};
  b.set_user_changed_sink([&](const std::string&, uint32_t) { ++barrier_b; });
  c.set_user_changed_sink([&](const std::string&, uint32_t) { ++barrier_c; });
  ASSERT_TRUE(a.start() && b.start() && c.start());
  auto bob = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);
  ASSERT_TRUE(await([&] {
    std::vector<std::string> nodes;
    return a.routes().find_user("bob", nodes) == DeviceRoutes::Where::kNodes;
  }));
  const uint64_t b_before = b.device_events_received(), c_before = c.device_events_received();
  a.publish_user("bob", sample());
  a.publish_user("nobody", sample());
  a.announce_user_changed("barrier");
  ASSERT_TRUE(await([&] { return bob->count() == 1 && barrier_b == 1 && barrier_c == 1; }));
  EXPECT_EQ(b.device_events_received() - b_before, 1u) << "bob's typing";
  EXPECT_EQ(c.device_events_received() - c_before, 0u) << "neither bob's typing nor nobody's";
  c.stop();
}

// A node started after another attached its devices learns where they are from its roll
// call (the other node answers with its whole set).
TEST_F(RedisBusNodes, ANodeStartedLaterLearnsTheOthersDevicesByRollCall) {
  ASSERT_TRUE(b.start());
  auto bob = std::make_shared<Recorder>(), carol = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);
  b.attach(DeviceRef{"carol", 4}, carol);
  ASSERT_TRUE(a.start());
  ASSERT_TRUE(await([&] { return a.routes().complete() && a.routes().devices() == 2; }))
      << a.routes().devices();
  std::vector<std::string> nodes;
  EXPECT_EQ(a.routes().find(DeviceRef{"carol", 4}, nodes), DeviceRoutes::Where::kNodes);
  EXPECT_EQ(nodes, std::vector<std::string>{"b"});
  EXPECT_TRUE(a.publish(DeviceRef{"carol", 4}, sample()));
  EXPECT_TRUE(await([&] { return carol->count() == 1; }));
}

// A routed event that reaches a node which no longer holds the device (it moved, and the
// sender's view was one hop behind) is sent on to every node, so its new node delivers it.
TEST_F(RedisBusNodes, ARoutedEventForADeviceThatMovedIsSentOnToEveryNode) {
  ASSERT_TRUE(a.start() && b.start());
  auto bob = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);  // bob is on b; a stale view would name a
  auto raw = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                    std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(raw);
  std::string payload;
  put_str(payload, "z");  // from a node that is neither
  RedisBus::encode(payload, RedisBus::Event{RedisBus::Target::kRouted, DeviceRef{"bob", 1}, sample()});
  auto published = (*raw)->command({"PUBLISH", "{tern:bus}:a", payload});
  ASSERT_TRUE(published);
  ASSERT_EQ((*published)->type, REDIS_REPLY_INTEGER);
  EXPECT_EQ((*published)->integer, 1) << "a's subscriber holds its own channel";
  ASSERT_TRUE(await([&] { return bob->count() == 1; }));
  EXPECT_EQ(bob->seen[0]->seq, sample()->seq);
}

// One connection per device across nodes: a device that connects to b while its older
// connection on a is still open (a half-open TCP connection a has not noticed) has the old
// one told replaced() on a, and its events follow the new one at once.
TEST_F(RedisBusNodes, ADeviceThatConnectsToAnotherNodeIsReplacedOnTheOldOne) {
  RedisBus c{options(redis_.server.port(), "c")};
  std::atomic<int> barrier_b{0};
  b.set_user_changed_sink([&](const std::string&, uint32_t) { ++barrier_b; });
  ASSERT_TRUE(a.start() && b.start() && c.start());
  auto old_one = std::make_shared<Recorder>(), new_one = std::make_shared<Recorder>();
  a.attach(DeviceRef{"bob", 1}, old_one);
  auto held_by = [](RedisBus& bus, const std::vector<std::string>& want) {
    std::vector<std::string> nodes;
    return bus.routes().find(DeviceRef{"bob", 1}, nodes) == DeviceRoutes::Where::kNodes && nodes == want;
  };
  ASSERT_TRUE(await([&] { return held_by(b, {"a"}) && held_by(c, {"a"}); }));
  b.attach(DeviceRef{"bob", 1}, new_one);
  ASSERT_TRUE(await([&] { return old_one->replaced_count == 1; })) << "a learned of the newer connection";
  // a (which held the device) and c (whose routes named a) tell b that bob's events went
  // elsewhere until then: b's connection reads its inbox again, once per such node.
  ASSERT_TRUE(await([&] { return new_one->missed_count == 2; })) << new_one->missed_count;
  EXPECT_EQ(old_one->missed_count, 0);
  // a's device events now go to b only (the old connection is closing and gets nothing).
  EXPECT_TRUE(a.publish(DeviceRef{"bob", 1}, sample()));
  ASSERT_TRUE(await([&] { return new_one->count() == 1; }));
  EXPECT_EQ(old_one->count(), 0u);
  // A routed event that reaches a for bob meanwhile (a third node's view a hop behind) is
  // sent on to every node, so to b.
  auto raw = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                    std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(raw);
  std::string payload;
  put_str(payload, "z");
  RedisBus::encode(payload, RedisBus::Event{RedisBus::Target::kRouted, DeviceRef{"bob", 1}, sample()});
  ASSERT_TRUE((*raw)->command({"PUBLISH", "{tern:bus}:a", payload}));
  ASSERT_TRUE(await([&] { return new_one->count() == 2; }));
  EXPECT_EQ(old_one->count(), 0u);
  // The old connection detaches as it closes; b forgets a's pair and keeps its own, and the
  // registry keeps b's entry (bob stays online).
  EXPECT_EQ(a.detach(DeviceRef{"bob", 1}, old_one.get()), 1u) << "b's registry entry counts";
  EXPECT_TRUE(a.online("bob"));
  a.announce_user_changed("barrier");
  ASSERT_TRUE(await([&] { return barrier_b == 1; }));
  EXPECT_EQ(new_one->replaced_count, 0) << "the older announcement never closes the newer connection";
  EXPECT_TRUE(await([&] {
    std::vector<std::string> nodes;
    return b.routes().find(DeviceRef{"bob", 1}, nodes) == DeviceRoutes::Where::kNowhere;
  })) << "only b holds it";
  EXPECT_EQ(b.device_events_received(), 2u);
  EXPECT_EQ(new_one->missed_count, 2) << "no other node owed it";
  c.stop();
}

// What a raw subscriber of a node's channel receives from node `from`, event by event, until a
// kRouted (at most 10 pushes; a failure is recorded if it never comes or a batch is malformed).
std::vector<RedisBus::Event> events_until_routed(store::redis::RedisConnection& listener, const char* from) {
  std::vector<RedisBus::Event> out;
  for (int i = 0; i < 10 && (out.empty() || out.back().target != RedisBus::Target::kRouted); ++i) {
    auto m = listener.read_push();
    if (!m) {
      ADD_FAILURE() << "the channel got " << out.size() << " events and no kRouted";
      return out;
    }
    const redisReply* p = m->get();
    if (p->type != REDIS_REPLY_ARRAY || p->elements != 3 || std::string_view(p->element[0]->str) != "message") continue;
    ByteReader r{std::string_view(p->element[2]->str, p->element[2]->len)};
    EXPECT_EQ(r.str(), from);
    if (!RedisBus::decode(r.in, out)) ADD_FAILURE() << "a malformed batch";
  }
  return out;
}

// Which connection is newer is decided by the starts the announcements carry, not by the
// order they arrive in: an announcement of an older connection elsewhere (or of one from a
// node that sends no start) leaves the connection here open; a newer one closes it. Each
// announcing node that sends a start (and so knows kMissed) is told kMissed, since b held the
// device; one that sends none (an older version, which would refuse it) is not.
TEST_F(RedisBusNodes, OnlyANewerConnectionElsewhereReplacesTheOneHere) {
  auto listener = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                         std::chrono::milliseconds(500), std::chrono::milliseconds(2000));
  ASSERT_TRUE(listener);
  ASSERT_TRUE((*listener)->command({"SUBSCRIBE", "{tern:bus}:z"}));  // as node z would
  ASSERT_TRUE(b.start());
  auto here = std::make_shared<Recorder>();
  const int64_t before_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  b.attach(DeviceRef{"bob", 1}, here);
  auto raw = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                    std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(raw);
  auto announce = [&](int64_t since_us, DeviceRef device = DeviceRef{"bob", 1}) {
    auto n = std::make_shared<Notification>();
    n->seq = static_cast<Seq>(since_us);
    std::string payload;
    put_str(payload, "z");
    RedisBus::encode(payload, RedisBus::Event{RedisBus::Target::kAttached, std::move(device), n});
    auto published = (*raw)->command({"PUBLISH", "tern:bus", payload});
    return published && (*published)->type == REDIS_REPLY_INTEGER && (*published)->integer >= 1;
  };
  ASSERT_TRUE(announce(before_us - 1000000));  // a second older
  ASSERT_TRUE(announce(0));                    // no start: a node without this rule
  ASSERT_TRUE(await([&] {
    std::vector<std::string> nodes;
    return b.routes().find(DeviceRef{"bob", 1}, nodes) == DeviceRoutes::Where::kNodes;
  }));
  EXPECT_EQ(here->replaced_count, 0);
  ASSERT_TRUE(announce(before_us + 60000000));  // a minute newer
  ASSERT_TRUE(await([&] { return here->replaced_count == 1; }));
  // b replaces the connection before it queues the kMissed it owes z: z's next event, once
  // handled (its route visible), says the newer announcement was handled whole.
  ASSERT_TRUE(announce(0, DeviceRef{"gina", 1}));  // no start: owed nothing
  ASSERT_TRUE(await([&] {
    std::vector<std::string> nodes;
    return b.routes().find(DeviceRef{"gina", 1}, nodes) == DeviceRoutes::Where::kNodes;
  }));
  b.publish(DeviceRef{"bob", 1}, sample());  // a local delivery would be synchronous
  EXPECT_EQ(here->count(), 0u) << "nothing more for the connection that moved";
  // What reached z's channel, in order: a kMissed for each announcement with a start (the
  // older one, then the newer one), none for the one without; then the routed event.
  std::vector<RedisBus::Target> to_z;
  for (const auto& e : events_until_routed(**listener, "b")) to_z.push_back(e.target);
  EXPECT_EQ(to_z, (std::vector<RedisBus::Target>{RedisBus::Target::kMissed, RedisBus::Target::kMissed,
                                                 RedisBus::Target::kRouted}));
}

// A node that sent a device's event nowhere and then learns that the device connected to
// another node tells that node kMissed (its session may have read its inbox before the event
// was committed); a node that dropped nothing for it tells nothing.
TEST_F(RedisBusNodes, ANodeThatSentADevicesEventNowhereTellsItsNewNodeToReadAgain) {
  RedisBus c{options(redis_.server.port(), "c")};
  std::atomic<int> barrier_b{0}, barrier_c{0};
  b.set_user_changed_sink([&](const std::string&, uint32_t) { ++barrier_b; });
  c.set_user_changed_sink([&](const std::string&, uint32_t) { ++barrier_c; });
  ASSERT_TRUE(a.start() && b.start() && c.start());
  ASSERT_TRUE(await([&] { return a.routes().may_drop() && c.routes().may_drop(); }));
  EXPECT_FALSE(a.publish(DeviceRef{"bob", 1}, sample()));
  EXPECT_EQ(a.sent_nowhere(), 1u);
  auto bob = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);
  ASSERT_TRUE(await([&] { return bob->missed_count == 1; }));
  // c has taken in b's kAttached (b's later event reached it); whatever c owed for it, c
  // published before its own barrier, which b receives after it.
  b.announce_user_changed("after-attach");
  ASSERT_TRUE(await([&] { return barrier_c == 1; }));
  c.announce_user_changed("c-done");
  a.announce_user_changed("a-done");
  ASSERT_TRUE(await([&] { return barrier_b == 2; }));
  EXPECT_EQ(bob->missed_count, 1) << "from a only: c sent nothing of bob's nowhere";
  EXPECT_TRUE(a.publish(DeviceRef{"bob", 1}, sample())) << "routed to b now";
  ASSERT_TRUE(await([&] { return bob->count() == 1; }));
  EXPECT_EQ(a.sent_nowhere(), 1u);
  c.stop();
}

// Which drops are owed, against hand-made announcements of a node "z" (a connection named like
// a node, so it counts as live): a set without kSetKnowsMissed keeps every event going to every
// node; with it, events for devices nowhere are dropped. A kAttached whose start is later than
// the drop (beyond the clock skew) is owed nothing; one whose start came before it is owed a
// kMissed; a device first heard of in a set (its kAttached missed) is owed one if it was dropped.
TEST_F(RedisBusNodes, OnlyADropAfterTheConnectionsStartIsOwedAKMissed) {
  auto listener = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                         std::chrono::milliseconds(500), std::chrono::milliseconds(2000));
  ASSERT_TRUE(listener);
  ASSERT_TRUE((*listener)->command({"CLIENT", "SETNAME", "tern-bus:z"}));
  ASSERT_TRUE((*listener)->command({"SUBSCRIBE", "{tern:bus}:z"}));
  ASSERT_TRUE(b.start());
  auto raw = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                    std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(raw);
  auto from_z = [&](RedisBus::Target target, DeviceRef device, std::shared_ptr<Notification> n) {
    std::string payload;
    put_str(payload, "z");
    RedisBus::encode(payload, RedisBus::Event{target, std::move(device), std::move(n)});
    auto published = (*raw)->command({"PUBLISH", "tern:bus", payload});
    return published && (*published)->type == REDIS_REPLY_INTEGER && (*published)->integer >= 1;
  };
  auto set = [&](std::vector<DeviceRef> devices, Seq version) {
    auto n = std::make_shared<Notification>();
    n->seq = version;
    n->frame = std::make_shared<const std::string>(DeviceRoutes::encode_set(devices));
    return from_z(RedisBus::Target::kNodeSet, DeviceRef{}, n);
  };
  auto attached = [&](DeviceRef device, int64_t since_us) {
    auto n = std::make_shared<Notification>();
    n->seq = static_cast<Seq>(since_us);
    return from_z(RedisBus::Target::kAttached, std::move(device), n);
  };

  ASSERT_TRUE(set({}, 0));  // a node of the version before: it would not understand kMissed
  ASSERT_TRUE(await([&] { return b.routes().complete(); }));
  EXPECT_FALSE(b.routes().may_drop());
  EXPECT_FALSE(b.publish(DeviceRef{"erin", 1}, sample()));
  EXPECT_EQ(b.broadcast(), 1u);
  EXPECT_EQ(b.sent_nowhere(), 0u);

  ASSERT_TRUE(set({}, RedisBus::kSetKnowsMissed));
  ASSERT_TRUE(await([&] { return b.routes().may_drop(); }));
  const int64_t before_drops = b.clock_us();
  EXPECT_FALSE(b.publish(DeviceRef{"bob", 1}, sample()));
  EXPECT_FALSE(b.publish(DeviceRef{"carol", 1}, sample()));
  EXPECT_EQ(b.sent_nowhere(), 2u);
  EXPECT_EQ(b.broadcast(), 1u);

  ASSERT_TRUE(attached(DeviceRef{"bob", 1}, b.clock_us() + 60'000'000));  // started a minute after the drop
  ASSERT_TRUE(attached(DeviceRef{"dave", 1}, before_drops));            // never dropped
  ASSERT_TRUE(attached(DeviceRef{"bob", 1}, before_drops));             // started before the drop: owed
  // carol/1 and frank/1 first heard of in a set: carol's event was dropped, frank's was not.
  ASSERT_TRUE(set({DeviceRef{"bob", 1}, DeviceRef{"dave", 1}, DeviceRef{"carol", 1}, DeviceRef{"frank", 1}},
                  RedisBus::kSetKnowsMissed));
  // b reads z's events in order on one thread and makes a set's devices visible before it
  // queues their kMissed: once gina (never dropped, owed nothing) is visible, the set before
  // her has been handled whole, and what it owes is queued ahead of the publish below.
  ASSERT_TRUE(attached(DeviceRef{"gina", 1}, before_drops));
  ASSERT_TRUE(await([&] {
    std::vector<std::string> nodes;
    return b.routes().find(DeviceRef{"gina", 1}, nodes) == DeviceRoutes::Where::kNodes;
  }));
  std::vector<std::string> frank_at;
  EXPECT_EQ(b.routes().find(DeviceRef{"frank", 1}, frank_at), DeviceRoutes::Where::kNodes);
  EXPECT_TRUE(b.publish(DeviceRef{"bob", 1}, sample())) << "routed to z: ends what z's channel is read for";
  std::vector<std::pair<RedisBus::Target, std::string>> to_z;
  for (const auto& e : events_until_routed(**listener, "b")) to_z.emplace_back(e.target, e.device.user);
  using T = RedisBus::Target;
  EXPECT_EQ(to_z, (std::vector<std::pair<T, std::string>>{{T::kMissed, "bob"}, {T::kMissed, "carol"}, {T::kRouted, "bob"}}));
}

// --redis-route-devices 0 (a rolling upgrade): the node announces nothing and sends every
// device event to every node.
TEST_F(RedisBusNodes, WithoutRoutesANodeAnnouncesNothingAndSendsToEveryNode) {
  RedisBusOptions o = options(redis_.server.port(), "c");
  o.route_devices = false;
  RedisBus c{o};
  std::atomic<int> barrier_b{0};
  b.set_user_changed_sink([&](const std::string&, uint32_t) { ++barrier_b; });
  ASSERT_TRUE(a.start() && b.start() && c.start());
  auto bob = std::make_shared<Recorder>(), carol = std::make_shared<Recorder>();
  b.attach(DeviceRef{"bob", 1}, bob);
  c.attach(DeviceRef{"carol", 1}, carol);
  ASSERT_TRUE(await([&] {
    std::vector<std::string> nodes;
    return a.routes().find(DeviceRef{"bob", 1}, nodes) == DeviceRoutes::Where::kNodes;
  }));
  // c announces nothing: b learns of it from its liveness check only (until then b would take
  // its view for complete and drop carol's events: the gap docs/scaling.md names for a node
  // that starts without routes or of an older version).
  ASSERT_TRUE(await([&] {
    const auto waiting = b.routes().waiting_for();
    return std::find(waiting.begin(), waiting.end(), "c") != waiting.end();
  }));
  const uint64_t a_before = a.device_events_received();
  EXPECT_FALSE(c.publish(DeviceRef{"bob", 1}, sample())) << "c does not route";
  c.announce_user_changed("barrier");
  ASSERT_TRUE(await([&] { return bob->count() == 1 && barrier_b == 1; }));
  EXPECT_EQ(c.routed(), 0u);
  EXPECT_EQ(c.broadcast(), 1u);
  EXPECT_EQ(a.device_events_received() - a_before, 1u) << "to every node";
  std::vector<std::string> nodes;
  EXPECT_NE(b.routes().find(DeviceRef{"carol", 1}, nodes), DeviceRoutes::Where::kNodes)
      << "c announced nothing of carol";
  EXPECT_FALSE(b.routes().complete()) << "c, live, never sends its set";
  EXPECT_FALSE(b.publish(DeviceRef{"carol", 1}, sample())) << "so carol's events go to every node";
  EXPECT_TRUE(await([&] { return carol->count() == 1; }));
  c.stop();
}

// A routed event whose node channel no subscriber heard (its node is gone, and the liveness
// check has not seen it yet) is sent again to every node. Node "z" here is a connection that
// is named like a node and subscribed elsewhere (so it counts as live) and announced bob/1 but
// does not hear its own channel; bob/1 is really on c, which does not announce (route_devices
// off).
TEST_F(RedisBusNodes, ARoutedEventThatNoNodeHeardIsSentToEveryNode) {
  RedisBusOptions o = options(redis_.server.port(), "c");
  o.route_devices = false;
  RedisBus c{o};
  ASSERT_TRUE(a.start() && c.start());
  auto bob = std::make_shared<Recorder>();
  c.attach(DeviceRef{"bob", 1}, bob);
  auto z = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                  std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(z);
  ASSERT_TRUE((*z)->command({"CLIENT", "SETNAME", "tern-bus:z"}));
  ASSERT_TRUE((*z)->command({"SUBSCRIBE", "elsewhere"}));
  auto pub = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                    std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(pub);
  std::string payload;
  put_str(payload, "z");
  auto set = std::make_shared<Notification>();
  set->frame = std::make_shared<const std::string>(DeviceRoutes::encode_set({DeviceRef{"bob", 1}}));
  RedisBus::encode(payload, RedisBus::Event{RedisBus::Target::kNodeSet, DeviceRef{}, set});
  ASSERT_TRUE((*pub)->command({"PUBLISH", "tern:bus", payload}));
  ASSERT_TRUE(await([&] {
    std::vector<std::string> nodes;
    return a.routes().find(DeviceRef{"bob", 1}, nodes) == DeviceRoutes::Where::kNodes &&
           nodes == std::vector<std::string>{"z"};
  }));
  EXPECT_TRUE(a.publish(DeviceRef{"bob", 1}, sample()));
  ASSERT_TRUE(await([&] { return bob->count() == 1; })) << "sent again to every node after z heard nothing";
  EXPECT_EQ(a.routed(), 1u);
  c.stop();
}

// Batches to node channels between two broadcast events are grouped per node (one PUBLISH per
// node), and each node still sees its events and the broadcast ones in queue order.
TEST(RedisBusCodec, EventsToNodesAreGroupedPerNodeBetweenBroadcasts) {
  auto to = [](const char* node, uint32_t device) {
    return RedisBus::Event{RedisBus::Target::kRouted, DeviceRef{"bob", device}, sample(), node};
  };
  std::deque<RedisBus::Event> events{
      to("n2", 1), to("n3", 2), to("n2", 3),
      RedisBus::Event{RedisBus::Target::kDevices, DeviceRef{"alice", 0}, std::make_shared<Notification>()},
      to("n3", 4), to("n2", 5)};
  const auto out = RedisBus::batches(events, /*resync=*/false, "n1");
  const std::vector<std::string> channels{"{tern:bus}:n2", "{tern:bus}:n3", "tern:bus", "{tern:bus}:n3",
                                          "{tern:bus}:n2"};
  const std::vector<std::vector<uint32_t>> devices{{1, 3}, {2}, {0}, {4}, {5}};
  ASSERT_EQ(out.size(), channels.size());
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].channel, channels[i]) << i;
    EXPECT_EQ(out[i].events, devices[i].size()) << i;
    ByteReader r{out[i].payload};
    EXPECT_EQ(r.str(), "n1");
    std::vector<RedisBus::Event> got;
    ASSERT_TRUE(RedisBus::decode(r.in, got)) << i;
    ASSERT_EQ(got.size(), devices[i].size()) << i;
    for (size_t j = 0; j < got.size(); ++j) EXPECT_EQ(got[j].device.device, devices[i][j]) << i << "/" << j;
  }
}

}  // namespace
}  // namespace tern::bus
