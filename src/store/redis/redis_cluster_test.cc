// RedisCluster: slot hashing against the Redis Cluster specification's values and a real
// cluster's CLUSTER KEYSLOT; routing on a plain redis-server and on a real 3+3 cluster;
// MOVED after a slot migration, ASK during one, a manual failover and a killed master; the
// topology that the clients of one loop's fibers share.
#include "store/redis/redis_cluster.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "base/fiber.h"
#include "base/metrics.h"
#include "store/redis/testing/redis_cluster_server.h"
#include "store/redis/testing/redis_server.h"
#include "store/redis/testing/run_until.h"

namespace tern::store::redis {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::RedisClusterServer;

std::string text(const Reply& r) { return std::string(r->str, r->len); }

TEST(RedisSlots, Crc16MatchesTheSpecification) {
  EXPECT_EQ(crc16_xmodem("123456789"), 0x31C3);
  EXPECT_EQ(crc16_xmodem(""), 0);
}

TEST(RedisSlots, HashTagRules) {
  EXPECT_EQ(hash_tag("{user1000}.following"), "user1000");
  EXPECT_EQ(hash_tag("foo{}{bar}"), "foo{}{bar}");  // empty first tag: the whole key
  EXPECT_EQ(hash_tag("foo{{bar}}zap"), "{bar");
  EXPECT_EQ(hash_tag("foo{bar}{zap}"), "bar");
  EXPECT_EQ(hash_tag("nobraces"), "nobraces");
  EXPECT_EQ(hash_tag("open{only"), "open{only");
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
  // Values Redis documents for CLUSTER KEYSLOT.
  EXPECT_EQ(key_slot("somekey"), 11058);
  EXPECT_EQ(key_slot("foo{hash_tag}"), 2515);
  EXPECT_EQ(key_slot("bar{hash_tag}"), 2515);
}

TEST(RedisSlots, ParsesSeedLists) {
  auto a = parse_redis_urls("redis://127.0.0.1:7000, 127.0.0.1:7001,redis://[::1]:7002");
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->size(), 3u);
  EXPECT_EQ((*a)[1].port, 7001);
  EXPECT_EQ((*a)[2].host, "::1");
  EXPECT_FALSE(parse_redis_urls("").ok());
  EXPECT_FALSE(parse_redis_urls("redis://a:1,").ok());
  EXPECT_FALSE(parse_redis_urls("redis://a:70000").ok());
  std::string many;
  for (int i = 0; i < 65; ++i) many += (i ? "," : "") + std::string("h:1");
  EXPECT_FALSE(parse_redis_urls(many).ok());
}

TEST(RedisInfo, ListsTheReplicasOfInfoReplication) {
  // As redis-server 7 writes it (lines end in CRLF), with a replica still syncing.
  const std::string info =
      "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n"
      "slave0:ip=127.0.0.1,port=6380,state=online,offset=1234,lag=0\r\n"
      "slave1:ip=::1,port=6381,state=wait_bgsave,offset=0,lag=0\r\n"
      "slave2:ip=10.0.0.7,port=6382,state=send_bulk,offset=0,lag=1\r\n"
      "master_failover_state:no-failover\r\nmaster_replid:5d2c1f6e\r\nmaster_repl_offset:1234\r\n"
      "slave_read_only:1\r\nslave_priority:100\r\nrepl_backlog_active:1\r\n";
  const auto got = replicas_in_info(info);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].host, "127.0.0.1");
  EXPECT_EQ(got[0].port, 6380);
  EXPECT_EQ(got[1].host, "::1");
  EXPECT_EQ(got[1].port, 6381);
  EXPECT_EQ(got[2].host, "10.0.0.7");
  EXPECT_EQ(got[2].port, 6382);
  // No replica; a replica's own INFO (its master's fields); LF only; the fields in another order.
  EXPECT_TRUE(replicas_in_info("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n").empty());
  EXPECT_TRUE(replicas_in_info("role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\n"
                               "slave_repl_offset:14\r\nslave_priority:100\r\nslave_read_only:1\r\n")
                  .empty());
  const auto lf = replicas_in_info("slave0:port=7001,ip=h1,state=online\nslave1:ip=h2,port=7002");
  ASSERT_EQ(lf.size(), 2u);
  EXPECT_EQ(lf[0].host, "h1");
  EXPECT_EQ(lf[0].port, 7001);
  EXPECT_EQ(lf[1].port, 7002);
  // Unusable lines are left out.
  for (const char* bad : {"slave0:ip=h,port=0", "slave0:ip=h,port=70000", "slave0:ip=h,port=12x", "slave0:ip=h",
                          "slave0:port=6380", "slave0:ip=,port=6380", "slavex:ip=h,port=6380", "slave:ip=h,port=6380",
                          ""})
    EXPECT_TRUE(replicas_in_info(bad).empty()) << bad;
}

