// RedisBus: presence across nodes: the counts of a user's devices on every node (the
// registry), the changes (Bus::publish_presence, on a channel of their own), and the mends of
// the entries of a node that left the bus or started again.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "base/byte_codec.h"
#include "base/clock.h"
#include "base/metrics.h"
#include "bus/redis/redis_bus.h"
#include "bus/redis/node_ring.h"
#include "bus/redis/redis_bus_fixture.h"
#include "store/redis/redis_cluster.h"
#include "store/redis/redis_connection.h"

namespace tern::bus {
namespace {

using namespace bustest;

struct Seen {
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> changes;  // user, frame
  Bus::PresenceSink sink() {
    return [this](const std::string& user, std::shared_ptr<const Notification> n) {
      std::lock_guard lock(mu);
      changes.emplace_back(user, n && n->frame ? *n->frame : std::string("<no frame>"));
    };
  }
  size_t size() {
    std::lock_guard lock(mu);
    return changes.size();
  }
};

std::shared_ptr<const Notification> presence(const std::string& frame) {
  auto n = std::make_shared<Notification>();
  n->kind = Notification::Kind::kFrame;
  n->droppable = true;
  n->frame = std::make_shared<const std::string>(frame);
  return n;
}

// A presence change published by one node reaches the other nodes' presence sink, frame and
// all, and not its own. It goes on kPresenceChannel: a node of an older version, subscribed to
// `tern:bus` and its own channel only, never receives an event it could not decode (it would
// refuse the whole batch).
TEST_F(RedisBusNodes, APresenceChangeReachesTheOtherNodesOnItsOwnChannel) {
  RedisBus c{options(redis_.server.port(), "c")};
  Seen seen_a, seen_b, seen_c;
  a.set_presence_sink(seen_a.sink());
  b.set_presence_sink(seen_b.sink());
  c.set_presence_sink(seen_c.sink());
  auto old_node = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                         std::chrono::milliseconds(500), std::chrono::milliseconds(300));
  ASSERT_TRUE(old_node);
  ASSERT_TRUE((*old_node)->command({"SUBSCRIBE", "tern:bus", "{tern:bus}:old"}));
  ASSERT_TRUE(a.start() && b.start() && c.start());

  a.publish_presence("alice", presence(R"({"type":"presence","user":"alice","online":true})"));
  a.announce_user_changed("alice");  // a broadcast event after it, for the old node's reader below
  ASSERT_TRUE(await([&] { return seen_b.size() == 1 && seen_c.size() == 1; }));
  for (Seen* s : {&seen_b, &seen_c}) {
    std::lock_guard lock(s->mu);
    EXPECT_EQ(s->changes[0].first, "alice");
    EXPECT_EQ(s->changes[0].second, R"({"type":"presence","user":"alice","online":true})");
  }
  EXPECT_EQ(seen_a.size(), 0u) << "a node does not hear its own change";

  // The old node's connection gets the device announcement and nothing it cannot decode.
  bool announced = false;
  for (int i = 0; i < 50 && !announced; ++i) {
    auto m = (*old_node)->read_push();
    ASSERT_TRUE(m) << "the broadcast never reached the old node";
    const redisReply* p = m->get();
    if (p->type != REDIS_REPLY_ARRAY || p->elements != 3 || std::string_view(p->element[0]->str) != "message") continue;
    EXPECT_NE(std::string_view(p->element[1]->str, p->element[1]->len), RedisBus::kPresenceChannel);
    std::string_view payload(p->element[2]->str, p->element[2]->len);
    ByteReader r{payload};
    const std::string from = r.str();  // every node publishes (roll calls, its set)
    std::vector<RedisBus::Event> events;
    ASSERT_TRUE(RedisBus::decode(r.in, events));
    for (const auto& e : events) {
      EXPECT_NE(e.target, RedisBus::Target::kPresence);
      announced |= from == "a" && e.target == RedisBus::Target::kDevices;
    }
  }
  EXPECT_TRUE(announced);
  c.stop();
}

// The presence channel is in the slot of the others: one publisher turn's presence events
// are one PUBLISH on it, beside the turn's other batches.
TEST(RedisBusCodec, PresenceEventsGoOnThePresenceChannelInTheBusSlot) {
  std::deque<RedisBus::Event> events{
      RedisBus::Event{RedisBus::Target::kPresence, DeviceRef{"alice", 0}, presence("on")},
      RedisBus::Event{RedisBus::Target::kDevice, DeviceRef{"bob", 7}, sample()},
      RedisBus::Event{RedisBus::Target::kPresence, DeviceRef{"carol", 0}, presence("off")}};
  const auto out = RedisBus::batches(events, /*resync=*/false, "n1");
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].channel, RedisBus::kPresenceChannel);
  EXPECT_EQ(out[1].channel, "tern:bus");
  EXPECT_EQ(out[2].channel, RedisBus::kPresenceChannel);
  EXPECT_EQ(store::redis::key_slot(RedisBus::kPresenceChannel), store::redis::key_slot("{tern:bus}:n2"));
  for (const auto& b : out) EXPECT_EQ(b.events, 1u);
}

// Presence counts cover every node: the first device of a user to attach anywhere sees 1,
// the last to detach anywhere sees 0 (the registry is written and counted in one script).
TEST_F(RedisBusNodes, AttachAndDetachCountTheUsersDevicesOnEveryNode) {
  ASSERT_TRUE(a.start() && b.start());
  auto d1 = std::make_shared<Recorder>(), d2 = std::make_shared<Recorder>(), d2b = std::make_shared<Recorder>();
  EXPECT_EQ(a.attach(DeviceRef{"alice", 1}, d1), 1u);
  EXPECT_EQ(b.attach(DeviceRef{"alice", 2}, d2), 2u);
  EXPECT_EQ(b.attach(DeviceRef{"alice", 2}, d2b), 2u) << "a reconnect of the same device is not a second device";
  EXPECT_EQ(b.detach(DeviceRef{"alice", 2}, d2.get()), 2u) << "the replaced endpoint's detach removes nothing";
  EXPECT_EQ(a.detach(DeviceRef{"alice", 1}, d1.get()), 1u) << "alice is still online on b";
  EXPECT_TRUE(a.online("alice"));
  EXPECT_EQ(b.detach(DeviceRef{"alice", 2}, d2b.get()), 0u);
  EXPECT_FALSE(a.online("alice"));
  EXPECT_FALSE(b.online("alice"));
}

