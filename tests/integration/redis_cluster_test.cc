// Integration: three ternd nodes (--store redis --redis <3 seeds>) on a real 3-master +
// 3-replica Redis Cluster started by the test (issue 10): the members of a conversation on
// different nodes, dense seqs, live delivery, replay after reconnect; a ternd SIGKILLed under
// traffic; a Redis master killed under traffic and failed over to its replica; idempotency,
// receipts and typing across nodes; the whole cluster down for 30 s; a rolling restart.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "bus/redis/node_ring.h"
#include "integration/channel_joins.h"
#include "store/redis/redis_cluster.h"
#include "store/redis/testing/half_made_change.h"
#include "store/redis/testing/redis_cluster_server.h"
#include "support/server_test.h"

namespace tern::test {
namespace {

using store::redis::testing::RedisClusterServer;
using Clock = std::chrono::steady_clock;

struct Node {
  std::unique_ptr<TestServer> server;
  std::unique_ptr<Api> api;
};

// Sends until `sent`, resending the same client_msg_id after `unavailable` (a node's head was
// behind, or Redis is failing over), at most `tries` times, pausing `pause` between. Returns
// the seq, 0 if it never got `sent`.
Seq send_retrying(Device& d, const std::string& conv, const std::string& id, int tries = 100, ms pause = ms(0)) {
  for (int i = 0; i < tries; ++i) {
    auto a = d.send_wait(conv, id, id);
    if (!a) return 0;
    if (type_of(*a) == "sent") return seq_of(*a);
    if (jstr(*a, "code") != "unavailable") {
      ADD_FAILURE() << "unexpected answer " << dump(*a);
      return 0;
    }
    std::this_thread::sleep_for(pause);
  }
  return 0;
}

// One device sending into a conversation on its own thread until stop(), one send at a time,
// `pause` after each answer. Records what was acknowledged and how many `unavailable`
// answers came; any other error fails the test. No answer within 5 s ends the traffic, as a
// failure unless `node_may_die` (its ternd was killed).
class Traffic {
 public:
  Traffic(const Account& who, uint16_t port, std::string conv, ms pause, bool node_may_die)
      : thread_([this, who, port, conv = std::move(conv), pause, node_may_die] {
          Device d(who);
          if (d.connect(port) != 101 || !d.until_synced()) {
            ADD_FAILURE() << "traffic: could not connect";
            return;
          }
          for (int i = 0; i < 100000 && !stop_; ++i) {
            const std::string id = "t" + std::to_string(i);
            auto a = d.send_wait(conv, id, id, ms(5000));
            if (!a) {
              if (!node_may_die) ADD_FAILURE() << "no answer within 5 s to " << id;
              return;
            }
            if (type_of(*a) == "sent") {
              std::lock_guard lock(mu_);
              acked_[id] = seq_of(*a);
            } else {
              EXPECT_EQ(jstr(*a, "code"), "unavailable") << dump(*a);
              ++unavailable_;
            }
            std::this_thread::sleep_for(pause);
          }
        }) {}
  ~Traffic() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  size_t acked_count() {
    std::lock_guard lock(mu_);
    return acked_.size();
  }
  // Waits (bounded) until `n` sends were acknowledged.
  bool await_acked(size_t n, std::chrono::seconds within) {
    const auto deadline = Clock::now() + within;
    while (acked_count() < n && Clock::now() < deadline) std::this_thread::sleep_for(ms(20));
    return acked_count() >= n;
  }
  std::map<std::string, Seq> acked() {  // after stop()
    std::lock_guard lock(mu_);
    return acked_;
  }
  int unavailable() const { return unavailable_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> unavailable_{0};
  std::mutex mu_;
  std::map<std::string, Seq> acked_;
  std::thread thread_;  // last: starts after the members above exist
};

class RedisClusterIntegration : public ::testing::Test {
 protected:
  // One cluster for the suite (starting one takes seconds); each test starts its own nodes
  // and uses its own user names.
  static void SetUpTestSuite() {
    cluster_ = new RedisClusterServer();
    auto r = cluster_->start();
    ASSERT_TRUE(r.ok()) << "redis-server and redis-cli (scripts/setup.sh) must be installed: " << r.error().message;
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    for (size_t i = 0; i < 3; ++i) {
      std::vector<std::string> args{"--store",     "redis", "--redis",      cluster_->seeds3(), "--node-id",
                                    "n" + std::to_string(i), "--send-rate", "100000",          "--send-burst",
                                    "100000"};
      for (const auto& a : extra_args()) args.push_back(a);
      nodes_[i].server = std::make_unique<TestServer>(std::move(args));
      ASSERT_TRUE(nodes_[i].server->start()) << nodes_[i].server->error() << nodes_[i].server->log_tail();
      nodes_[i].api = std::make_unique<Api>(nodes_[i].server->port());
    }
  }
  void TearDown() override {
    if (HasFailure())
      for (auto& n : nodes_)
        if (n.server) std::cerr << n.server->log_tail(3000) << "\n";
  }
  // More ternd flags, the same for the three nodes.
  virtual std::vector<std::string> extra_args() const { return {}; }
  uint16_t port(size_t i) { return nodes_[i].server->port(); }
  // Every node sees the three live within 10 s (`who` reads their metrics).
  void await_all_live(const Account& who) {
    auto all_live = [&] {
      for (size_t i = 0; i < 3; ++i)
        if (metric_at(port(i), who, "tern_bus_live_nodes") != 3) return false;
      return true;
    };
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!all_live() && Clock::now() < deadline) std::this_thread::sleep_for(ms(50));
    ASSERT_TRUE(all_live());
  }

