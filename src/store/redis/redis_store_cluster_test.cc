// RedisStore on a real 3-master + 3-replica Redis Cluster: the store contract suite, and what
// only a cluster has: a commit split by slot (redis_cluster_commit.h), a master that dies
// between the phases of a commit, a failover.
#include <chrono>
#include <set>
#include <thread>

#include <map>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "store/redis/redis_cluster.h"
#include "store/redis/redis_cluster_commit.h"
#include "store/redis/redis_store.h"
#include "store/redis/testing/redis_cluster_server.h"
#include "store/redis/testing/redis_info.h"
#include "store/redis/testing/two_nodes.h"
#include "store/store_contract_test.h"

namespace tern::store::redis {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::RedisClusterServer;

// One cluster for the contract suite (stopped by the environment's TearDown); every harness
// starts from empty masters.
RedisClusterServer* g_cluster = nullptr;

class SharedCluster final : public ::testing::Environment {
 public:
  void SetUp() override {
    g_cluster = new RedisClusterServer();
    auto r = g_cluster->start();
    ASSERT_TRUE(r.ok()) << "cannot start the Redis Cluster: " << r.error().message;
  }
  void TearDown() override {
    delete g_cluster;
    g_cluster = nullptr;
  }
};
const auto* const g_env = ::testing::AddGlobalTestEnvironment(new SharedCluster);

RedisStoreOptions options_for(const RedisClusterServer& cluster) {
  RedisStoreOptions o;
  auto seeds = parse_redis_urls(cluster.seeds3());
  EXPECT_TRUE(seeds.ok());
  if (seeds.ok()) o.seeds = *seeds;
  return o;
}

void flush_masters(const RedisClusterServer& cluster) {
  if (auto r = cluster.flush_masters(); !r) ADD_FAILURE() << r.error().message;
}

// A store with dense appends (as ternd opens it) on the shared cluster, its masters emptied.
Result<std::unique_ptr<RedisStore>> open_dense_on_empty_masters() {
  flush_masters(*g_cluster);
  RedisStoreOptions o = options_for(*g_cluster);
  o.dense_appends = true;
  return RedisStore::open(o);
}

class ClusterHarness final : public contract::StoreHarness {
 public:
  ClusterHarness() { flush_masters(*g_cluster); }
  Result<std::unique_ptr<Store>> open() override {
    auto s = RedisStore::open(options_for(*g_cluster));
    if (!s) return s.error();
    return std::unique_ptr<Store>(std::move(s).value());
  }
};

using contract::StoreContractTest;
INSTANTIATE_TEST_SUITE_P(RedisCluster, StoreContractTest,
                         ::testing::Values(contract::StoreHarnessFactory{
                             "redis-cluster", [] { return std::make_unique<ClusterHarness>(); }}),
                         [](const auto& info) { return std::to_string(info.index); });

// The ops of one send are spread over the masters: the conversation's slot, the devices'
// slots, the user-index slots. The commit lands whole (and the idempotency lookup, which
// reads the pointer in the device's slot and the record in the conversation's, finds it).
TEST(RedisStoreCluster, ACommitSpreadOverThreeMastersLandsWhole) {
  flush_masters(*g_cluster);
  auto s = RedisStore::open(options_for(*g_cluster));
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::set<uint16_t> masters;
  Batch b;
  Conversation c;
  c.id = "spread";
  for (int i = 0; i < 12; ++i) {
    const std::string user = "user" + std::to_string(i);
    c.members.push_back(Member{user, 1, 0});
    masters.insert(*g_cluster->master_of(key_slot("{u:" + user + "}")));
  }
  b.add(PutConversation{c});
  b.add(AppendMessage{"spread", 1, "frame-1"});
  b.add(PutIdempotency{DeviceRef{"user0", 1}, "cm-1", IdempotencyRecord{"spread", 1, 7, 1'000'000}});
  for (const Member& m : c.members) b.add(InboxMark{DeviceRef{m.user, 1}, "spread", 1});
  ASSERT_EQ(masters.size(), 3u);  // the members' rows are on all three masters
  ASSERT_TRUE((*s)->commit(b, true).ok());
  EXPECT_EQ(*(*s)->head("spread"), 1u);
  for (const Member& m : c.members) {
    auto in = (*s)->inbox(DeviceRef{m.user, 1});
    ASSERT_TRUE(in.ok());
    ASSERT_EQ(in->size(), 1u);
    EXPECT_EQ((*in)[0].second, 1u);
    auto row = (*s)->user_conversation(m.user, "spread");
    ASSERT_TRUE(row.ok() && row->has_value());
  }
  auto rec = (*s)->idempotency(DeviceRef{"user0", 1}, "cm-1", 0);
  ASSERT_TRUE(rec.ok());
  ASSERT_TRUE(rec->has_value());
  EXPECT_EQ((*rec)->seq, 1u);
  // Inbox marks only move forward on a cluster (two nodes' commits may land in any order).
  Batch older;
  older.add(InboxMark{DeviceRef{"user1", 1}, "spread", 1});
  Batch newer;
  newer.add(InboxMark{DeviceRef{"user1", 1}, "spread", 5});
  ASSERT_TRUE((*s)->commit(newer, true).ok());
  ASSERT_TRUE((*s)->commit(older, true).ok());
  EXPECT_EQ((*(*s)->inbox(DeviceRef{"user1", 1}))[0].second, 5u);
  // A membership change that removes a member drops that member's index row (phase 0).
  Conversation smaller = c;
  smaller.members.pop_back();
  Batch shrink;
  shrink.add(PutConversation{smaller});
  ASSERT_TRUE((*s)->commit(shrink, true).ok());
  auto gone = (*s)->user_conversation(c.members.back().user, "spread");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
  // Purge drops the record and its pointer, each on its own slot.
  auto purged = (*s)->purge_expired(2'000'000);
  ASSERT_TRUE(purged.ok()) << purged.error().message;
  EXPECT_EQ(*purged, 1u);
  auto after = (*s)->idempotency(DeviceRef{"user0", 1}, "cm-1", 0);
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->has_value());
}

// Every slot has its own idempotency index key, which lives in that slot.
TEST(RedisStoreCluster, EachSlotsExpiryIndexKeyLivesInThatSlot) {
  std::set<std::string_view> keys;
  for (uint16_t slot = 0; slot < kSlots; ++slot) {
    const std::string_view key = slot_index_key(slot);
    ASSERT_FALSE(key.empty()) << slot;
    EXPECT_EQ(key_slot(key), slot) << key;
    keys.insert(key);
  }
  EXPECT_EQ(keys.size(), size_t{kSlots});
}