// The loop-side calls: the endpoint is attached at once (it receives), and the cross-node
// count arrives later on the bus's counter thread, not the caller's, with an order that grows
// from call to call across both nodes (Bus::Counted: how Presence puts two nodes' changes of
// one user in their true order).
TEST_F(RedisBusNodes, AsyncAttachAndDetachCountOnTheCounterThread) {
  ASSERT_TRUE(a.start() && b.start());
  std::vector<uint64_t> orders;
  auto counted = [&orders](auto call) {
    auto p = std::make_shared<std::promise<std::tuple<size_t, std::thread::id, uint64_t>>>();
    auto f = p->get_future();
    call([p](size_t n, uint64_t order, bool added) {
      EXPECT_TRUE(added) << "a new device, or a detach";
      p->set_value({n, std::this_thread::get_id(), order});
    });
    EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    auto [n, thread, order] = f.get();
    orders.push_back(order);
    return std::pair<size_t, std::thread::id>{n, thread};
  };
  auto d1 = std::make_shared<Recorder>(), d2 = std::make_shared<Recorder>();
  auto [n1, t1] = counted([&](Bus::Counted c) { a.attach_async(DeviceRef{"alice", 1}, d1, std::move(c)); });
  EXPECT_EQ(n1, 1u);
  EXPECT_NE(t1, std::this_thread::get_id());
  EXPECT_EQ(counted([&](Bus::Counted c) { b.attach_async(DeviceRef{"alice", 2}, d2, std::move(c)); }).first, 2u);
  b.publish(DeviceRef{"alice", 1}, sample());  // delivered to a's endpoint through the bus
  EXPECT_TRUE(await([&] { return d1->count() == 1; }));
  EXPECT_EQ(counted([&](Bus::Counted c) { a.detach_async(DeviceRef{"alice", 1}, d1.get(), std::move(c)); }).first, 1u)
      << "alice is still online on b";
  EXPECT_EQ(counted([&](Bus::Counted c) { b.detach_async(DeviceRef{"alice", 2}, d2.get(), std::move(c)); }).first, 0u);
  EXPECT_FALSE(a.online("alice"));
  ASSERT_EQ(orders.size(), 4u);
  EXPECT_GT(orders[0], 0u);
  for (size_t i = 1; i < orders.size(); ++i) EXPECT_GT(orders[i], orders[i - 1]) << "call " << i;
  // The order's field went with the last entry: nothing of alice is left in Redis.
  auto probe = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                      std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(probe);
  auto exists = (*probe)->command({"EXISTS", "{r:alice}"});
  ASSERT_TRUE(exists);
  EXPECT_EQ((*exists)->integer, 0);
}