  // Every acknowledged (client_msg_id → seq) is in the log once, at that seq; the log is dense.
  void expect_log_holds(const Account& reader, const std::string& conv, const std::map<std::string, Seq>& acked,
                        size_t via) {
    Seq head = 0;
    auto log = nodes_[via].api->backfill_all(reader.token, conv, 0, &head);
    auto seqs = message_seqs(log, conv);
    ASSERT_FALSE(seqs.empty());
    EXPECT_TRUE(dense_range(seqs, 1, seqs.back()));
    std::map<std::string, Seq> in_log;
    for (const auto& f : log) {
      const std::string id = unb64(jstr(f, "body"));
      if (!acked.count(id)) continue;
      EXPECT_FALSE(in_log.count(id)) << id << " stored twice";
      in_log[id] = seq_of(f);
    }
    for (const auto& [id, s] : acked) {
      auto it = in_log.find(id);
      ASSERT_NE(it, in_log.end()) << id << " acknowledged at " << s << " but not in the log";
      EXPECT_EQ(it->second, s) << id;
    }
  }

  // `who` connects a new device session through node `via`; its replay (the frames before
  // `synced`) holds every seq of `expected`.
  void expect_replay(const Account& who, size_t via, const std::string& conv,
                     const std::map<std::string, Seq>& expected) {
    Device d(who);
    ASSERT_EQ(d.connect(port(via)), 101);
    auto replay = d.until_synced(ms(20000));
    ASSERT_TRUE(replay);
    std::set<Seq> have;
    for (Seq s : message_seqs(*replay, conv)) have.insert(s);
    for (const auto& [id, s] : expected) EXPECT_TRUE(have.count(s)) << id << " at " << s << " not replayed";
  }