// A send's idempotency pointer and record are indexed by expiry in their own slots (the
// device's and the conversation's), not in one global key; the purge drops both, and still
// drains entries that older nodes wrote to the global index.
TEST(RedisStoreCluster, IdempotencyEntriesAreIndexedInTheirOwnSlotsAndPurged) {
  auto s = open_dense_on_empty_masters();
  ASSERT_TRUE(s.ok()) << s.error().message;
  const DeviceRef dev{"indexed", 1};
  const std::string dk = "{d:indexed/1}", conv = "{c:ix}";
  Batch b;
  b.add(AppendMessage{"ix", 1, "frame"});
  b.add(PutIdempotency{dev, "m1", IdempotencyRecord{"ix", 1, 7, 1'000'000}});
  ASSERT_TRUE((*s)->commit(b, true).ok());
  auto card = [&](std::string_view key) {
    auto r = g_cluster->command(*g_cluster->master_of(key_slot(key)), {"ZCARD", std::string(key)});
    return r.ok() ? *r : r.error().message;
  };
  EXPECT_EQ(card(slot_index_key(key_slot(dk))), "1");
  EXPECT_EQ(card(slot_index_key(key_slot(conv))), "1");
  EXPECT_EQ(card("idemexp"), "0");
  // An older node's entry in the global index, and the record it names.
  const std::string old_field = "13:{d:older/1}m9";
  ASSERT_TRUE(g_cluster->command(*g_cluster->master_of(key_slot(conv)), {"HSET", conv + ":idem", old_field, "x"}).ok());
  ASSERT_TRUE(g_cluster->command(*g_cluster->master_of(key_slot("idemexp")),
                                 {"ZADD", "idemexp", "5", std::to_string(conv.size() + 5) + ":" + conv + ":idem" + old_field})
                  .ok());
  auto purged = (*s)->purge_expired(2'000'000);
  ASSERT_TRUE(purged.ok()) << purged.error().message;
  EXPECT_EQ(*purged, 2u);  // this send's record and the older node's
  EXPECT_EQ(card(slot_index_key(key_slot(dk))), "0");
  EXPECT_EQ(card(slot_index_key(key_slot(conv))), "0");
  EXPECT_EQ(card("idemexp"), "0");
  auto left = g_cluster->command(*g_cluster->master_of(key_slot(conv)), {"HLEN", conv + ":idem"});
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(*left, "0");
  auto pointer = g_cluster->command(*g_cluster->master_of(key_slot(dk)), {"HLEN", dk + ":idp"});
  ASSERT_TRUE(pointer.ok());
  EXPECT_EQ(*pointer, "0");
}

// The scripts the masters ran (EVALSHA, and EVAL where a node lacked the script).
int64_t scripts_run() {
  int64_t n = 0;
  for (uint16_t p : g_cluster->ports()) {
    auto role = g_cluster->command(p, {"ROLE"});
    if (!role.ok() || role->rfind("master", 0) != 0) continue;
    n += testing::command_calls(p, "evalsha") + testing::command_calls(p, "eval");
  }
  return n;
}