TEST(RedisClusterPlain, OneRedisServerServesEverySlot) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto c = RedisCluster::open({.seeds = {RedisAddress{"127.0.0.1", server.port()}}});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE((*c)->is_cluster());
  EXPECT_EQ((*c)->masters().size(), 1u);
  for (std::string key : {"a", "b", "{c:x}:log"}) {
    auto r = (*c)->run(key_slot(key), {{"SET", key, "v" + key}, {"GET", key}});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(text((*r)[1]), "v" + key);
  }
  server.stop();
  const auto t0 = Clock::now();
  EXPECT_EQ((*c)->run1(key_slot("a"), {"GET", "a"}).error().code, ErrorCode::kUnavailable);
  EXPECT_LT(Clock::now() - t0, 1s);
}

TEST(RedisClusterPlain, NoSeedAnswersIsUnavailable) {
  const uint16_t port = testing::free_loopback_port();
  auto c = RedisCluster::open({.seeds = {RedisAddress{"127.0.0.1", port}}});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kUnavailable);
}

class RedisClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new RedisClusterServer();
    auto r = cluster_->start();
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  static std::unique_ptr<RedisCluster> client() {
    auto seeds = parse_redis_urls(cluster_->seeds3());
    EXPECT_TRUE(seeds.ok());
    auto c = RedisCluster::open({.seeds = *seeds});
    EXPECT_TRUE(c.ok()) << c.error().message;
    return c.ok() ? std::move(c).value() : nullptr;
  }
  // A key whose slot the given master serves (bounded search).
  static std::string key_on(uint16_t master, const std::string& prefix) {
    for (int i = 0; i < 10000; ++i) {
      std::string k = prefix + std::to_string(i);
      auto m = cluster_->master_of(key_slot(k));
      if (m.ok() && *m == master) return k;
    }
    return "";
  }

  static RedisClusterServer* cluster_;
};
RedisClusterServer* RedisClusterTest::cluster_ = nullptr;

TEST_F(RedisClusterTest, SlotsAgreeWithClusterKeyslot) {
  for (std::string key : {"somekey", "{c:g1}:log", "{u:alice}:ix", "{d:bob/1}:in", "x{}", "{}y", "é{ü}"}) {
    auto r = cluster_->command(cluster_->ports()[0], {"CLUSTER", "KEYSLOT", key});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, std::to_string(key_slot(key))) << key;
  }
}

TEST_F(RedisClusterTest, RoutesEveryKeyToItsMaster) {
  auto c = client();
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->is_cluster());
  EXPECT_EQ(c->masters().size(), 3u);
  std::vector<SlotCommands> batches;
  std::vector<std::string> keys;
  for (int i = 0; i < 200; ++i) keys.push_back("route:" + std::to_string(i));
  for (const auto& k : keys) {
    auto r = c->run(key_slot(k), {{"SET", k, "v" + k}});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(text((*r)[0]), "OK");
  }
  EXPECT_EQ(c->counters().moved, 0u);
  for (const auto& k : keys) batches.push_back(SlotCommands{key_slot(k), {{"GET", k}, {"STRLEN", k}}});
  auto many = c->run_many(batches);
  ASSERT_TRUE(many.ok()) << many.error().message;
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(text((*many)[i][0]), "v" + keys[i]);
    EXPECT_EQ((*many)[i][1]->integer, static_cast<long long>(keys[i].size() + 1));
  }
  // Each key is on the master the cluster names (read it there directly).
  for (int i = 0; i < 10; ++i) {
    auto m = cluster_->master_of(key_slot(keys[i]));
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(c->owner(key_slot(keys[i])), "127.0.0.1:" + std::to_string(*m));
    EXPECT_EQ(*cluster_->command(*m, {"GET", keys[i]}), "v" + keys[i]);
  }
}