  static RedisClusterServer* cluster_;
  Node nodes_[3];
};
RedisClusterServer* RedisClusterIntegration::cluster_ = nullptr;

// alice on node 0, bob on node 1, carol on node 2, in one group: concurrent sends from all
// three nodes get dense seqs, each message once; every member gets every message live; carol,
// disconnected while the others send, replays them through another node.
TEST_F(RedisClusterIntegration, MembersOnThreeNodesGetDenseSeqsLiveDeliveryAndReplay) {
  Account alice = nodes_[0].api->must_register("alice");
  Account bob = nodes_[1].api->must_register("bob");
  Account carol = nodes_[2].api->must_register("carol");
  // Three members who only read, one on each node.
  Account r0 = nodes_[0].api->must_register("reader0");
  Account r1 = nodes_[1].api->must_register("reader1");
  Account r2 = nodes_[2].api->must_register("reader2");
  const std::string group =
      nodes_[1].api->must_group(bob.token, "g", {"alice", "carol", "reader0", "reader1", "reader2"});
  ASSERT_FALSE(group.empty());
  const Account* who[3] = {&alice, &bob, &carol};
  const Account* reader_accounts[3] = {&r0, &r1, &r2};
  std::vector<std::unique_ptr<Device>> readers;
  for (size_t i = 0; i < 3; ++i) {
    readers.push_back(std::make_unique<Device>(*reader_accounts[i]));
    ASSERT_EQ(readers[i]->connect(port(i)), 101);
    ASSERT_TRUE(readers[i]->until_synced());
  }
  constexpr int kEach = 20;
  std::map<std::string, Seq> acked;
  std::mutex mu;
  auto sender = [&](size_t i) {
    Device d(*who[i]);
    if (d.connect(port(i)) != 101 || !d.until_synced()) {
      ADD_FAILURE() << "sender " << i << " could not connect";
      return;
    }
    for (int k = 0; k < kEach; ++k) {
      const std::string id = "s" + std::to_string(i) + "-" + std::to_string(k);
      const Seq s = send_retrying(d, group, id);
      std::lock_guard lock(mu);
      acked[id] = s;
    }
  };
  std::thread t0(sender, 0), t1(sender, 1), t2(sender, 2);
  t0.join();
  t1.join();
  t2.join();
  ASSERT_EQ(acked.size(), 3u * kEach);
  Seq top = 0;
  for (const auto& [id, s] : acked) {
    EXPECT_NE(s, 0u) << id << " never got `sent`";
    top = std::max(top, s);
  }
  ASSERT_NO_FATAL_FAILURE(expect_log_holds(alice, group, acked, 2));
  // Live on every node: each reader sees every message up to the top seq (dense).
  for (size_t i = 0; i < 3; ++i) {
    auto msgs = readers[i]->collect_messages(group, top, ms(10000));
    std::set<Seq> live;
    for (Seq s : message_seqs(msgs, group)) live.insert(s);
    for (const auto& [id, s] : acked) EXPECT_TRUE(live.count(s)) << "reader " << i << " missed " << id << " live";
  }
  // reader2 leaves; alice (node 0) sends 10 more; reader2 comes back through node 1 and
  // replays them.
  readers[2]->close();
  std::map<std::string, Seq> later;
  Device da(alice);
  ASSERT_EQ(da.connect(port(0)), 101);
  ASSERT_TRUE(da.until_synced());
  for (int k = 0; k < 10; ++k) {
    const std::string id = "later" + std::to_string(k);
    later[id] = send_retrying(da, group, id);
    ASSERT_NE(later[id], 0u);
  }
  ASSERT_NO_FATAL_FAILURE(expect_replay(r2, 1, group, later));
}

// A ternd node SIGKILLed under traffic: its clients reconnect to another node and find every
// acknowledged message there, once, dense.
TEST_F(RedisClusterIntegration, ATerndSigkilledUnderTrafficLosesNothing) {
  Account dave = nodes_[0].api->must_register("dave");
  Account erin = nodes_[1].api->must_register("erin");
  const std::string conv = nodes_[0].api->must_direct(dave.token, "erin");
  Traffic traffic(dave, port(0), conv, ms(0), /*node_may_die=*/true);
  EXPECT_TRUE(traffic.await_acked(30, std::chrono::seconds(10)));
  nodes_[0].server->kill();
  traffic.stop();
  std::map<std::string, Seq> acked = traffic.acked();
  ASSERT_GE(acked.size(), 30u);
  // dave comes back through node 2; erin (node 1) replays after a reconnect through node 2.
  Device dd(dave);
  ASSERT_EQ(dd.connect(port(2)), 101);
  ASSERT_TRUE(dd.until_synced());
  const Seq next = send_retrying(dd, conv, "after-kill");
  ASSERT_NE(next, 0u);
  acked["after-kill"] = next;
  ASSERT_NO_FATAL_FAILURE(expect_replay(erin, 2, conv, acked));
  ASSERT_NO_FATAL_FAILURE(expect_log_holds(erin, conv, acked, 1));
}

// The Redis master that serves a conversation is killed under traffic and its replica takes
// over: sends get `unavailable` for a moment, never a false `sent`; nothing acknowledged is
// lost; the nodes heal by themselves. Every Redis write waits for the replica
// (--redis-wait-replicas 1), so what was acknowledged survives the failover.
TEST_F(RedisClusterIntegration, ARedisMasterFailedOverUnderTrafficLosesNothingAcknowledged) {
  // These nodes wait for one replica before `sent`.
  for (size_t i = 0; i < 3; ++i) {
    nodes_[i].server->terminate();
    nodes_[i].server = std::make_unique<TestServer>(std::vector<std::string>{
        "--store", "redis", "--redis", cluster_->seeds3(), "--node-id", "w" + std::to_string(i),
        "--redis-wait-replicas", "1", "--send-rate", "100000", "--send-burst", "100000"});
    ASSERT_TRUE(nodes_[i].server->start()) << nodes_[i].server->error() << nodes_[i].server->log_tail();
    nodes_[i].api = std::make_unique<Api>(nodes_[i].server->port());
  }
  Account fay = nodes_[0].api->must_register("fay");
  Account gus = nodes_[1].api->must_register("gus");
  const std::string conv = nodes_[0].api->must_direct(fay.token, "gus");
  ASSERT_FALSE(conv.empty());
  Device dg(gus);
  ASSERT_EQ(dg.connect(port(1)), 101);
  ASSERT_TRUE(dg.until_synced());
  const uint16_t slot = store::redis::key_slot("{c:" + conv + "}");
  auto master = cluster_->master_of(slot);
  ASSERT_TRUE(master.ok());
  auto replica = cluster_->replica_of(*master);
  ASSERT_TRUE(replica.ok()) << replica.error().message;

  Traffic traffic(fay, port(0), conv, ms(10), /*node_may_die=*/false);  // bounded: replayed below
  ASSERT_TRUE(traffic.await_acked(30, std::chrono::seconds(10)));
  cluster_->kill9(*master);
  ASSERT_TRUE(cluster_->await_healthy(std::chrono::seconds(30)).ok());
  // The promoted replica has no replica of its own: with --redis-wait-replicas 1 its writes
  // are refused (`unavailable`) until the old master is back, as its replica.
  ASSERT_TRUE(cluster_->restart(*master).ok());
  ASSERT_TRUE(cluster_->replica_of(*replica).ok());
  // Healed: sends are acknowledged again (bounded wait).
  const size_t at_failover = traffic.acked_count();
  EXPECT_TRUE(traffic.await_acked(at_failover + 20, std::chrono::seconds(20)))
      << "the nodes did not heal within 20 s of the failover";
  traffic.stop();
  const std::map<std::string, Seq> acked = traffic.acked();
  EXPECT_GT(traffic.unavailable(), 0) << "the failover was not seen by any send";
  std::cerr << "[redis-cluster] acknowledged " << acked.size() << ", unavailable during the failover "
            << traffic.unavailable() << "\n";
  EXPECT_EQ(*cluster_->master_of(slot), *replica);
  ASSERT_NO_FATAL_FAILURE(expect_log_holds(gus, conv, acked, 2));
  // gus, connected to node 1 throughout, replays everything after a reconnect.
  dg.close();
  ASSERT_NO_FATAL_FAILURE(expect_replay(gus, 1, conv, acked));
}

// What the other tests of this suite leave out, across ternd nodes on the Cluster: a
// client_msg_id sent again through another node is answered with its first seq and stored
// once; receipts (an ack and a read by a member on node 1) reach the sender's device on node 2
// live, and again after it reconnects through node 0 (they are durable); typing crosses nodes.
TEST_F(RedisClusterIntegration, IdempotencyReceiptsAndTypingHoldAcrossNodes) {
  Account lee = nodes_[0].api->must_register("lee");
  Account may = nodes_[1].api->must_register("may");
  const std::string conv = nodes_[0].api->must_direct(lee.token, "may");
  ASSERT_FALSE(conv.empty());
  Device dm(may);
  ASSERT_TRUE(dm.connect_synced(port(1)));
  std::map<std::string, Seq> acked;
  {
    Device first(lee);
    ASSERT_TRUE(first.connect_synced(port(0)));
    for (const char* id : {"one", "two"}) {
      acked[id] = send_retrying(first, conv, id);
      ASSERT_NE(acked[id], 0u) << id;
    }
  }
  Device dl(lee);  // the same device, now through node 2
  ASSERT_TRUE(dl.connect_synced(port(2)));
  EXPECT_EQ(send_retrying(dl, conv, "one"), acked["one"]) << "a resend through another node got a new seq";

  auto live = dm.collect_messages(conv, acked["two"], ms(10000));
  const auto live_seqs = message_seqs(live, conv);
  ASSERT_FALSE(live_seqs.empty());
  EXPECT_EQ(live_seqs.back(), acked["two"]);
  ASSERT_TRUE(dm.ack(conv, acked["two"]));
  auto delivered = dl.read_until(
      [&](const json::object& o) {
        return type_of(o) == "receipt" && jstr(o, "status") == "delivered" && seq_of(o) == acked["two"];
      },
      ms(10000));
  EXPECT_TRUE(delivered) << "the delivered receipt did not cross nodes";
  ASSERT_TRUE(dm.read(conv, acked["one"]));
  auto read = dl.read_until(
      [&](const json::object& o) {
        return type_of(o) == "receipt" && jstr(o, "status") == "read" && seq_of(o) == acked["one"];
      },
      ms(10000));
  EXPECT_TRUE(read) << "the read receipt did not cross nodes";
  ASSERT_TRUE(dm.typing(conv, true));
  auto typing = dl.read_until(
      [&](const json::object& o) { return type_of(o) == "typing" && jstr(o, "conversation_id") == conv; }, ms(10000));
  EXPECT_TRUE(typing) << "typing did not cross nodes";

  // Durable: lee's device, back through node 0, is told both marks again (receipts may come
  // before or after `synced`: gathered for a bounded time).
  dl.close();
  Device again(lee);
  ASSERT_EQ(again.connect(port(0)), 101);
  bool got_delivered = false, got_read = false;
  std::vector<json::object> frames;
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (!(got_delivered && got_read) && Clock::now() < until) {
    auto f = again.read_frame(ms(500));
    if (!f) continue;
    if (type_of(*f) == "receipt" && jstr(*f, "conversation_id") == conv && jstr(*f, "user") == "may") {
      if (jstr(*f, "status") == "delivered" && seq_of(*f) == acked["two"]) got_delivered = true;
      if (jstr(*f, "status") == "read" && seq_of(*f) == acked["one"]) got_read = true;
    }
    frames.push_back(std::move(*f));
  }
  EXPECT_TRUE(got_delivered) << "no delivered receipt after reconnecting:\n" << dump_frames(frames);
  EXPECT_TRUE(got_read) << "no read receipt after reconnecting:\n" << dump_frames(frames);
  ASSERT_NO_FATAL_FAILURE(expect_log_holds(may, conv, acked, 1));  // "one" once, at its first seq
}

// One device sends each client_msg_id through two nodes at once. Send routing is off on
// these two nodes, so both sequence the conversation: the commit's check of the record in the
// conversation's slot (redis_scripts.h, op 'j') is what refuses the second. Each id is answered
// with one seq through both nodes and stored once; the log stays dense. The same id sent into
// another conversation gets the first answer (op 'p').
TEST_F(RedisClusterIntegration, AClientMsgIdSentThroughTwoNodesAtOnceIsStoredOnce) {
  std::unique_ptr<TestServer> pair[2];
  for (int i = 0; i < 2; ++i) {
    pair[i] = std::make_unique<TestServer>(std::vector<std::string>{
        "--store", "redis", "--redis", cluster_->seeds3(), "--node-id", "x" + std::to_string(i), "--send-rate",
        "100000", "--send-burst", "100000", "--redis-route-sends", "0", "--redis-route-devices", "0"});
    ASSERT_TRUE(pair[i]->start()) << pair[i]->error() << pair[i]->log_tail();
  }
  Api api(pair[0]->port());
  Account ida = api.must_register("ida");
  Account jo = api.must_register("jo");
  const std::string conv = api.must_direct(ida.token, "jo");
  ASSERT_FALSE(conv.empty());
  Device on_a(ida), on_b(ida);
  ASSERT_TRUE(on_a.connect_synced(pair[0]->port()));
  ASSERT_TRUE(on_b.connect_synced(pair[1]->port()));

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
  for (const auto& [id, s] : got_a) EXPECT_NE(s, 0u) << id;
  ASSERT_NO_FATAL_FAILURE(expect_log_holds(jo, conv, got_a, 0));  // each once, at its seq

  // An id counts per device (docs/protocol.md §7.3): "both0" sent into another conversation
  // is answered with its first conversation and seq, and that conversation stays empty.
  api.must_register("kit");
  const std::string other = api.must_direct(ida.token, "kit");
  ASSERT_FALSE(other.empty());
  auto again = on_b.send_wait(other, "both0", "both0 elsewhere");
  ASSERT_TRUE(again);
  EXPECT_EQ(type_of(*again), "sent") << dump(*again);
  EXPECT_EQ(jstr(*again, "conversation_id"), conv);
  EXPECT_EQ(seq_of(*again), got_a["both0"]);
  Seq other_head = 0;
  auto other_log = api.backfill_all(ida.token, other, 0, &other_head);
  EXPECT_TRUE(message_seqs(other_log, other).empty());  // a direct conversation starts empty
  if (HasFailure())
    for (auto& p : pair) std::cerr << p->log_tail(3000) << "\n";
}

// Every node of the Redis Cluster down for 30 s (issue 10's classic question, on the Cluster;
// last in the suite, which shares the cluster): each send is answered at once with
// `unavailable` (never `sent`, never a hang), the clients stay connected to their ternd nodes,
// and once the cluster is back the nodes heal by themselves: nothing acknowledged before is
// lost, the log stays dense, and a member on another node gets the next message live.
TEST_F(RedisClusterIntegration, TheWholeClusterDownFor30sAnswersUnavailableAndHeals) {
  constexpr auto kDown = std::chrono::seconds(30);
  Account hal = nodes_[0].api->must_register("hal");
  Account ivy = nodes_[1].api->must_register("ivy");
  const std::string conv = nodes_[0].api->must_direct(hal.token, "ivy");
  ASSERT_FALSE(conv.empty());
  Device dh(hal), di(ivy);
  ASSERT_EQ(dh.connect(port(0)), 101);
  ASSERT_TRUE(dh.until_synced());
  ASSERT_EQ(di.connect(port(1)), 101);
  ASSERT_TRUE(di.until_synced());
  std::map<std::string, Seq> acked;
  for (int i = 1; i <= 10; ++i) {
    const std::string id = "before" + std::to_string(i);
    acked[id] = send_retrying(dh, conv, id, 100, ms(50));
    ASSERT_EQ(acked[id], Seq(i)) << id;
  }

  for (uint16_t p : cluster_->ports()) cluster_->kill9(p);
  const auto until = Clock::now() + kDown;
  int answered = 0;
  ms slowest(0);
  for (int i = 0; Clock::now() < until && i < 1000; ++i) {
    const auto t0 = Clock::now();
    const std::string id = "down" + std::to_string(i);
    auto a = dh.send_wait(conv, id, id, ms(5000));  // the body is the id (expect_log_holds)
    const auto took = std::chrono::duration_cast<ms>(Clock::now() - t0);
    ASSERT_TRUE(a) << "no answer within 5 s while the cluster is down";
    ASSERT_EQ(type_of(*a), "error") << dump(*a);
    EXPECT_EQ(jstr(*a, "code"), "unavailable") << dump(*a);
    slowest = std::max(slowest, took);
    ++answered;
    std::this_thread::sleep_for(ms(200));
  }
  EXPECT_LT(slowest, ms(1000)) << "the slowest `unavailable` took " << slowest.count() << " ms";
  EXPECT_GT(answered, 10);
  EXPECT_TRUE(dh.is_open());
  EXPECT_TRUE(di.is_open());

  // All six back at once (well within the node timeout of each other: no failover), on their
  // ports and data directories (appendfsync always: everything acknowledged is in the AOFs).
  for (uint16_t p : cluster_->ports()) ASSERT_TRUE(cluster_->restart(p).ok()) << p;
  ASSERT_TRUE(cluster_->await_healthy(std::chrono::seconds(60)).ok());
  // The nodes heal by themselves: the first failed message, sent again, is accepted within a
  // bounded time with the next seq (nothing from the outage was stored).
  const auto heal_deadline = Clock::now() + std::chrono::seconds(20);
  Seq s = 0;
  while (s == 0 && Clock::now() < heal_deadline) {
    auto a = dh.send_wait(conv, "down0", "down0", ms(5000));
    ASSERT_TRUE(a);
    if (type_of(*a) == "sent") s = seq_of(*a);
    else std::this_thread::sleep_for(ms(100));
  }
  ASSERT_EQ(s, 11u) << "the nodes did not heal within 20 s of the cluster's return";
  std::cerr << "[redis-cluster] down: " << answered << " sends answered `unavailable`, the slowest in "
            << slowest.count() << " ms; healed "
            << std::chrono::duration_cast<ms>(Clock::now() - (heal_deadline - std::chrono::seconds(20))).count()
            << " ms after the cluster was healthy again\n";
  acked["down0"] = s;
  EXPECT_TRUE(dh.is_open());
  // ivy, connected to node 1 through the outage, gets it live (node 1 subscribes again).
  auto live = di.read_until([&](const json::object& o) { return type_of(o) == "message" && seq_of(o) == 11; },
                            ms(20000));
  EXPECT_TRUE(live) << "node 1 did not deliver the message sent through node 0 after the outage";
  ASSERT_NO_FATAL_FAILURE(expect_log_holds(ivy, conv, acked, 2));
}

// A rolling restart: nodes 0 and 1 are each stopped with SIGTERM and started again (same node
// id) while two members connected to node 2 send into groups that node 0 and node 1 sequence
// (their sends are forwarded there). The stopping node leaves the others' rings first and
// serves what they forwarded meanwhile, and the restarted node takes its groups back: every
// send is acknowledged (not one `unavailable` or `draining`), and the logs hold each once,
// dense.
TEST_F(RedisClusterIntegration, ARollingRestartIsNotSeenByTheClientsOfTheOtherNodes) {
  Account kim = nodes_[2].api->must_register("kim");
  Account lou = nodes_[2].api->must_register("lou");
  // Every node sees the three (they agree on the owners) before the traffic starts.
  ASSERT_NO_FATAL_FAILURE(await_all_live(kim));
  // A group of kim's that each of nodes 0 and 1 sequences, as node 2's ring sees all three.
  bus::NodeRing ring("n2", std::chrono::seconds(5));
  ring.set_live({"n0", "n1", "n2"});
  std::string group_of[2];
  for (int i = 0; i < 60 && (group_of[0].empty() || group_of[1].empty()); ++i) {
    std::string g = nodes_[2].api->must_group(kim.token, "r" + std::to_string(i), {"lou"});
    const std::string owner = ring.owner(g);
    if (owner == "n0" && group_of[0].empty()) group_of[0] = g;
    if (owner == "n1" && group_of[1].empty()) group_of[1] = g;
  }
  ASSERT_FALSE(group_of[0].empty() || group_of[1].empty()) << "nodes 0 and 1 do not each own one of 60 groups";
  Traffic to0(kim, port(2), group_of[0], ms(2), /*node_may_die=*/false);
  Traffic to1(lou, port(2), group_of[1], ms(2), /*node_may_die=*/false);
  auto both_grow = [&](size_t by) {
    const size_t a = to0.acked_count(), b = to1.acked_count();
    return to0.await_acked(a + by, std::chrono::seconds(20)) && to1.await_acked(b + by, std::chrono::seconds(20));
  };
  ASSERT_TRUE(both_grow(20));
  double forwarded = 0;
  for (size_t i = 0; i < 2; ++i) {
    // Node 2 forwards the sends (to node 0 and node 1) right up to the stop.
    const double now_forwarded = metric_at(port(2), kim, "tern_sends_forwarded_total");
    EXPECT_GE(now_forwarded, forwarded + 20) << "node 2 did not forward the sends before node " << i << " stopped";
    forwarded = now_forwarded;
    EXPECT_EQ(nodes_[i].server->terminate(), 0) << nodes_[i].server->log_tail();
    EXPECT_TRUE(both_grow(20)) << "sends stalled after node " << i << " stopped";
    ASSERT_TRUE(nodes_[i].server->restart()) << nodes_[i].server->error() << nodes_[i].server->log_tail();
    nodes_[i].api = std::make_unique<Api>(nodes_[i].server->port());
    EXPECT_TRUE(both_grow(20)) << "sends stalled after node " << i << " came back";
  }
  to0.stop();
  to1.stop();
  EXPECT_EQ(to0.unavailable() + to1.unavailable(), 0) << "a send failed while a node restarted";
  ASSERT_NO_FATAL_FAILURE(expect_log_holds(kim, group_of[0], to0.acked(), 2));
  ASSERT_NO_FATAL_FAILURE(expect_log_holds(lou, group_of[1], to1.acked(), 2));
}

// A node that dies mid-change leaves the channel's change lease behind ({c:<id>}:lk, three
// command timeouts; redis_change_lease.h), and every other change is refused until it
// expires. A join meanwhile, through a node that hands it to the channel's sequencing node,
// waits it out and is answered with its count once the lease is gone: the sequencing node
// makes it again for up to 1.5 s, below the bus's 2 s request timeout, and hands it back
// refused; the first node hands it again (Sequencer::change_channel). Before, it was answered
// `unavailable` after the sequencing node's first quick attempts.
TEST_F(RedisClusterIntegration, AJoinWhileADeadNodesChangeLeaseHoldsTheChannelLandsOnceItExpires) {
  Account owner = nodes_[0].api->must_register("leaseowner");
  Account joiner = nodes_[1].api->must_register("leasejoiner");
  ASSERT_NO_FATAL_FAILURE(await_all_live(owner));  // they agree on the channel's sequencing node
  auto made = http_request(port(0), "POST", "/v1/conversations", R"({"type":"channel","name":"held","public":true})",
                           owner.token);
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string ch = jstr(made.obj(), "conversation_id");
  bus::NodeRing ring("n0", std::chrono::seconds(5));
  ring.set_live({"n0", "n1", "n2"});
  const std::string sequencer = ring.owner(ch).empty() ? "n0" : ring.owner(ch);
  const size_t via = sequencer == "n1" ? 2 : 1;  // a node that hands the join over
  const double forwarded_before = metric_at(port(via), owner, "tern_channel_changes_forwarded_total");

  const std::string lease = "{c:" + ch + "}:lk";
  auto master = cluster_->master_of(store::redis::key_slot(lease));
  ASSERT_TRUE(master.ok()) << master.error().message;
  const auto held_from = Clock::now();
  auto set = cluster_->command(*master, {"SET", lease, "a-dead-nodes-token", "PX", "3000"});
  ASSERT_TRUE(set.ok() && *set == "OK") << (set.ok() ? *set : set.error().message);

  auto r = http_request(port(via), "POST", "/v1/conversations/" + ch + "/join", "{}", joiner.token);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(jint(r.obj(), "subscribers"), 2);
  EXPECT_GE(Clock::now() - held_from, ms(3000)) << "made while another commit held the lease";
  EXPECT_GE(metric_at(port(via), owner, "tern_channel_changes_forwarded_total"), forwarded_before + 2)
      << "handed to the sequencing node, back, and again";
  expect_count_shown({port(0), port(1), port(2)}, ch, owner, 2);
}

// A node that died between the phases of a join left the user's subscription row and the
// redo record, not the record: the count is one low. The client, whose connection dropped
// without an answer, joins again through another node: the join finds the user subscribed,
// commits the record unchanged (Channels::settle), which makes the dead join first, is made
// again from the record read again and answered with the count that counts it. Before, it
// was answered at once with the count one low, and the count stayed so.
TEST_F(RedisClusterIntegration, AJoinMadeAgainAfterItsNodeDiedHalfWayIsCountedOnce) {
  Account owner = nodes_[0].api->must_register("halfowner");
  Account joiner = nodes_[1].api->must_register("halfjoiner");
  auto made = http_request(port(0), "POST", "/v1/conversations", R"({"type":"channel","name":"half","public":true})",
                           owner.token);
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string ch = jstr(made.obj(), "conversation_id");
  auto seeds = store::redis::parse_redis_urls(cluster_->seeds3());
  ASSERT_TRUE(seeds.ok());
  store::redis::RedisClusterOptions o;
  o.seeds = *seeds;
  auto raw = store::redis::RedisCluster::open(o);
  ASSERT_TRUE(raw.ok()) << raw.error().message;
  auto stopped = store::redis::testing::stop_a_join_half_way(**raw, ch, joiner.user, ms(300));
  ASSERT_TRUE(stopped.ok()) << stopped.error().message;

  for (size_t via : {2u, 1u}) {  // made again, then once more: counted once
    auto r = http_request(port(via), "POST", "/v1/conversations/" + ch + "/join", "{}", joiner.token);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(jint(r.obj(), "subscribers"), 2) << "through node " << via;
  }
  expect_count_shown({port(0), port(1), port(2)}, ch, owner, 2);
}

// Three nodes that each make the channel changes they receive (`--redis-route-sends 0`), as
// nodes whose live sets differ do (docs/scaling.md, "Channels across nodes").
class RedisClusterRoutingOff : public RedisClusterIntegration {
 protected:
  std::vector<std::string> extra_args() const override { return {"--redis-route-sends", "0"}; }
};

// 18 users join a public channel at once, six through each node, each node making its own
// changes: a change computed from a copy of the channel no longer stored is refused whole and
// made again, so the answers are the counts 2 to 19, each once, and every node shows 19. On a
// Cluster a change's subscription row is written in phase 0, before the conversation's
// script checks the record: a change that passed the check before phase 0 and lost in phase
// 1 left its row, and its retry found the user subscribed and counted nothing.
TEST_F(RedisClusterRoutingOff, JoinsThroughThreeNodesThatAllSequenceTheChannelAreEachCounted) {
  Account owner = nodes_[0].api->must_register("chowner");
  std::vector<Account> users;
  for (size_t i = 0; i < 18; ++i) users.push_back(nodes_[i % 3].api->must_register("joiner" + std::to_string(i)));
  auto made = http_request(port(0), "POST", "/v1/conversations", R"({"type":"channel","name":"news","public":true})",
                           owner.token);
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string ch = jstr(made.obj(), "conversation_id");
  expect_joins_at_once_each_counted({port(0), port(1), port(2)}, users, ch, owner);
}

}  // namespace
}  // namespace tern::test