// A group post's commit touches one slot per member's inbox (and the conversation's, and the
// sender's pointer): the slots one master serves run as one script per phase, so the commit
// costs at most one script per master and phase, not one per slot. And it lands whole.
TEST(RedisStoreCluster, ACommitRunsOneScriptPerMasterAndPhaseNotOnePerSlot) {
  auto s = open_dense_on_empty_masters();
  ASSERT_TRUE(s.ok()) << s.error().message;
  Conversation c;
  c.id = "post";
  for (int i = 0; i < 20; ++i) c.members.push_back(Member{"member" + std::to_string(i), 1, 0});
  Batch setup;
  setup.add(PutConversation{c});
  ASSERT_TRUE((*s)->commit(setup, true).ok());  // every master has loaded the script since
  std::set<uint16_t> slots = {key_slot("{c:post}"), key_slot("{d:member0/1}")};
  Batch post;
  post.add(AppendMessage{"post", 1, "frame-1"});
  post.add(PutIdempotency{DeviceRef{"member0", 1}, "cm-1", IdempotencyRecord{"post", 1, 7, 1'000'000'000}});
  for (const Member& m : c.members) {
    post.add(InboxMark{DeviceRef{m.user, 1}, "post", 1});
    slots.insert(key_slot("{d:" + m.user + "/1}"));
  }
  ASSERT_GT(slots.size(), 6u);  // one script per slot would be more than 3 masters × 2 phases
  const int64_t before = scripts_run();
  Counter& scripts_metric = MetricsRegistry::global().counter("tern_redis_commit_scripts_total", "");
  const uint64_t metric_before = scripts_metric.value();
  ASSERT_TRUE((*s)->commit(post, true).ok());
  const int64_t ran = scripts_run() - before;
  EXPECT_EQ(static_cast<int64_t>(scripts_metric.value() - metric_before), ran);  // GET /metrics says the same
  EXPECT_GE(ran, 2);  // phase 0 and phase 1
  EXPECT_LE(ran, 6);
  EXPECT_EQ(*(*s)->head("post"), 1u);
  for (const Member& m : c.members) {
    auto in = (*s)->inbox(DeviceRef{m.user, 1});
    ASSERT_TRUE(in.ok());
    ASSERT_EQ(in->size(), 1u) << m.user;
    EXPECT_EQ((*in)[0].second, 1u);
  }
  auto rec = (*s)->idempotency(DeviceRef{"member0", 1}, "cm-1", 0);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->seq, 1u);
}

// Two ids (made from `prefix` and a number, keyed as `key` makes them) whose slots one master
// serves, the first in a lower slot: a merged script is routed by its lowest slot's key.
std::pair<std::string, std::string> two_on_one_master(const std::string& prefix,
                                                      std::string (*key)(const std::string&)) {
  std::map<uint16_t, std::string> first;  // master → the id in the lowest slot seen
  for (int i = 0; i < 10000; ++i) {
    const std::string id = prefix + std::to_string(i);
    const uint16_t slot = key_slot(key(id));
    auto m = g_cluster->master_of(slot);
    if (!m.ok()) continue;
    auto [it, fresh] = first.emplace(*m, id);
    if (fresh) continue;
    const uint16_t other = key_slot(key(it->second));
    if (other < slot) return {it->second, id};
    if (other > slot) return {id, it->second};
  }
  return {};
}

// A slot that moved to another master after the store read the map: the merged script of its
// old master meets it (op 'L', before anything is written) and fails with "non local key";
// the store reads the topology again and runs those slots one script each. The commit lands
// whole, on the masters that serve the slots now, and no conversation is reported behind.
TEST(RedisStoreCluster, ACommitFollowsASlotThatMovedAfterTheMapWasRead) {
  flush_masters(*g_cluster);
  auto [c1, c2] = two_on_one_master("moved", [](const std::string& id) { return "{c:" + id + "}"; });
  auto [d1, d2] = two_on_one_master("dev", [](const std::string& id) { return "{d:" + id + "/1}"; });
  ASSERT_FALSE(c2.empty());
  ASSERT_FALSE(d2.empty());
  RedisStoreOptions o = options_for(*g_cluster);
  o.dense_appends = true;
  auto s = RedisStore::open(o);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Batch warm;  // the store's map is read, and its connections to the masters made
  warm.add(AppendMessage{c1, 1, "c1-1"});
  warm.add(AppendMessage{c2, 1, "c2-1"});
  warm.add(InboxMark{DeviceRef{d1, 1}, c1, 1});
  warm.add(InboxMark{DeviceRef{d2, 1}, c2, 1});
  ASSERT_TRUE((*s)->commit(warm, true).ok());
  Counter& moved_slots = MetricsRegistry::global().counter("tern_redis_commit_moved_slots_total", "");

  // Phase 1 (appends only): c2's slot moved.
  const uint16_t c2_slot = key_slot("{c:" + c2 + "}"), d2_slot = key_slot("{d:" + d2 + "/1}");
  const uint16_t from = *g_cluster->master_of(c2_slot), to = *g_cluster->another_master(from);
  ASSERT_TRUE(g_cluster->move_slot(c2_slot, to).ok());
  uint64_t moved_before = moved_slots.value();
  Batch appends;
  appends.add(AppendMessage{c1, 2, "c1-2"});
  appends.add(AppendMessage{c2, 2, "c2-2"});
  auto r = (*s)->commit(appends, true);
  EXPECT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE((*s)->behind().conversations.empty());
  EXPECT_EQ(moved_slots.value() - moved_before, 2u);  // c1's and c2's slots, one script each
  EXPECT_EQ(*(*s)->head(c1), 2u);
  EXPECT_EQ(*(*s)->head(c2), 2u);
  EXPECT_EQ(*g_cluster->command(to, {"HEXISTS", "{c:" + c2 + "}:f", "0000000000000002"}), "1");

  // Phase 0 (inbox marks only): d2's slot moved, after the store read the map again.
  const uint16_t d_from = *g_cluster->master_of(d2_slot), d_to = *g_cluster->another_master(d_from);
  ASSERT_TRUE(g_cluster->move_slot(d2_slot, d_to).ok());
  moved_before = moved_slots.value();
  Batch marks;
  marks.add(InboxMark{DeviceRef{d1, 1}, c1, 2});
  marks.add(InboxMark{DeviceRef{d2, 1}, c2, 2});
  r = (*s)->commit(marks, true);
  EXPECT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(moved_slots.value() - moved_before, 2u);
  EXPECT_EQ(*g_cluster->command(d_to, {"HGET", "{d:" + d2 + "/1}:in", c2}), "2");
  for (const std::string& d : {d1, d2}) {
    auto in = (*s)->inbox(DeviceRef{d, 1});
    ASSERT_TRUE(in.ok());
    ASSERT_EQ(in->size(), 1u) << d;
    EXPECT_EQ((*in)[0].second, 2u);
  }
  // The slots go back where they were (the other tests find masters by asking).
  EXPECT_TRUE(g_cluster->move_slot(c2_slot, from).ok());
  EXPECT_TRUE(g_cluster->move_slot(d2_slot, d_from).ok());
}

// An id made from `prefix` and a number whose key (as `key` makes it) lives on `master`, and
// not in the slot `other_than`.
std::string one_on(uint16_t master, const std::string& prefix, std::string (*key)(const std::string&),
                   uint16_t other_than = UINT16_MAX) {
  for (int i = 0; i < 10000; ++i) {
    const std::string id = prefix + std::to_string(i);
    const uint16_t slot = key_slot(key(id));
    auto m = g_cluster->master_of(slot);
    if (m.ok() && *m == master && slot != other_than) return id;
  }
  return {};
}
std::string conv_key_of(const std::string& id) { return "{c:" + id + "}"; }
std::string device_key_of(const std::string& id) { return "{d:" + id + "/1}"; }

// A commit whose phase 1 lives on one master runs that master's phase-0 ops in its phase-1
// script (they apply atomically with the append, so they are not needed before it): a send
// whose recipient's inbox is on the conversation's master is one script, not two. With the
// inbox on another master it stays two (phase 0 there first). Acks alone (cursor, inbox
// delete, receipt: blind puts) are one round: one script per master they touch.
TEST(RedisStoreCluster, APhaseOneOnOneMasterTakesThatMastersPhaseZeroAlong) {
  auto s = open_dense_on_empty_masters();
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::string conv = "fold";
  const uint16_t x = *g_cluster->master_of(key_slot(conv_key_of(conv)));
  const std::string near = one_on(x, "near", device_key_of, key_slot(conv_key_of(conv)));
  const std::string far = one_on(*g_cluster->another_master(x), "far", device_key_of);
  ASSERT_FALSE(near.empty());
  ASSERT_FALSE(far.empty());
  Conversation c;
  c.id = conv;
  for (int i = 0; i < 20; ++i) c.members.push_back(Member{"member" + std::to_string(i), 1, 0});
  Batch setup;  // every master loads the script
  setup.add(PutConversation{c});
  ASSERT_TRUE((*s)->commit(setup, true).ok());

  auto scripts_for = [&](const Batch& b) {
    const int64_t before = scripts_run();
    auto r = (*s)->commit(b, true);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return scripts_run() - before;
  };
  Batch to_near;
  to_near.add(AppendMessage{conv, 1, "frame-1"});
  to_near.add(InboxMark{DeviceRef{near, 1}, conv, 1});
  EXPECT_EQ(scripts_for(to_near), 1);
  Batch to_far;
  to_far.add(AppendMessage{conv, 2, "frame-2"});
  to_far.add(InboxMark{DeviceRef{far, 1}, conv, 2});
  EXPECT_EQ(scripts_for(to_far), 2);
  EXPECT_EQ(*(*s)->head(conv), 2u);
  for (const auto& [d, seq] : {std::pair{near, 1u}, std::pair{far, 2u}}) {
    auto in = (*s)->inbox(DeviceRef{d, 1});
    ASSERT_TRUE(in.ok());
    ASSERT_EQ(in->size(), 1u) << d;
    EXPECT_EQ((*in)[0].second, seq);
  }

  Batch acks;
  acks.add(SetCursor{DeviceRef{near, 1}, conv, 1});
  acks.add(InboxDelete{DeviceRef{near, 1}, conv});
  acks.add(SetReceipt{conv, near, 1, 0});
  EXPECT_EQ(scripts_for(acks), 1);
  Batch far_acks;
  far_acks.add(SetCursor{DeviceRef{far, 1}, conv, 2});
  far_acks.add(InboxDelete{DeviceRef{far, 1}, conv});
  far_acks.add(SetReceipt{conv, far, 2, 0});
  EXPECT_EQ(scripts_for(far_acks), 2);
  for (const std::string& d : {near, far}) {
    auto in = (*s)->inbox(DeviceRef{d, 1});
    ASSERT_TRUE(in.ok());
    EXPECT_TRUE(in->empty()) << d;
  }
  auto cursors = (*s)->cursors(DeviceRef{far, 1}, {conv});
  ASSERT_TRUE(cursors.ok());
  ASSERT_EQ(cursors->size(), 1u);
  EXPECT_EQ((*cursors)[0], 2u);
  auto receipts = (*s)->receipts(conv);
  ASSERT_TRUE(receipts.ok());
  EXPECT_EQ(receipts->size(), 2u);
}

// A script merged from several slots of one master reads one key of each further slot first
// ('L', an EXISTS), so that a slot moved since the map was read fails it before it writes;
// a slot whose ops read in the script's checks anyway (an inbox mark reads the old mark)
// needs no such read. Blind puts (cursors) still get it.
TEST(RedisStoreCluster, AMergedScriptReadsAheadOnlyTheSlotsItsChecksDoNotRead) {
  auto s = open_dense_on_empty_masters();
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto [d1, d2] = two_on_one_master("ahead", device_key_of);
  ASSERT_FALSE(d2.empty());
  const uint16_t master = *g_cluster->master_of(key_slot(device_key_of(d1)));
  Batch warm;  // the master loads the script
  warm.add(InboxMark{DeviceRef{d1, 1}, "c", 1});
  ASSERT_TRUE((*s)->commit(warm, true).ok());
  auto exists_for = [&](const Batch& b) {
    const int64_t before = testing::command_calls(master, "exists");
    auto r = (*s)->commit(b, true);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return testing::command_calls(master, "exists") - before;
  };
  Batch marks;
  marks.add(InboxMark{DeviceRef{d1, 1}, "c", 2});
  marks.add(InboxMark{DeviceRef{d2, 1}, "c", 2});
  EXPECT_EQ(exists_for(marks), 0);
  Batch cursors;
  cursors.add(SetCursor{DeviceRef{d1, 1}, "c", 2});
  cursors.add(SetCursor{DeviceRef{d2, 1}, "c", 2});
  EXPECT_EQ(exists_for(cursors), 1);
  for (const std::string& d : {d1, d2}) {
    auto in = (*s)->inbox(DeviceRef{d, 1});
    ASSERT_TRUE(in.ok());
    ASSERT_EQ(in->size(), 1u) << d;
    EXPECT_EQ((*in)[0].second, 2u);
  }
}

// The sender's idempotency pointer folded into the conversation's script (the sender's device
// on that master): a pointer naming another conversation that holds the id's record makes
// the script write nothing, and the send is refused as a repeat (its conversation named
// behind, its log untouched); a pointer whose conversation has no record moves, and the send
// commits.
TEST(RedisStoreCluster, AFoldedPointerNamingAnotherConversationsRecordRefusesTheRepeat) {
  auto s = open_dense_on_empty_masters();
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::string c2 = "second";
  const uint16_t x = *g_cluster->master_of(key_slot(conv_key_of(c2)));
  const std::string sender = one_on(x, "sender", device_key_of, key_slot(conv_key_of(c2)));
  ASSERT_FALSE(sender.empty());
  const DeviceRef dev{sender, 1};
  const int64_t later = now_ms() + 3'600'000;
  auto send = [&](const std::string& conv, Seq seq, const std::string& cmid) {
    Batch b;
    b.add(AppendMessage{conv, seq, cmid + " in " + conv});
    b.add(PutIdempotency{dev, cmid, IdempotencyRecord{conv, seq, 9, later}});
    return (*s)->commit(b, true);
  };
  ASSERT_TRUE(send("first", 1, "m1").ok());
  ASSERT_TRUE(send(c2, 1, "m0").ok());

  auto repeat = send(c2, 2, "m1");
  ASSERT_FALSE(repeat.ok());
  EXPECT_EQ((*s)->behind().conversations, (std::vector<std::string>{c2}));
  EXPECT_EQ(*(*s)->head(c2), 1u);
  auto answer = (*s)->send_idempotency(dev, "m1", c2, now_ms());
  ASSERT_TRUE(answer.ok() && answer->has_value());
  EXPECT_EQ((*answer)->conversation_id, "first");
  EXPECT_EQ((*answer)->seq, 1u);

  // m5's first send was behind (no record in "first"), so m5 is new in c2.
  ASSERT_FALSE(send("first", 1, "m5").ok());
  ASSERT_TRUE(send(c2, 2, "m5").ok());
  EXPECT_EQ(*(*s)->head(c2), 2u);
  auto m5 = (*s)->idempotency(dev, "m5", now_ms());  // through the pointer
  ASSERT_TRUE(m5.ok() && m5->has_value());
  EXPECT_EQ((*m5)->conversation_id, c2);
  EXPECT_EQ((*m5)->seq, 2u);
}

// A folded script (the conversation's and its recipient's inbox slots on one master) that
// meets the inbox's slot moved to another master since the map was read writes nothing; the
// commit then runs as two phases again on the new map: the mark on its new master first,
// then the append. It lands whole.
TEST(RedisStoreCluster, AFoldedScriptThatMeetsAMovedSlotRunsItsPhasesApart) {
  auto s = open_dense_on_empty_masters();
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::string conv = "stale";
  const uint16_t conv_slot = key_slot(conv_key_of(conv));
  const uint16_t x = *g_cluster->master_of(conv_slot);
  const std::string near = one_on(x, "inbox", device_key_of, conv_slot);
  ASSERT_FALSE(near.empty());
  const DeviceRef dev{near, 1};
  Batch warm;  // the store reads the map
  warm.add(AppendMessage{conv, 1, "frame-1"});
  warm.add(InboxMark{dev, conv, 1});
  ASSERT_TRUE((*s)->commit(warm, true).ok());
  const uint16_t inbox_slot = key_slot(device_key_of(near));
  const uint16_t to = *g_cluster->another_master(x);
  ASSERT_TRUE(g_cluster->move_slot(inbox_slot, to).ok());
  Counter& moved_slots = MetricsRegistry::global().counter("tern_redis_commit_moved_slots_total", "");
  const uint64_t moved_before = moved_slots.value();
  Batch b;
  b.add(AppendMessage{conv, 2, "frame-2"});
  b.add(InboxMark{dev, conv, 2});
  auto r = (*s)->commit(b, true);
  EXPECT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE((*s)->behind().conversations.empty());
  EXPECT_EQ(moved_slots.value() - moved_before, 2u);  // the script's two slots, run apart
  EXPECT_EQ(*(*s)->head(conv), 2u);
  EXPECT_EQ(*g_cluster->command(to, {"HGET", device_key_of(near) + ":in", conv}), "2");
  EXPECT_EQ(*g_cluster->command(x, {"HEXISTS", conv_key_of(conv) + ":f", "0000000000000002"}), "1");
  EXPECT_TRUE(g_cluster->move_slot(inbox_slot, x).ok());  // back, for the other tests
}

// Two conversations on one master share its phase-1 script: one found behind (another node
// appended first) makes that script write nothing, and it runs again without that
// conversation, so the other still commits.
TEST(RedisStoreCluster, ADenseAppendBehindInAMergedScriptFailsOnlyItsConversation) {
  flush_masters(*g_cluster);
  auto [late, fine] = two_on_one_master("share", [](const std::string& id) { return "{c:" + id + "}"; });
  ASSERT_FALSE(fine.empty());
  RedisStoreOptions o = options_for(*g_cluster);
  o.dense_appends = true;
  auto a = RedisStore::open(o);
  auto b = RedisStore::open(o);
  ASSERT_TRUE(a.ok() && b.ok());
  Batch first;
  first.add(AppendMessage{late, 1, "a1"});
  ASSERT_TRUE((*a)->commit(first, true).ok());
  Batch both;
  both.add(AppendMessage{late, 1, "b1"});  // behind: a appended seq 1 first
  both.add(AppendMessage{fine, 1, "b2"});
  auto r = (*b)->commit(both, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ((*b)->behind().conversations, (std::vector<std::string>{late}));
  EXPECT_TRUE((*b)->behind().rest_applied);
  EXPECT_EQ((*(*b)->read_messages(late, 0, 10))[0].frame, "a1");
  EXPECT_EQ(*(*b)->head(fine), 1u);
  EXPECT_EQ((*(*b)->read_messages(fine, 0, 10))[0].frame, "b2");
}

// The live nodes by role (ROLE's first word): "master" / "slave".
std::map<std::string, std::vector<uint16_t>> nodes_by_role() {
  std::map<std::string, std::vector<uint16_t>> out;
  for (uint16_t p : g_cluster->ports()) {
    auto role = g_cluster->command(p, {"ROLE"});
    if (role.ok()) out[role->substr(0, role->find_first_of(" \n"))].push_back(p);
  }
  return out;
}

// The AOF counts of every node, once none is rewriting.
std::map<uint16_t, int> rewrites_when_idle() {
  std::map<uint16_t, int> out;
  for (uint16_t p : g_cluster->ports()) out[p] = testing::aof_rewrites_when_idle(p);
  return out;
}

// One expiring message on each master, erased: the erase asks for the AOF rewrite.
void erase_one_message_per_master(Store& s) {
  std::map<uint16_t, std::string> conv_on;  // conversations until every master holds one (bounded)
  for (int i = 0; i < 200 && conv_on.size() < 3; ++i) {
    const std::string id = "erase" + std::to_string(i);
    auto m = g_cluster->master_of(key_slot("{c:" + id + "}"));
    ASSERT_TRUE(m.ok());
    conv_on.emplace(*m, id);
  }
  ASSERT_EQ(conv_on.size(), 3u);
  for (const auto& [port, id] : conv_on) {
    Batch b;
    b.add(AppendMessage{id, 1, R"({"type":"message","seq":1,"body":"eA==","expires_at":5000})", 5000, {}});
    ASSERT_TRUE(s.commit(b, true).ok());
  }
  auto due = s.expiring_messages(5000, 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 3u);
  ASSERT_TRUE(s.erase_expired(*due).ok());
}

// Waits (bounded) until each of `ports` counts more AOF rewrites than `before` says.
void expect_rewritten(const std::vector<uint16_t>& ports, std::map<uint16_t, int>& before, const char* role) {
  for (uint16_t port : ports)
    EXPECT_TRUE(testing::await_aof_rewrites_above(port, before[port])) << role << " " << port << " did not rewrite its AOF";
}

// The AOF rewrite after an erase reaches every node: each master holds the erased frames of
// its own slots in its own AOF, and each replica its copy of them in its own.
TEST(RedisStoreCluster, AnEraseAsksEveryMasterAndReplicaToRewriteItsAof) {
  flush_masters(*g_cluster);
  auto s = RedisStore::open(options_for(*g_cluster));
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto roles = nodes_by_role();
  ASSERT_EQ(roles["master"].size(), 3u);
  ASSERT_EQ(roles["slave"].size(), 3u);
  std::map<uint16_t, int> before = rewrites_when_idle();
  for (uint16_t p : g_cluster->ports()) ASSERT_GE(before[p], 0);
  erase_one_message_per_master(**s);
  expect_rewritten(roles["master"], before, "master");
  expect_rewritten(roles["slave"], before, "replica");
}

// A replica that is down does not fail the erase (that succeeded): the other nodes still
// rewrite, and the call that sends to every node answers for the live ones.
TEST(RedisStoreCluster, AnEraseWithAReplicaDownSucceedsAndTheOtherNodesRewrite) {
  flush_masters(*g_cluster);
  auto roles = nodes_by_role();
  ASSERT_EQ(roles["master"].size(), 3u);
  ASSERT_EQ(roles["slave"].size(), 3u);
  const uint16_t down = roles["slave"].front();
  std::map<uint16_t, int> before = rewrites_when_idle();
  g_cluster->kill9(down);
  auto s = RedisStore::open(options_for(*g_cluster));
  ASSERT_TRUE(s.ok()) << s.error().message;
  erase_one_message_per_master(**s);
  expect_rewritten(roles["master"], before, "master");
  expect_rewritten({roles["slave"][1], roles["slave"][2]}, before, "replica");
  auto seeds = parse_redis_urls(g_cluster->seeds3());
  ASSERT_TRUE(seeds.ok());
  RedisClusterOptions o;
  o.seeds = *seeds;
  auto c = RedisCluster::open(o);
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto every = (*c)->on_every_node({"PING"});
  ASSERT_TRUE(every.ok()) << every.error().message;
  EXPECT_EQ(every->masters, 3u);
  EXPECT_EQ(every->replicas, 2u);
  ASSERT_EQ(every->unreachable.size(), 1u);  // CLUSTER NODES still lists it (marked failing)
  EXPECT_NE(every->unreachable[0].find(":" + std::to_string(down) + ":"), std::string::npos) << every->unreachable[0];
  // Back as it was for the next tests: the replica up and linked to its master again.
  ASSERT_TRUE(g_cluster->restart(down).ok());
  ASSERT_TRUE(testing::await_replica_linked(down)) << "the restarted replica did not link to its master";
  ASSERT_TRUE(g_cluster->await_healthy(30s).ok());
}

// A token replaced by PutDevice stops resolving, wherever its key lives.
TEST(RedisStoreCluster, AReplacedTokenIsDeletedOnItsOwnSlot) {
  flush_masters(*g_cluster);
  auto s = RedisStore::open(options_for(*g_cluster));
  ASSERT_TRUE(s.ok()) << s.error().message;
  Batch a;
  a.add(PutUser{"tok-user", 1});
  a.add(PutDevice{DeviceRef{"tok-user", 1}, "hash-old"});
  ASSERT_TRUE((*s)->commit(a, true).ok());
  ASSERT_TRUE((*(*s)->find_token("hash-old")).has_value());
  Batch b;
  b.add(PutDevice{DeviceRef{"tok-user", 1}, "hash-new"});
  ASSERT_TRUE((*s)->commit(b, true).ok());
  EXPECT_FALSE((*(*s)->find_token("hash-old")).has_value());
  ASSERT_TRUE((*(*s)->find_token("hash-new")).has_value());
  EXPECT_EQ((*(*s)->devices("tok-user")), std::vector<uint32_t>{1});
}

// Token buckets on a cluster: each on its key's master, shared by two stores (nodes).
TEST(RedisStoreCluster, TokenBucketsAreSharedWhereverTheirKeysLive) {
  flush_masters(*g_cluster);
  auto a = RedisStore::open(options_for(*g_cluster));
  auto b = RedisStore::open(options_for(*g_cluster));
  ASSERT_TRUE(a.ok() && b.ok());
  for (int k = 0; k < 8; ++k) {  // keys over several slots, so over the masters
    const std::string key = "register:10.0.0." + std::to_string(k);
    for (int i = 0; i < 3; ++i) {
      auto t = (i % 2 ? *b : *a)->take_tokens(key, 1.0 / 3600, 2, 1);
      ASSERT_TRUE(t.ok()) << t.error().message;
      ASSERT_TRUE(t->has_value());
      EXPECT_EQ(**t, i < 2) << key << " take " << i;
    }
  }
}

// The media marks live in each blob's slot ({m:<id>}), so blobs on every master take them.
TEST(RedisStoreCluster, MediaMarksWorkWhereverTheBlobsKeysLive) {
  flush_masters(*g_cluster);
  auto a = RedisStore::open(options_for(*g_cluster));
  auto b = RedisStore::open(options_for(*g_cluster));
  ASSERT_TRUE(a.ok() && b.ok());
  using Mark = Store::MediaMark;
  for (int k = 0; k < 8; ++k) {  // ids over several slots, so over the masters
    const std::string id(64, static_cast<char>('0' + k));
    auto lease = (*a)->mark_media(id, Mark::kLease, "a.1", 60'000);
    ASSERT_TRUE(lease.ok()) << lease.error().message;
    ASSERT_TRUE(lease->has_value());
    EXPECT_TRUE(**lease);
    auto collect = (*b)->mark_media(id, Mark::kCollect, "b", 60'000);
    ASSERT_TRUE(collect.ok()) << collect.error().message;
    EXPECT_FALSE(collect->value_or(true)) << id;
    ASSERT_TRUE((*a)->unmark_media(id, Mark::kLease, "a.1").ok());
    collect = (*b)->mark_media(id, Mark::kCollect, "b", 60'000);
    ASSERT_TRUE(collect.ok()) << collect.error().message;
    EXPECT_TRUE(collect->value_or(false)) << id;
  }
}

// A user's link codes live in the user's slot ({u:<user>}:lc), so users on every master keep
// them: added through one node, taken once through the other, at most `max` each.
TEST(RedisStoreCluster, LinkCodesWorkWhereverTheUsersKeysLive) {
  flush_masters(*g_cluster);
  auto a = RedisStore::open(options_for(*g_cluster));
  auto b = RedisStore::open(options_for(*g_cluster));
  ASSERT_TRUE(a.ok() && b.ok());
  for (int k = 0; k < 8; ++k) {  // users over several slots, so over the masters
    const std::string user = "user" + std::to_string(k);
    for (int i = 0; i < 3; ++i) {
      auto added = (i % 2 ? *b : *a)->add_link_code(user, "h" + std::to_string(i), 600'000, 2);
      ASSERT_TRUE(added.ok()) << added.error().message;
      ASSERT_TRUE(added->has_value());
      EXPECT_EQ(**added > 0, i < 2) << user << " code " << i;
    }
    auto taken = (*b)->take_link_code(user, "h0");
    ASSERT_TRUE(taken.ok()) << taken.error().message;
    EXPECT_TRUE(taken->value_or(false)) << user;
    taken = (*a)->take_link_code(user, "h0");
    ASSERT_TRUE(taken.ok()) << taken.error().message;
    EXPECT_FALSE(taken->value_or(true)) << user << ": single use";
  }
}

// Report ids: one counter, in the reports' slot, above the reports stored before it.
TEST(RedisStoreCluster, ReportIdsComeFromOneCounter) {
  flush_masters(*g_cluster);
  auto a = RedisStore::open(options_for(*g_cluster));
  auto b = RedisStore::open(options_for(*g_cluster));
  ASSERT_TRUE(a.ok() && b.ok());
  Batch earlier;
  earlier.add(PutReport{3, "r3"});
  ASSERT_TRUE((*a)->commit(earlier, true).ok());
  for (uint64_t want = 4; want < 8; ++want) {
    auto id = (want % 2 ? *b : *a)->next_report_id();
    ASSERT_TRUE(id.ok()) << id.error().message;
    EXPECT_EQ(id->value_or(0), want);
  }
}

// Two nodes append to one conversation on a cluster: the commit whose append is behind fails
// that conversation's slot script only; the slot runs again without it, so the batch's other
// conversations commit (rest_applied) and the one behind keeps the other node's message.
TEST(RedisStoreCluster, ADenseAppendBehindFailsOnlyItsConversation) {
  flush_masters(*g_cluster);
  auto nodes = testing::two_nodes_after_first_appends(options_for(*g_cluster));
  ASSERT_TRUE(nodes.ok()) << nodes.error().message;
  std::unique_ptr<RedisStore>* b = &nodes->b;
  const DeviceRef bob{"bob", 1};
  Batch late;
  late.add(AppendMessage{"c1", 1, "b1"});
  late.add(PutIdempotency{bob, "m1", IdempotencyRecord{"c1", 1, 7, 1'000'000'000}});
  late.add(AppendMessage{"c2", 2, "b2"});
  late.add(PutIdempotency{bob, "m2", IdempotencyRecord{"c2", 2, 7, 1'000'000'000}});
  late.add(InboxMark{DeviceRef{"carol", 1}, "c2", 2});
  auto r = (*b)->commit(late, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  const Store::Behind behind = (*b)->behind();
  EXPECT_EQ(behind.conversations, (std::vector<std::string>{"c1"}));
  EXPECT_TRUE(behind.rest_applied);
  EXPECT_EQ(*(*b)->head("c1"), 1u);
  EXPECT_EQ((*(*b)->read_messages("c1", 0, 10))[0].frame, "a1");
  EXPECT_FALSE((*(*b)->idempotency(bob, "m1", 0)).has_value());
  EXPECT_EQ(*(*b)->head("c2"), 2u);
  auto rec = (*b)->idempotency(bob, "m2", 0);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->seq, 2u);
  auto inbox = (*b)->inbox(DeviceRef{"carol", 1});
  ASSERT_TRUE(inbox.ok());
  ASSERT_EQ(inbox->size(), 1u);
  EXPECT_EQ((*inbox)[0].second, 2u);
}

// With dense appends (ternd) the commit refuses a client_msg_id that already has a record in
// the send's conversation (op 'j' in the conversation's script, redis_scripts.h): that
// conversation is named behind and gets nothing, the rest of the batch applies, and the
// retry's one read (send_idempotency, the conversation's slot) answers with the first seq.
// An expired record is no duplicate. An id counts per device: the same id sent into another
// conversation is answered with the first (phase 0's pointer, op 'p').
TEST(RedisStoreCluster, ACommitRefusesAClientMsgIdThatHasARecordInItsConversation) {
  flush_masters(*g_cluster);
  auto nodes = testing::two_nodes_after_first_appends(options_for(*g_cluster));
  ASSERT_TRUE(nodes.ok()) << nodes.error().message;
  EXPECT_TRUE(nodes->a->commit_checks_idempotency());
  const DeviceRef bob{"bob", 1};
  const int64_t later = now_ms() + 3'600'000;
  Batch first;  // node a: bob's m1 gets c1 seq 2
  first.add(AppendMessage{"c1", 2, "m1"});
  first.add(PutIdempotency{bob, "m1", IdempotencyRecord{"c1", 2, 7, later}});
  ASSERT_TRUE(nodes->a->commit(first, true).ok());

  Batch again;  // node b: a send into c2, then the same m1 again (b's head of c1 is right)
  again.add(AppendMessage{"c2", 2, "other"});
  again.add(PutIdempotency{bob, "m2", IdempotencyRecord{"c2", 2, 8, later}});
  again.add(AppendMessage{"c1", 3, "m1 again"});
  again.add(PutIdempotency{bob, "m1", IdempotencyRecord{"c1", 3, 9, later}});
  auto r = nodes->b->commit(again, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  const Store::Behind behind = nodes->b->behind();
  EXPECT_EQ(behind.conversations, (std::vector<std::string>{"c1"}));
  EXPECT_TRUE(behind.rest_applied);
  EXPECT_EQ(*nodes->b->head("c1"), 2u);
  auto c1 = nodes->b->read_messages("c1", 0, 10);
  ASSERT_TRUE(c1.ok());
  ASSERT_EQ(c1->size(), 2u);
  EXPECT_EQ((*c1)[1].frame, "m1");
  EXPECT_EQ(*nodes->b->head("c2"), 2u);  // the rest of the batch applied
  auto rec = nodes->b->send_idempotency(bob, "m1", "c1", now_ms());
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->seq, 2u);  // the first answer stays
  EXPECT_EQ((*rec)->ts, 7);
  auto m2 = nodes->b->send_idempotency(bob, "m2", "c2", now_ms());
  ASSERT_TRUE(m2.ok() && m2->has_value());
  EXPECT_EQ((*m2)->seq, 2u);

  // No reservation was taken for b: node a appends c1 seq 3 at once.
  Batch next;
  next.add(AppendMessage{"c1", 3, "a3"});
  ASSERT_TRUE(nodes->a->commit(next, true).ok());

  // A record that has expired (not yet purged) is no duplicate.
  ASSERT_TRUE(testing::resend_after_expiry(*nodes->b, 3, now_ms(), later).ok());
  EXPECT_EQ((*nodes->b->send_idempotency(bob, "m3", "c2", now_ms()))->seq, 4u);

  // An id counts per device (docs/protocol.md §7.3): m1 again, into c2, is refused as a
  // repeat (phase 0's pointer names c1, which holds the record) and answered with c1's.
  Batch elsewhere;
  elsewhere.add(AppendMessage{"c2", 5, "m1 in c2"});
  elsewhere.add(PutIdempotency{bob, "m1", IdempotencyRecord{"c2", 5, 9, later}});
  auto repeat = nodes->b->commit(elsewhere, true);
  ASSERT_FALSE(repeat.ok());
  EXPECT_EQ(nodes->b->behind().conversations, (std::vector<std::string>{"c2"}));
  EXPECT_EQ(*nodes->b->head("c2"), 4u);
  auto first_answer = nodes->b->send_idempotency(bob, "m1", "c2", now_ms());
  ASSERT_TRUE(first_answer.ok() && first_answer->has_value());
  EXPECT_EQ((*first_answer)->conversation_id, "c1");
  EXPECT_EQ((*first_answer)->seq, 2u);

  // An id whose earlier send never landed (its pointer names c1, which has no record: that
  // append was behind) is new in c2, and the pointer moves there.
  Batch lost;
  lost.add(AppendMessage{"c1", 2, "m5 lost"});
  lost.add(PutIdempotency{bob, "m5", IdempotencyRecord{"c1", 2, 9, later}});
  ASSERT_FALSE(nodes->b->commit(lost, true).ok());
  EXPECT_EQ(nodes->b->behind().conversations, (std::vector<std::string>{"c1"}));
  Batch moved;
  moved.add(AppendMessage{"c2", 5, "m5"});
  moved.add(PutIdempotency{bob, "m5", IdempotencyRecord{"c2", 5, 9, later}});
  ASSERT_TRUE(nodes->b->commit(moved, true).ok());
  EXPECT_EQ(*nodes->b->head("c2"), 5u);
  auto m5 = nodes->b->idempotency(bob, "m5", now_ms());  // through the pointer
  ASSERT_TRUE(m5.ok() && m5->has_value());
  EXPECT_EQ((*m5)->conversation_id, "c2");
  EXPECT_EQ((*m5)->seq, 5u);
}

// A store without dense appends (the contract suite's, tools) makes no idempotency check: its
// pointer's write is blind, so an id used again in another conversation commits there too.
TEST(RedisStoreCluster, WithoutDenseAppendsTheCommitChecksNoClientMsgId) {
  flush_masters(*g_cluster);
  auto plain = RedisStore::open(options_for(*g_cluster));
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  EXPECT_FALSE((*plain)->commit_checks_idempotency());
  const DeviceRef bob{"bob", 1};
  const int64_t later = now_ms() + 3'600'000;
  for (const char* conv : {"c1", "c2"}) {
    Batch b;
    b.add(AppendMessage{conv, 1, "m1"});
    b.add(PutIdempotency{bob, "m1", IdempotencyRecord{conv, 1, 7, later}});
    auto r = (*plain)->commit(b, true);
    ASSERT_TRUE(r.ok()) << conv << ": " << r.error().message;
  }
  auto rec = (*plain)->idempotency(bob, "m1", now_ms());  // through the pointer: the last one
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->conversation_id, "c2");
}

// A master dies during a commit. Whatever part landed, nothing is acknowledged, the log
// never holds a message whose inbox marks are missing (marks go first), no idempotency
// lookup answers for a message that is not in the log, and after the failover the resend
// commits and the device's inbox mark leads its replay to the message.
TEST(RedisStoreCluster, AMasterDyingBetweenThePhasesLosesNothingAndAnswersNoFalseSent) {
  RedisClusterServer cluster;
  auto started = cluster.start();
  ASSERT_TRUE(started.ok()) << started.error().message;
  RedisStoreOptions o = options_for(cluster);
  o.dense_appends = true;
  auto s = RedisStore::open(o);
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::string conv = "halfway";
  const uint16_t conv_master = *cluster.master_of(key_slot("{c:" + conv + "}"));
  // The recipient's inbox lives on another master than the conversation.
  std::string recipient;
  for (int i = 0; i < 10000 && recipient.empty(); ++i) {
    const std::string user = "bob" + std::to_string(i);
    auto m = cluster.master_of(key_slot("{d:" + user + "/1}"));
    if (m.ok() && *m != conv_master) recipient = user;
  }
  ASSERT_FALSE(recipient.empty());
  const DeviceRef dev{recipient, 1};
  const DeviceRef sender{"alice", 1};
  auto send = [&](Seq seq, const std::string& cmid) {
    Batch b;
    b.add(AppendMessage{conv, seq, "frame-" + std::to_string(seq)});
    b.add(PutIdempotency{sender, cmid, IdempotencyRecord{conv, seq, 7, 1'000'000'000}});
    b.add(InboxMark{dev, conv, seq});
    return (*s)->commit(b, true);
  };
  ASSERT_TRUE(send(1, "m1").ok());

  // The conversation's master dies: phase 0 (the mark, on another master) lands, phase 1
  // cannot: the commit fails with `unavailable` at once.
  auto replica = cluster.replica_of(conv_master);
  ASSERT_TRUE(replica.ok()) << replica.error().message;
  cluster.kill9(conv_master);
  const auto t0 = Clock::now();
  auto r = send(2, "m2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_LT(Clock::now() - t0, 1s);
  auto mark = (*s)->inbox(dev);
  ASSERT_TRUE(mark.ok());
  ASSERT_EQ(mark->size(), 1u);
  EXPECT_EQ((*mark)[0].second, 2u);  // ahead of the log: harmless, replay reads past the cursor

  // After the failover: the message is not in the log, no idempotency record answers for it
  // (its pointer is there, its record is not), the resend commits it, replay finds it.
  ASSERT_TRUE(cluster.await_healthy(30s).ok());
  const auto deadline = Clock::now() + 30s;
  Result<Seq> head = make_error(ErrorCode::kUnavailable, "not read");
  while (Clock::now() < deadline && !head.ok()) {
    head = (*s)->head(conv);
    if (!head.ok()) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(head.ok()) << head.error().message;
  EXPECT_EQ(*head, 1u);
  auto seen = (*s)->idempotency(sender, "m2", 0);
  ASSERT_TRUE(seen.ok());
  EXPECT_FALSE(seen->has_value());
  auto again = send(2, "m2");
  ASSERT_TRUE(again.ok()) << again.error().message;
  auto rec = (*s)->idempotency(sender, "m2", 0);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->seq, 2u);
  // Replay as a device session does it: the inbox mark is past the cursor, read the log.
  auto cursor = (*s)->cursor(dev, conv);
  ASSERT_TRUE(cursor.ok());
  auto msgs = (*s)->read_messages(conv, *cursor, 100);
  ASSERT_TRUE(msgs.ok());
  ASSERT_EQ(msgs->size(), 2u);
  EXPECT_EQ((*msgs)[1].frame, "frame-2");
  EXPECT_EQ(*replica, *cluster.master_of(key_slot("{c:" + conv + "}")));

  // The recipient's inbox master dies: phase 0 fails, so phase 1 never runs: the log does not
  // get a message its recipient's inbox would not point to.
  const uint16_t inbox_master = *cluster.master_of(key_slot("{d:" + recipient + "/1}"));
  cluster.kill9(inbox_master);
  auto blocked = send(3, "m3");
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.error().code, ErrorCode::kUnavailable);
  auto head3 = (*s)->head(conv);
  ASSERT_TRUE(head3.ok());
  EXPECT_EQ(*head3, 2u);
}

}  // namespace
}  // namespace tern::store::redis