// An attach says whether the device counted already (Bus::Counted's `added`): a device that
// moves to another node while its entry from the first is unexpired, or connects again on
// one node before its old connection is closed, did; so Presence reports no second `online`.
TEST_F(RedisBusNodes, AnAttachSaysWhetherTheDeviceCountedAlready) {
  ASSERT_TRUE(a.start() && b.start());
  auto attach = [](RedisBus& bus, const DeviceRef& d, std::shared_ptr<Endpoint> e) {
    auto p = std::make_shared<std::promise<std::pair<size_t, bool>>>();
    auto f = p->get_future();
    bus.attach_async(d, std::move(e), [p](size_t n, uint64_t, bool added) { p->set_value({n, added}); });
    EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    return f.get();
  };
  auto first = std::make_shared<Recorder>(), again = std::make_shared<Recorder>(), moved = std::make_shared<Recorder>();
  EXPECT_EQ(attach(a, DeviceRef{"alice", 1}, first), (std::pair<size_t, bool>{1, true}));
  EXPECT_EQ(attach(a, DeviceRef{"alice", 1}, again), (std::pair<size_t, bool>{1, false})) << "its old connection counted";
  EXPECT_EQ(attach(b, DeviceRef{"alice", 1}, moved), (std::pair<size_t, bool>{1, false})) << "its entry from a counted";
  EXPECT_EQ(attach(b, DeviceRef{"alice", 2}, std::make_shared<Recorder>()), (std::pair<size_t, bool>{2, true}));
  EXPECT_EQ(b.detach(DeviceRef{"alice", 1}, moved.get()), 1u);
  EXPECT_EQ(attach(a, DeviceRef{"alice", 1}, std::make_shared<Recorder>()).second, true) << "its entry was removed";
}
// A device that takes its own connection over on another node: that node's kAttached (sent
// by its publisher thread) may close the connection here before its '+' (its counter thread)
// writes the registry entry. The closed connection's detach keeps the entry and hands it to
// the other node ('>'), whose '+' overwrites it: removing it would count 0, and subscribers
// would see the user go offline and come back online although a device was connected all
// along.
TEST_F(RedisBusNodes, TheDetachOfAConnectionThatMovedKeepsItsEntryForTheNewNode) {
  ASSERT_TRUE(a.start());
  auto old_conn = std::make_shared<Recorder>();
  ASSERT_EQ(a.attach(DeviceRef{"alice", 1}, old_conn), 1u);
  // b's announcement alone, a minute newer than a's connection, published as b's publisher
  // would; b's count is not made yet.
  auto raw = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                    std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(raw);
  auto n = std::make_shared<Notification>();
  n->seq = static_cast<Seq>(a.clock_us() + 60000000);
  std::string payload;
  put_str(payload, "b");
  RedisBus::encode(payload, RedisBus::Event{RedisBus::Target::kAttached, DeviceRef{"alice", 1}, n});
  ASSERT_TRUE((*raw)->command({"PUBLISH", "tern:bus", payload}));
  ASSERT_TRUE(await([&] { return old_conn->replaced_count == 1; })) << "a did not close its older connection";

  // The gateway's detach of the replaced connection: counted with the entry kept.
  auto p = std::make_shared<std::promise<size_t>>();
  auto f = p->get_future();
  a.detach_async(DeviceRef{"alice", 1}, old_conn.get(), [p](size_t count, uint64_t, bool) { p->set_value(count); });
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(f.get(), 1u) << "alice counted offline while her device moved";
  auto entry = (*raw)->command({"HGET", "{r:alice}", "1"});
  ASSERT_TRUE(entry);
  ASSERT_EQ((*entry)->type, REDIS_REPLY_STRING);
  EXPECT_EQ(std::string((*entry)->str, (*entry)->len).substr(0, 2), "b ") << "handed to b";
  EXPECT_TRUE(a.online("alice"));

  // b's count comes: the device counted already, so no second `online` either.
  ASSERT_TRUE(b.start());
  auto q = std::make_shared<std::promise<std::pair<size_t, bool>>>();
  auto g = q->get_future();
  b.attach_async(DeviceRef{"alice", 1}, std::make_shared<Recorder>(),
                 [q](size_t count, uint64_t, bool added) { q->set_value({count, added}); });
  ASSERT_EQ(g.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(g.get(), (std::pair<size_t, bool>{1, false}));
  entry = (*raw)->command({"HGET", "{r:alice}", "1"});
  ASSERT_TRUE(entry);
  ASSERT_EQ((*entry)->type, REDIS_REPLY_STRING);
  EXPECT_EQ(std::string((*entry)->str, (*entry)->len).substr(0, 2), "b ") << "b's own entry";
}

struct Changes {
  std::mutex mu;
  std::vector<std::pair<std::string, bool>> seen;  // user, online
  Bus::PresenceChangeSink sink() {
    return [this](const std::string& user, bool online, uint64_t order) {
      std::lock_guard lock(mu);
      seen.emplace_back(user, online);
      orders.push_back(order);
    };
  }
  std::vector<uint64_t> orders;  // each change's, under mu
  std::vector<std::pair<std::string, bool>> get() {
    std::lock_guard lock(mu);
    return seen;
  }
};

// The fields of a hash, sorted (empty if it cannot be read: the comparison then fails).
std::vector<std::string> hash_fields(uint16_t port, const std::string& key) {
  std::vector<std::string> fields;
  auto raw = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", port},
                                                    std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  if (!raw) return fields;
  auto r = (*raw)->command({"HKEYS", key});
  if (!r || (*r)->type != REDIS_REPLY_ARRAY) return fields;
  for (size_t i = 0; i < (*r)->elements; ++i) fields.emplace_back((*r)->element[i]->str, (*r)->element[i]->len);
  std::sort(fields.begin(), fields.end());
  return fields;
}

RedisBusOptions quick(uint16_t port, const char* node) {
  RedisBusOptions o;
  o.address = store::redis::RedisAddress{"127.0.0.1", port};
  o.node_id = node;
  o.node_check = std::chrono::milliseconds(100);
  o.node_gone_after = std::chrono::milliseconds(400);
  return o;
}

// Nodes a, b and c (quick()) on one redis-server, started in that order, with their presence
// changes recorded; c may be dropped and built again (a node that dies, or starts a new run). The
// buses are declared last: they go first, before the sinks they call and their Redis.
struct ThreeNodes {
  store::redis::testing::RedisServer redis;
  Changes on_a, on_b, on_c;
  std::unique_ptr<RedisBus> a, b, c;
  std::chrono::milliseconds gone_after{400};  // node_gone_after, set before start()
  RedisBusOptions options(const char* node) const {
    RedisBusOptions o = quick(redis.port(), node);
    o.node_gone_after = gone_after;
    return o;
  }
  void start() {
    ASSERT_TRUE(redis.start().ok());
    a = std::make_unique<RedisBus>(options("a"));
    b = std::make_unique<RedisBus>(options("b"));
    c = std::make_unique<RedisBus>(options("c"));
    a->set_presence_change_sink(on_a.sink());
    b->set_presence_change_sink(on_b.sink());
    c->set_presence_change_sink(on_c.sink());
    ASSERT_TRUE(a->start() && b->start() && c->start());
  }
  // Node `name` (held in `node`) dies and starts again, `attach` run on its new run before it
  // starts; once `seen` (the others hold its new set: they have seen the new run), `first`
  // stops (leave()) before its mend is due: a take-over test proves nothing otherwise.
  void restart_then_stop(std::unique_ptr<RedisBus>& node, const char* name,
                         const std::function<void(RedisBus&)>& attach, const std::function<bool()>& seen,
                         std::unique_ptr<RedisBus>& first) {
    node.reset();  // its entries stay
    node = std::make_unique<RedisBus>(options(name));
    attach(*node);
    const auto started = std::chrono::steady_clock::now();
    ASSERT_TRUE(node->start());
    ASSERT_TRUE(await(seen));
    ASSERT_LT(std::chrono::steady_clock::now() - started, gone_after)
        << "too slow to stop the first node before its mend was due: the test would prove nothing";
    EXPECT_GT(first->leave().count(), 0);
    first.reset();
  }
};

// Node c leaves the bus without detaching anything (as a SIGKILLed node does): once it has been
// absent from the liveness lists for node_gone_after, the registry entries of its devices are
// removed (by the first live node, in pipelines of 256), and a user left with no device
// anywhere is reported offline, once in all; a user with a device on another node is not.
TEST(RedisBusGone, ANodeThatLeftHasItsDevicesEntriesRemovedAndItsUsersReportedOffline) {
  ThreeNodes n;
  ASSERT_NO_FATAL_FAILURE(n.start());
  auto carol = std::make_shared<Recorder>(), dave1 = std::make_shared<Recorder>(), dave2 = std::make_shared<Recorder>();
  n.c->attach(DeviceRef{"carol", 1}, carol);
  n.c->attach(DeviceRef{"dave", 1}, dave1);
  n.b->attach(DeviceRef{"dave", 2}, dave2);
  // More than one pipeline's worth (256) of devices, on many slots.
  std::vector<std::shared_ptr<Recorder>> many;
  for (int i = 0; i < 300; ++i) {
    many.push_back(std::make_shared<Recorder>());
    n.c->attach(DeviceRef{"u" + std::to_string(i), 1}, many.back());
  }
  ASSERT_TRUE(await([&] { return n.a->routes().devices() == 303 && n.b->routes().devices() == 302; }))
      << n.a->routes().devices() << " " << n.b->routes().devices();
  ASSERT_TRUE(n.a->online("carol"));
  n.c.reset();  // stops its threads and closes its connections; its entries stay

  ASSERT_TRUE(await([&] { return !n.a->online("carol"); })) << "carol's entry outlived her node";
  std::vector<std::pair<std::string, bool>> all;
  ASSERT_TRUE(await([&] {
    all = n.on_a.get();
    auto more = n.on_b.get();
    all.insert(all.end(), more.begin(), more.end());
    return all.size() >= 301;
  })) << all.size();
  std::sort(all.begin(), all.end());
  std::vector<std::pair<std::string, bool>> expected{{"carol", false}};
  for (int i = 0; i < 300; ++i) expected.emplace_back("u" + std::to_string(i), false);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(all, expected) << "each user once, dave not (his device on b stays)";
  EXPECT_FALSE(n.a->online("u0"));
  EXPECT_FALSE(n.a->online("u299"));
  EXPECT_TRUE(n.a->online("dave")) << "dave's device on b stays";
  // Each reported change carries its order (Bus::Counted), for the receivers' Presence.
  for (Changes* on : {&n.on_a, &n.on_b}) {
    std::lock_guard lock(on->mu);
    for (uint64_t order : on->orders) EXPECT_GT(order, 0u);
  }
  // Dave's entry from c is gone too (a device of c), without a presence change; besides his
  // entry from b, his hash holds the field of the order ('v').
  EXPECT_EQ(hash_fields(n.redis.port(), "{r:dave}"), (std::vector<std::string>{"2", "v"}));
}

// A device takes its connection on a over to c, and c dies before its '+' wrote the device's
// registry entry: a's detach handed its entry to c ('>'), so the mend of c, once it counts as
// gone, removes it and reports the user offline, once. Kept as a's (which no node refreshes
// or mends), it stayed until its TTL (30 s) with no offline ever told.
TEST(RedisBusGone, ADeviceWhoseNewNodeDiesBeforeCountingItIsReportedOffline) {
  ThreeNodes n;
  ASSERT_NO_FATAL_FAILURE(n.start());
  auto old_conn = std::make_shared<Recorder>();
  ASSERT_EQ(n.a->attach(DeviceRef{"alice", 1}, old_conn), 1u);
  ASSERT_TRUE(await([&] { return n.b->routes().devices() == 1 && n.c->routes().complete(); }));
  // c's announcement alone, a minute newer than a's connection, as c's publisher sends it; c
  // dies before its count.
  auto raw = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", n.redis.port()},
                                                    std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(raw);
  auto note = std::make_shared<Notification>();
  note->seq = static_cast<Seq>(n.a->clock_us() + 60000000);
  std::string payload;
  put_str(payload, "c");
  RedisBus::encode(payload, RedisBus::Event{RedisBus::Target::kAttached, DeviceRef{"alice", 1}, note});
  ASSERT_TRUE((*raw)->command({"PUBLISH", "tern:bus", payload}));
  ASSERT_TRUE(await([&] { return old_conn->replaced_count == 1; })) << "a did not close its older connection";
  EXPECT_EQ(n.a->detach(DeviceRef{"alice", 1}, old_conn.get()), 1u) << "alice counted offline while her device moved";
  ASSERT_TRUE(await([&] { return n.b->routes().devices() == 1; }));
  n.c.reset();  // dies: alice's entry, now c's, stays

  std::vector<std::pair<std::string, bool>> all;
  ASSERT_TRUE(await([&] {
    all = n.on_a.get();
    auto more = n.on_b.get();
    all.insert(all.end(), more.begin(), more.end());
    return !all.empty();
  })) << "alice's entry outlived the node she moved to, with no offline told";
  EXPECT_EQ(all, (std::vector<std::pair<std::string, bool>>{{"alice", false}}));
  EXPECT_FALSE(n.a->online("alice"));
  EXPECT_EQ(hash_fields(n.redis.port(), "{r:alice}"), std::vector<std::string>{});
}

// Node c dies, and node a, first by name, is started again before c counts as gone: a never
// lists c, so it never sees it leave (nor holds its devices). b does, waits for a's mark
// while a is live, and removes c's entries itself node_gone_after later: carol is reported
// offline, once. (The same take-over covers a first node that dies as it sees c leave.)
TEST(RedisBusGone, ANodeThatLeftIsMendedByAnotherWhenTheFirstNeverSawItLeave) {
  ThreeNodes n;
  n.gone_after = std::chrono::seconds(1);  // room to restart a before it sees c leave, on a slow machine too
  ASSERT_NO_FATAL_FAILURE(n.start());
  auto carol = std::make_shared<Recorder>();
  n.c->attach(DeviceRef{"carol", 1}, carol);
  ASSERT_TRUE(await([&] { return n.a->routes().devices() == 1 && n.b->routes().devices() == 1; }));
  ASSERT_TRUE(await([&] { return n.b->routes().complete(); }));
  n.c.reset();  // dies: its entries stay
  const auto died = std::chrono::steady_clock::now();
  n.a.reset();
  n.a = std::make_unique<RedisBus>(n.options("a"));
  n.a->set_presence_change_sink(n.on_a.sink());
  ASSERT_TRUE(n.a->start());
  ASSERT_LT(std::chrono::steady_clock::now() - died, n.gone_after) << "a was not started again before c counted as gone";
  ASSERT_TRUE(await([&] { return n.a->routes().complete(); }));
  EXPECT_EQ(n.a->routes().devices(), 0u) << "a knows nothing of c";

  ASSERT_TRUE(await([&] { return !n.on_b.get().empty(); })) << "nobody removed c's entries";
  EXPECT_GE(std::chrono::steady_clock::now() - died, 2 * n.gone_after) << "b did not wait for a's mark";
  EXPECT_EQ(n.on_b.get(), (std::vector<std::pair<std::string, bool>>{{"carol", false}}));
  EXPECT_TRUE(n.on_a.get().empty());
  EXPECT_EQ(hash_fields(n.redis.port(), "{r:carol}"), std::vector<std::string>{});
}

// Node c dies and a new run of it (same id) is on the bus again before node_gone_after, so
// no node counts it gone (were one to, erin's new entry would go too). Its roll call says when
// the new run started: node_gone_after later (the time its devices have to reconnect), the
// first live node other than c removes the entries c's last run wrote (carol's; dave's from
// c, not his from b) and reports carol offline, once. An entry the new run wrote (erin
// connected to it again) is newer than that start and stays.
TEST(RedisBusGone, ANodeStartedAgainAtOnceHasTheEntriesOfItsLastRunRemoved) {
  ThreeNodes n;
  ASSERT_NO_FATAL_FAILURE(n.start());
  auto carol = std::make_shared<Recorder>(), dave1 = std::make_shared<Recorder>(), dave2 = std::make_shared<Recorder>(),
       erin = std::make_shared<Recorder>();
  n.c->attach(DeviceRef{"carol", 1}, carol);
  n.c->attach(DeviceRef{"dave", 1}, dave1);
  n.c->attach(DeviceRef{"erin", 1}, erin);
  n.b->attach(DeviceRef{"dave", 2}, dave2);
  ASSERT_TRUE(await([&] { return n.a->routes().devices() == 4 && n.b->routes().devices() == 3; }))
      << n.a->routes().devices() << " " << n.b->routes().devices();
  ASSERT_TRUE(await([&] { return n.a->routes().complete() && n.b->routes().complete(); }));  // both have read a list
  n.c.reset();  // its entries stay
  n.c = std::make_unique<RedisBus>(n.options("c"));
  auto erin_again = std::make_shared<Recorder>();
  n.c->attach(DeviceRef{"erin", 1}, erin_again);  // before its roll call: the order is fixed
  const auto started = std::chrono::steady_clock::now();  // before its roll call too
  ASSERT_TRUE(n.c->start());

  ASSERT_TRUE(await([&] { return !n.a->online("carol"); })) << "carol's entry from c's last run stayed";
  EXPECT_GE(std::chrono::steady_clock::now() - started, n.gone_after)
      << "removed before the devices had node_gone_after to reconnect";
  ASSERT_TRUE(await([&] { return n.on_a.get().size() + n.on_b.get().size() >= 1; }));
  auto all = n.on_a.get();
  auto more = n.on_b.get();
  all.insert(all.end(), more.begin(), more.end());
  EXPECT_EQ(all, (std::vector<std::pair<std::string, bool>>{{"carol", false}}));
  EXPECT_FALSE(n.on_a.get().empty()) << "a, first by name, removes them";
  EXPECT_TRUE(n.a->online("erin")) << "the new run's entry stays";
  EXPECT_TRUE(n.a->online("dave"));
  EXPECT_EQ(hash_fields(n.redis.port(), "{r:dave}"), (std::vector<std::string>{"2", "v"}))
      << "dave's entry from c's last run is removed";
  EXPECT_TRUE(await([&] { return n.a->routes().devices() == 2; })) << "c's set holds erin only, b's dave: "
                                                                << n.a->routes().devices();
}

// As above, but a, the node first by name that holds the mend of c's last run, stops (a
// rolling restart moving on) before the mend is due: b takes it over once a is leaving or
// gone, so carol is still reported offline, once, and not left online until her entry expires
// (registry_ttl, 30 s) with no change reported at all.
TEST(RedisBusGone, TheMendOfANewRunIsTakenOverWhenTheNodeHoldingItStops) {
  ThreeNodes n;
  n.gone_after = std::chrono::seconds(2);  // room to stop a before its mend is due, on a slow machine too
  ASSERT_NO_FATAL_FAILURE(n.start());
  auto carol = std::make_shared<Recorder>(), erin = std::make_shared<Recorder>();
  n.c->attach(DeviceRef{"carol", 1}, carol);
  n.c->attach(DeviceRef{"erin", 1}, erin);
  ASSERT_TRUE(await([&] { return n.a->routes().devices() == 2 && n.b->routes().devices() == 2; }));
  ASSERT_TRUE(await([&] { return n.a->routes().complete() && n.b->routes().complete(); }));
  auto erin_again = std::make_shared<Recorder>();
  // c's set (erin alone) follows its roll call.
  ASSERT_NO_FATAL_FAILURE(n.restart_then_stop(
      n.c, "c", [&](RedisBus& c) { c.attach(DeviceRef{"erin", 1}, erin_again); },
      [&] { return n.a->routes().devices() == 1 && n.b->routes().devices() == 1; }, n.a));

  ASSERT_TRUE(await([&] { return !n.on_b.get().empty(); })) << "nobody mended c's last run";
  EXPECT_EQ(n.on_b.get(), (std::vector<std::pair<std::string, bool>>{{"carol", false}}));
  EXPECT_EQ(hash_fields(n.redis.port(), "{r:carol}"), std::vector<std::string>{});
  EXPECT_TRUE(n.b->online("erin")) << "the new run's entry stays";
  EXPECT_TRUE(n.on_a.get().empty()) << "a stopped before its mend was due";
}

// Node a, first by name, starts only after c's last run died, so its routes hold none of
// c's devices and it queues no mend when c's new run calls the roll; b, which held carol on
// c, waits for a's mark while a is live, and makes the mend itself node_gone_after after it
// was due when no mark comes: carol is reported offline, once.
TEST(RedisBusGone, TheMendOfANewRunIsMadeByAnotherNodeWhenTheFirstHoldsNoneOfItsDevices) {
  ThreeNodes n;
  ASSERT_NO_FATAL_FAILURE(n.start());
  auto carol = std::make_shared<Recorder>();
  n.c->attach(DeviceRef{"carol", 1}, carol);
  ASSERT_TRUE(await([&] { return n.b->routes().devices() == 1 && n.b->routes().complete(); }));
  n.a.reset();
  n.c.reset();  // its entries stay
  n.a = std::make_unique<RedisBus>(n.options("a"));
  n.a->set_presence_change_sink(n.on_a.sink());
  ASSERT_TRUE(n.a->start());
  ASSERT_TRUE(await([&] { return n.a->routes().complete(); }));
  EXPECT_EQ(n.a->routes().devices(), 0u) << "a knows nothing of c's last run";
  n.c = std::make_unique<RedisBus>(n.options("c"));
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(n.c->start());

  ASSERT_TRUE(await([&] { return !n.on_b.get().empty(); })) << "nobody mended c's last run";
  EXPECT_GE(std::chrono::steady_clock::now() - started, 2 * n.gone_after) << "b did not wait for a's mark";
  EXPECT_EQ(n.on_b.get(), (std::vector<std::pair<std::string, bool>>{{"carol", false}}));
  EXPECT_TRUE(n.on_a.get().empty());
  EXPECT_EQ(hash_fields(n.redis.port(), "{r:carol}"), std::vector<std::string>{});
}

// Node a, started first, is started again; b and c started after it and never heard its first
// roll call, but its set (the answer to theirs) told them its run. So both see its new run
// for certain, and when b, first after a, stops before the mend is due, c takes it over.
TEST(RedisBusGone, ANodeThatStartedAfterTheRestartedOneTakesItsMendOverToo) {
  ThreeNodes n;
  n.gone_after = std::chrono::seconds(2);  // room to stop b before its mend is due
  ASSERT_NO_FATAL_FAILURE(n.start());
  auto carol = std::make_shared<Recorder>();
  n.a->attach(DeviceRef{"carol", 1}, carol);
  ASSERT_TRUE(await([&] { return n.b->routes().devices() == 1 && n.c->routes().devices() == 1; }));
  ASSERT_TRUE(await([&] { return n.b->routes().complete() && n.c->routes().complete(); }));
  // a's empty set follows its roll call.
  ASSERT_NO_FATAL_FAILURE(n.restart_then_stop(
      n.a, "a", [](RedisBus&) {}, [&] { return n.b->routes().devices() == 0 && n.c->routes().devices() == 0; },
      n.b));

  ASSERT_TRUE(await([&] { return !n.on_c.get().empty(); })) << "nobody mended a's last run";
  EXPECT_EQ(n.on_c.get(), (std::vector<std::pair<std::string, bool>>{{"carol", false}}));
  EXPECT_TRUE(n.on_b.get().empty()) << "b stopped before its mend was due";
  EXPECT_EQ(hash_fields(n.redis.port(), "{r:carol}"), std::vector<std::string>{});
}

// Every node calls the roll again after it lost its subscription (here: Redis closes every
// subscriber connection). A node that started after another never heard that node's roll
// call, but its set told of the run: the same value again is no restart, and nobody mends
// (each mend a script per device of that node that removes nothing), nor is reported offline.
TEST(RedisBusGone, RollCallsAfterAnOutageMendNothing) {
  ThreeNodes n;
  ASSERT_NO_FATAL_FAILURE(n.start());
  auto alice = std::make_shared<Recorder>(), bob = std::make_shared<Recorder>();
  n.a->attach(DeviceRef{"alice", 1}, alice);
  n.b->attach(DeviceRef{"bob", 1}, bob);
  ASSERT_TRUE(await([&] {
    return n.b->routes().devices() == 1 && n.c->routes().devices() == 2 && n.b->routes().complete() &&
           n.c->routes().complete();
  }));
  Counter& mends = MetricsRegistry::global().counter("tern_bus_run_mends_total", "");
  const uint64_t before = mends.value();
  auto admin = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", n.redis.port()},
                                                      std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(admin);
  auto killed = (*admin)->command({"CLIENT", "KILL", "TYPE", "pubsub"});
  ASSERT_TRUE(killed);
  ASSERT_EQ((*killed)->integer, 3);
  // Subscribed again (three nodes live in Redis's list), each has every other's set since:
  // the roll calls have come.
  ASSERT_TRUE(await([&] {
    auto list = (*admin)->command({"CLIENT", "LIST", "TYPE", "pubsub"});
    return list && (*list)->type == REDIS_REPLY_STRING &&
           live_nodes_from_client_list(std::string_view((*list)->str, (*list)->len)).size() == 3;
  }));
  ASSERT_TRUE(await([&] {
    return n.a->routes().complete() && n.b->routes().complete() && n.c->routes().complete();
  }));
  // A mend would come within twice node_gone_after of the roll calls (mend_run); wait five times.
  const auto until = std::chrono::steady_clock::now() + 5 * n.gone_after;
  while (std::chrono::steady_clock::now() < until && mends.value() == before)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(mends.value(), before) << "a node mended a run it had only not heard the roll call of";
  EXPECT_TRUE(n.on_a.get().empty());
  EXPECT_TRUE(n.on_b.get().empty());
  EXPECT_TRUE(n.c->online("alice"));
  EXPECT_TRUE(n.a->online("bob"));
}

// Node a stops with another node live (leave()): the detaches of its drain keep their
// registry entries and are not announced, so alice, who reconnects to b, is never counted
// offline, and nobody is reported offline at a's detaches. Carol, who does not come back, is
// reported offline once a counts as gone (the same for a new run of a: new_run). Without
// another node live the detaches remove their entries as before.
TEST(RedisBusGone, ALeavingNodesDetachesLeaveTheirEntriesForTheOthersToMend) {
  store::redis::testing::RedisServer redis;
  ASSERT_TRUE(redis.start().ok());
  auto a = std::make_unique<RedisBus>(quick(redis.port(), "a"));
  RedisBus b{quick(redis.port(), "b")};
  Changes on_b;
  b.set_presence_change_sink(on_b.sink());
  ASSERT_TRUE(a->start() && b.start());
  auto alice = std::make_shared<Recorder>(), carol = std::make_shared<Recorder>();
  a->attach(DeviceRef{"alice", 1}, alice);
  a->attach(DeviceRef{"carol", 1}, carol);
  ASSERT_TRUE(await([&] { return b.routes().devices() == 2 && b.routes().complete(); }));
  EXPECT_GT(a->leave().count(), 0);
  EXPECT_EQ(a->detach(DeviceRef{"alice", 1}, alice.get()), 1u) << "her entry stays: still counted";
  EXPECT_EQ(a->detach(DeviceRef{"carol", 1}, carol.get()), 1u);
  EXPECT_TRUE(b.online("alice"));
  EXPECT_TRUE(b.online("carol"));
  EXPECT_EQ(b.routes().devices(), 2u) << "b still places both on a, for the mend";
  auto alice_on_b = std::make_shared<Recorder>();
  EXPECT_EQ(b.attach(DeviceRef{"alice", 1}, alice_on_b), 1u);
  a.reset();  // gone after node_gone_after

  ASSERT_TRUE(await([&] { return !b.online("carol"); })) << "carol's kept entry was never removed";
  ASSERT_TRUE(await([&] { return !on_b.get().empty(); }));
  EXPECT_EQ(on_b.get(), (std::vector<std::pair<std::string, bool>>{{"carol", false}}));
  EXPECT_TRUE(b.online("alice"));
  EXPECT_EQ(hash_fields(redis.port(), "{r:carol}"), std::vector<std::string>{});

  // Alone on the bus, a node's drain removes its entries at once.
  RedisBus c{quick(redis.port(), "c")};
  b.stop();
  ASSERT_TRUE(c.start());
  auto dave = std::make_shared<Recorder>();
  c.attach(DeviceRef{"dave", 1}, dave);
  EXPECT_EQ(c.leave().count(), 0);
  EXPECT_EQ(c.detach(DeviceRef{"dave", 1}, dave.get()), 0u);
  EXPECT_FALSE(c.online("dave"));
}

// A node whose entries another node removed (it was cut off from Redis long enough to count
// as gone) writes them back when it is subscribed again, and reports the user online.
TEST_F(RedisBusNodes, ANodeBackOnTheBusWritesBackTheEntriesRemovedMeanwhile) {
  Changes on_a;
  a.set_presence_change_sink(on_a.sink());
  ASSERT_TRUE(a.start() && b.start());
  auto alice = std::make_shared<Recorder>(), bob = std::make_shared<Recorder>();
  a.attach(DeviceRef{"alice", 1}, alice);
  a.attach(DeviceRef{"bob", 1}, bob);
  ASSERT_TRUE(await([&] { return b.online("alice") && b.online("bob"); }));
  auto admin = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                      std::chrono::milliseconds(500), std::chrono::milliseconds(500));
  ASSERT_TRUE(admin);
  ASSERT_TRUE((*admin)->command({"HDEL", "{r:alice}", "1"}));  // as a node that saw a gone would
  ASSERT_FALSE(b.online("alice"));
  auto killed = (*admin)->command({"CLIENT", "KILL", "TYPE", "pubsub"});
  ASSERT_TRUE(killed);
  ASSERT_EQ((*killed)->type, REDIS_REPLY_INTEGER);
  ASSERT_EQ((*killed)->integer, 2);
  ASSERT_TRUE(await([&] { return b.online("alice"); })) << "alice's entry was not written back";
  ASSERT_TRUE(await([&] { return !on_a.get().empty(); }));
  EXPECT_EQ(on_a.get(), (std::vector<std::pair<std::string, bool>>{{"alice", true}})) << "bob's entry was there";
}