TEST_F(RedisClusterTest, FollowsMovedAfterASlotMigration) {
  auto c = client();
  ASSERT_NE(c, nullptr);
  const std::string key = "{moved}:k";
  const uint16_t slot = key_slot(key);
  ASSERT_TRUE(c->run1(slot, {"SET", key, "before"}).ok());
  auto from = cluster_->master_of(slot);
  ASSERT_TRUE(from.ok());
  auto other = cluster_->another_master(*from);
  ASSERT_TRUE(other.ok());
  const uint16_t to = *other;
  auto moved = cluster_->move_slot(slot, to);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  // The client still thinks `from` serves the slot: MOVED, refresh, resend.
  EXPECT_EQ(c->owner(slot), "127.0.0.1:" + std::to_string(*from));
  Counter& moved_metric = MetricsRegistry::global().family("tern_redis_redirects_total", "kind", "").with("moved");
  Counter& refresh_metric = MetricsRegistry::global().counter("tern_redis_topology_refreshes_total", "");
  const uint64_t moved_before = moved_metric.value(), refreshes_before = refresh_metric.value();
  auto r = c->run(slot, {{"GET", key}, {"SET", key, "after"}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(text((*r)[0]), "before");
  EXPECT_EQ(c->counters().moved, 1u);
  EXPECT_EQ(moved_metric.value() - moved_before, 1u);  // GET /metrics counts it too
  EXPECT_GE(refresh_metric.value() - refreshes_before, 1u);
  EXPECT_EQ(c->owner(slot), "127.0.0.1:" + std::to_string(to));
  EXPECT_EQ(*cluster_->command(to, {"GET", key}), "after");
}

// Runs `body` in a fiber on `io` (driven by the test thread) to its end.
void in_fiber(boost::asio::io_context& io, std::function<void()> body) {
  Fiber fiber(io, std::move(body));
  boost::asio::post(io, [&] { fiber.resume(); });
  ASSERT_TRUE(testing::run_until(io, [&] { return fiber.done(); }));
}

// The clients of one loop's fibers (RedisStore's reads) share the loop's connections and
// topology: the second opens without reading the topology, and a MOVED that one of them
// follows moves the slot for the other too, which then goes to the new owner at once.
TEST_F(RedisClusterTest, TheFibersOfOneLoopShareWhatTheyLearnOfTheTopology) {
  auto seeds = parse_redis_urls(cluster_->seeds3());
  ASSERT_TRUE(seeds.ok());
  boost::asio::io_context io;
  LoopConnections connections;
  ClusterTopology topology;
  auto open = [&](std::unique_ptr<RedisCluster>& out) {
    in_fiber(io, [&] {
      auto c = RedisCluster::open({.seeds = *seeds, .shared = &connections, .topology = &topology});
      ASSERT_TRUE(c.ok()) << c.error().message;
      out = std::move(c).value();
    });
  };
  const std::string key = "{shared-topology}:k";
  const uint16_t slot = key_slot(key);
  std::unique_ptr<RedisCluster> first, second;
  open(first);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->counters().refreshes, 1u);
  in_fiber(io, [&] { EXPECT_TRUE(first->run1(slot, {"SET", key, "before"}).ok()); });
  open(second);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->counters().refreshes, 0u) << "the loop's topology was known";
  auto from = cluster_->master_of(slot);
  ASSERT_TRUE(from.ok());
  EXPECT_EQ(second->owner(slot), "127.0.0.1:" + std::to_string(*from));

  auto other = cluster_->another_master(*from);
  ASSERT_TRUE(other.ok());
  const uint16_t to = *other;
  auto moved = cluster_->move_slot(slot, to);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  in_fiber(io, [&] {
    auto r = first->run1(slot, {"GET", key});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(text(*r), "before");
  });
  EXPECT_EQ(first->counters().moved, 1u);
  EXPECT_EQ(second->owner(slot), "127.0.0.1:" + std::to_string(to)) << "learnt from the first";
  in_fiber(io, [&] { EXPECT_TRUE(second->run1(slot, {"SET", key, "after"}).ok()); });
  EXPECT_EQ(second->counters().moved, 0u) << "sent to the new owner at once";
  EXPECT_EQ(second->counters().refreshes, 0u);
  EXPECT_EQ(*cluster_->command(to, {"GET", key}), "after");
}