// Registry entries that no node mends when it is due (no live node's routes held the device
// there): read by online(), they count until they are over (DeviceRoutes::over), then are
// removed, by the check the read queued or by the read itself, and their user reported
// offline: not left online until they expire (registry_ttl, 30 s) with no change ever told.
struct StaleEntries {
  store::redis::testing::RedisServer redis;
  bool started = redis.start().ok();
  Changes on_a;
  // Longer than quick()'s: the first read must come before the entries are over, on a slow
  // machine too.
  RedisBusOptions options(const char* node) const {
    RedisBusOptions o = quick(redis.port(), node);
    o.node_gone_after = std::chrono::seconds(2);
    return o;
  }
  // Writes `user`'s entry for device 1 as `node` does, expiring `in` from now.
  bool entry(const std::string& user, const std::string& node, std::chrono::milliseconds in) {
    auto admin = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis.port()},
                                                        std::chrono::milliseconds(500), std::chrono::milliseconds(500));
    return admin && (*admin)->command({"HSET", "{r:" + user + "}", "1", node + " " + std::to_string(now_ms() + in.count())});
  }
  // Node a, started after its own last run wrote `user`'s entry (device 1, expiring in 10 s:
  // before this run's start); `started`: taken before a was built. Null if it fails.
  std::unique_ptr<RedisBus> a_after_its_last_run(const std::string& user, std::chrono::steady_clock::time_point& started) {
    if (!entry(user, "a", std::chrono::seconds(10))) return nullptr;
    started = std::chrono::steady_clock::now();
    auto a = std::make_unique<RedisBus>(options("a"));
    a->set_presence_change_sink(on_a.sink());
    if (!a->start()) return nullptr;
    return a;
  }
  // `user` was read online, and a check queued: reported offline once the entry is over, not
  // before `since` + node_gone_after, and the entry removed.
  void reported_offline_once_over(RedisBus& a, const std::string& user, std::chrono::steady_clock::time_point since) {
    bool reported = true;
    EXPECT_TRUE(a.online(user, &reported)) << "not over yet";
    EXPECT_FALSE(reported);
    ASSERT_TRUE(await([&] { return !on_a.get().empty(); })) << user << " stayed online, and nobody was told otherwise";
    EXPECT_GE(std::chrono::steady_clock::now() - since, std::chrono::seconds(2));
    EXPECT_EQ(on_a.get(), (std::vector<std::pair<std::string, bool>>{{user, false}}));
    EXPECT_EQ(hash_fields(redis.port(), "{r:" + user + "}"), std::vector<std::string>{});
  }
};

// Node "ghost" died before a started, and no node of that name comes back (a renamed node):
// its entries are over once a has read lists without it for node_gone_after.
TEST(RedisBusStale, AnEntryOfANodeNeverListedIsRemovedOnceOverAndItsUserReportedOffline) {
  StaleEntries t;
  ASSERT_TRUE(t.started);
  ASSERT_TRUE(t.entry("carol", "ghost", std::chrono::seconds(20)));
  ASSERT_TRUE(t.entry("dave", "ghost", std::chrono::seconds(20)));
  RedisBus a{t.options("a")};
  a.set_presence_change_sink(t.on_a.sink());
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(a.start());
  ASSERT_NO_FATAL_FAILURE(t.reported_offline_once_over(a, "carol", started));
  // Read once over: removed by the read, which says that it reported the offline (a
  // subscription's answer then tells nothing more: Presence::finish_subscribe).
  bool reported = false;
  EXPECT_FALSE(a.online("dave", &reported));
  EXPECT_TRUE(reported);
  EXPECT_EQ(t.on_a.get(), (std::vector<std::pair<std::string, bool>>{{"carol", false}, {"dave", false}}));
  EXPECT_EQ(hash_fields(t.redis.port(), "{r:dave}"), std::vector<std::string>{});
}

// A single node on Redis that died and was started again: no other node saw its last run.
// The entries that run wrote (they expire before this run's start) are over node_gone_after
// after it started.
TEST(RedisBusStale, AnEntryOfThisNodesLastRunIsRemovedOnceOverAndItsUserReportedOffline) {
  StaleEntries t;
  ASSERT_TRUE(t.started);
  std::chrono::steady_clock::time_point started;
  auto a = t.a_after_its_last_run("erin", started);
  ASSERT_TRUE(a);
  ASSERT_NO_FATAL_FAILURE(t.reported_offline_once_over(*a, "erin", started));
}