TEST_F(RedisClusterTest, FollowsAskDuringAMigration) {
  auto c = client();
  ASSERT_NE(c, nullptr);
  const std::string moved_key = "{ask}:moved", staying_key = "{ask}:staying", new_key = "{ask}:new";
  const uint16_t slot = key_slot(moved_key);
  ASSERT_TRUE(c->run(slot, {{"SET", moved_key, "m"}, {"SET", staying_key, "s"}}).ok());
  auto from = cluster_->master_of(slot);
  ASSERT_TRUE(from.ok());
  auto other = cluster_->another_master(*from);
  ASSERT_TRUE(other.ok());
  const uint16_t to = *other;
  auto begun = cluster_->begin_migration(slot, to, {moved_key});
  ASSERT_TRUE(begun.ok()) << begun.error().message;
  // One key is on the target already, the other still on the source; a new key goes to the
  // target. The slot still belongs to the source: the map does not change.
  Counter& ask_metric = MetricsRegistry::global().family("tern_redis_redirects_total", "kind", "").with("ask");
  const uint64_t ask_before = ask_metric.value();
  auto r = c->run(slot, {{"GET", moved_key}, {"GET", staying_key}, {"SET", new_key, "n"}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(text((*r)[0]), "m");
  EXPECT_EQ(text((*r)[1]), "s");
  EXPECT_EQ(text((*r)[2]), "OK");
  EXPECT_GE(c->counters().ask, 1u);
  EXPECT_EQ(ask_metric.value() - ask_before, c->counters().ask);
  EXPECT_EQ(c->counters().moved, 0u);
  EXPECT_EQ(c->owner(slot), "127.0.0.1:" + std::to_string(*from));
  auto done = cluster_->finish_migration(slot, to);
  ASSERT_TRUE(done.ok()) << done.error().message;
  auto after = c->run(slot, {{"GET", moved_key}, {"GET", staying_key}, {"GET", new_key}});
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(text((*after)[0]), "m");
  EXPECT_EQ(text((*after)[1]), "s");
  EXPECT_EQ(text((*after)[2]), "n");
  EXPECT_EQ(c->owner(slot), "127.0.0.1:" + std::to_string(to));
}

TEST_F(RedisClusterTest, RecoversFromAManualFailover) {
  auto c = client();
  ASSERT_NE(c, nullptr);
  const std::string key = "{failover}:k";
  const uint16_t slot = key_slot(key);
  ASSERT_TRUE(c->run1(slot, {"SET", key, "1"}).ok());
  auto master = cluster_->master_of(slot);
  ASSERT_TRUE(master.ok());
  auto replica = cluster_->replica_of(*master);
  ASSERT_TRUE(replica.ok()) << replica.error().message;
  auto f = cluster_->failover(*replica);
  ASSERT_TRUE(f.ok()) << f.error().message;
  // The old master is a replica now: it answers MOVED; the client follows and updates its map.
  auto r = c->run(slot, {{"INCR", key}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)[0]->integer, 2);
  EXPECT_EQ(c->owner(slot), "127.0.0.1:" + std::to_string(*replica));
  EXPECT_GE(c->counters().moved, 1u);
}

TEST_F(RedisClusterTest, RecoversFromAKilledMaster) {
  auto c = client();
  ASSERT_NE(c, nullptr);
  const std::string key = "{killed}:k";
  const uint16_t slot = key_slot(key);
  auto master = cluster_->master_of(slot);
  ASSERT_TRUE(master.ok());
  auto replica = cluster_->replica_of(*master);
  ASSERT_TRUE(replica.ok()) << replica.error().message;
  // Acknowledged by the master and its replica (WAIT), so the failover keeps it.
  auto w = c->run(slot, {{"SET", key, "kept"}, {"WAIT", "1", "2000"}});
  ASSERT_TRUE(w.ok());
  ASSERT_EQ((*w)[1]->integer, 1);
  cluster_->kill9(*master);
  // Until the replica is promoted, calls fail with `unavailable`, each at once; afterwards
  // they succeed without a new client.
  const auto deadline = Clock::now() + 30s;
  int failures = 0;
  std::optional<std::string> got;
  while (Clock::now() < deadline && !got) {
    const auto t0 = Clock::now();
    auto r = c->run1(slot, {"GET", key});
    EXPECT_LT(Clock::now() - t0, 1s);
    if (r.ok() && (*r)->type == REDIS_REPLY_STRING) {
      got = text(*r);
    } else {
      if (!r.ok()) {
        EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
      }
      ++failures;
      std::this_thread::sleep_for(50ms);
    }
  }
  ASSERT_TRUE(got.has_value()) << "no answer within 30 s of the kill";
  EXPECT_EQ(*got, "kept");
  EXPECT_GT(failures, 0);
  EXPECT_EQ(c->owner(slot), "127.0.0.1:" + std::to_string(*replica));
  // The old master comes back as a replica of the new one.
  ASSERT_TRUE(cluster_->restart(*master).ok());
  ASSERT_TRUE(cluster_->await_healthy(30s).ok());
  auto r = c->run1(slot, {"GET", key});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(text(*r), "kept");
}

}  // namespace
}  // namespace tern::store::redis