// Alice's device 2 detaches while her device 1's entry from this node's last run is left:
// the detach's count (1) says she is online, and no read may come. The detach queues a
// check of what it left, which removes that entry once it is over and reports her offline.
TEST(RedisBusStale, ADetachThatLeavesAnEntryOfALastRunReportsTheUserOfflineOnceItIsOver) {
  StaleEntries t;
  ASSERT_TRUE(t.started);
  std::chrono::steady_clock::time_point started;
  auto a = t.a_after_its_last_run("alice", started);
  ASSERT_TRUE(a);
  auto alice = std::make_shared<Recorder>();
  EXPECT_EQ(a->attach(DeviceRef{"alice", 2}, alice), 2u) << "the last run's entry counts until it is over";
  EXPECT_EQ(a->detach(DeviceRef{"alice", 2}, alice.get()), 1u);
  ASSERT_TRUE(await([&] { return !t.on_a.get().empty(); })) << "alice stayed online after her last device left";
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  EXPECT_EQ(t.on_a.get(), (std::vector<std::pair<std::string, bool>>{{"alice", false}}));
  EXPECT_EQ(hash_fields(t.redis.port(), "{r:alice}"), std::vector<std::string>{});
}

// Node b held carol, died, and is started again after a started: a's routes never held
// carol on b, so nobody mends b's last run at its roll call (new_run); her entry is over
// node_gone_after after a learned b's new run.
TEST(RedisBusStale, AnEntryOfANodesLastRunThatNoNodeHeldIsRemovedOnceOver) {
  StaleEntries t;
  ASSERT_TRUE(t.started);
  // Written by b's last run, ten seconds before it died (a node's restart takes more than a
  // millisecond: its new run's entries expire later than every one the last run wrote).
  ASSERT_TRUE(t.entry("carol", "b", std::chrono::seconds(20)));
  RedisBus a{t.options("a")};
  a.set_presence_change_sink(t.on_a.sink());
  ASSERT_TRUE(a.start());
  ASSERT_TRUE(await([&] { return a.routes().complete(); }));
  auto b = std::make_unique<RedisBus>(t.options("b"));
  auto erin = std::make_shared<Recorder>();
  b->attach(DeviceRef{"erin", 1}, erin);  // in the set that tells a of b's new run
  const auto restarted = std::chrono::steady_clock::now();
  ASSERT_TRUE(b->start());
  // b's kAttached of erin comes first in its first batch, then its roll call and its set.
  ASSERT_TRUE(await([&] { return a.routes().devices() == 1 && a.routes().run("b") != 0; }));
  const std::vector<DeviceRef> held = a.routes().held_on("b");
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].user, "erin") << "a never held carol on b";
  EXPECT_TRUE(a.online("erin")) << "the new run's entry counts";
  ASSERT_NO_FATAL_FAILURE(t.reported_offline_once_over(a, "carol", restarted));
}

}  // namespace
}  // namespace tern::bus
