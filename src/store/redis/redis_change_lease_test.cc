// The change lease of a channel's change on a real 3-master + 3-replica Redis Cluster
// (redis_change_lease.h): taken only from the expected record and by one commit at a time,
// given back, expired; a commit that meets another's lease writes nothing; the phase-1
// script's check of it (op 'l'); the redo record of a change that stopped half way, made by
// the next change, or dropped.
#include "store/redis/redis_change_lease.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <thread>

#include "base/metrics.h"
#include "store/redis/redis_cluster.h"
#include "store/redis/redis_scripts.h"
#include "store/redis/redis_store.h"
#include "store/redis/testing/half_made_change.h"
#include "store/redis/testing/redis_cluster_server.h"
#include "store/rocksdb/encoding.h"

namespace tern::store::redis {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::RedisClusterServer;

class ChangeLeaseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new RedisClusterServer();
    auto r = cluster_->start();
    ASSERT_TRUE(r.ok()) << "cannot start the Redis Cluster: " << r.error().message;
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    auto flushed = cluster_->flush_masters();
    ASSERT_TRUE(flushed.ok()) << flushed.error().message;
    auto seeds = parse_redis_urls(cluster_->seeds3());
    ASSERT_TRUE(seeds.ok());
    RedisClusterOptions o;
    o.seeds = *seeds;
    auto c = RedisCluster::open(o);
    ASSERT_TRUE(c.ok()) << c.error().message;
    raw_ = std::move(*c);
  }
  RedisStoreOptions store_options() const {
    RedisStoreOptions o;
    o.seeds = *parse_redis_urls(cluster_->seeds3());
    o.dense_appends = true;  // as ternd opens it
    return o;
  }
  // One command on the key's master; its reply as text, or as a number in text.
  std::string cmd(const std::vector<std::string_view>& argv) {
    auto r = raw_->run1(key_slot(argv.at(1)), argv);
    if (!r) {
      ADD_FAILURE() << r.error().message;
      return "";
    }
    const redisReply* x = r->get();
    if (x->type == REDIS_REPLY_INTEGER) return std::to_string(x->integer);
    if (x->type == REDIS_REPLY_NIL) return "(nil)";
    return std::string(x->str, x->len);
  }

  static RedisClusterServer* cluster_;
  std::unique_ptr<RedisCluster> raw_;
};
RedisClusterServer* ChangeLeaseTest::cluster_ = nullptr;

TEST_F(ChangeLeaseTest, IsTakenOnlyFromTheExpectedRecordByOneCommitAtATime) {
  cmd({"SET", "{c:ch}:m", "v1"});
  ChangeLeases a(*raw_, 60s), b(*raw_, 60s);
  auto stale = a.take("ch", "v0", {});
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, ErrorCode::kExists);
  EXPECT_EQ(cmd({"EXISTS", "{c:ch}:lk"}), "0") << "a stale change takes no lease";
  EXPECT_TRUE(a.token_for("ch").empty());
  ASSERT_TRUE(a.take("ch", "v1", {}).ok());
  EXPECT_FALSE(a.token_for("ch").empty());
  EXPECT_TRUE(a.token_for("other").empty());
  EXPECT_EQ(cmd({"GET", "{c:ch}:lk"}), std::string(a.token_for("ch")));
  const long ttl = std::stol(cmd({"PTTL", "{c:ch}:lk"}));
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 60'000);
  auto second = b.take("ch", "v1", {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kExists) << "one commit at a time";
  a.release();
  EXPECT_EQ(cmd({"EXISTS", "{c:ch}:lk"}), "0");
  ASSERT_TRUE(b.take("ch", "v1", {}).ok());
  a.release();  // a holds nothing now: b's lease stays
  EXPECT_EQ(cmd({"GET", "{c:ch}:lk"}), std::string(b.token_for("ch")));
  // A record not stored matches nothing.
  auto none = b.take("nothing", "v1", {});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kExists);
}

TEST_F(ChangeLeaseTest, ALeaseNotGivenBackExpires) {
  cmd({"SET", "{c:ch}:m", "v1"});
  ChangeLeases dead(*raw_, 300ms), next(*raw_, 60s);
  ASSERT_TRUE(dead.take("ch", "v1", {}).ok());  // and never given back: its node died
  ASSERT_FALSE(next.take("ch", "v1", {}).ok());
  bool taken = false;
  for (const auto deadline = Clock::now() + 5s; !taken && Clock::now() < deadline;) {
    std::this_thread::sleep_for(20ms);
    taken = next.take("ch", "v1", {}).ok();
  }
  EXPECT_TRUE(taken) << "the lease of a node that died did not expire";
}

// The phase-1 script's op 'l': another token's lease refuses the script before it writes;
// this commit's own lease, or none (expired), passes, and its own is deleted, with the redo
// record it names.
TEST_F(ChangeLeaseTest, ThePhaseOneCheckRefusesAnotherCommitsLeaseAndGivesItsOwnBack) {
  auto commit = [&](std::string_view token) {
    return cmd({"EVAL", scripts::kCommit, "1", "{c:ch}:lk", "0", "l", "ch", token, "redo-token", "h", "{c:ch}:x", "f",
                "1"});
  };
  cmd({"RPUSH", "{c:ch}:rd", "redo-token", "e", "ch", "v1"});
  cmd({"SET", "{c:ch}:lk", "theirs"});
  EXPECT_NE(commit("mine").find("TERNCONV"), std::string::npos);
  EXPECT_EQ(cmd({"HGET", "{c:ch}:x", "f"}), "(nil)") << "a refused script writes nothing";
  EXPECT_EQ(cmd({"GET", "{c:ch}:lk"}), "theirs");
  EXPECT_EQ(cmd({"EXISTS", "{c:ch}:rd"}), "1");
  cmd({"SET", "{c:ch}:lk", "mine"});
  commit("mine");
  EXPECT_EQ(cmd({"HGET", "{c:ch}:x", "f"}), "1");
  EXPECT_EQ(cmd({"EXISTS", "{c:ch}:lk"}), "0") << "its own lease is given back";
  EXPECT_EQ(cmd({"EXISTS", "{c:ch}:rd"}), "0") << "the change the redo record names is made";
  cmd({"RPUSH", "{c:ch}:rd", "another-redo"});  // another commit's record stays
  cmd({"HDEL", "{c:ch}:x", "f"});
  commit("mine");  // expired: the record's check ('e') still guards the change
  EXPECT_EQ(cmd({"HGET", "{c:ch}:x", "f"}), "1");
  EXPECT_EQ(cmd({"LINDEX", "{c:ch}:rd", "0"}), "another-redo");
}

Conversation channel(uint64_t subscribers) {
  Conversation c;
  c.id = "ch1";
  c.type = ConvType::kChannel;
  c.name = "news";
  c.members = {Member{"alice", 1, 0, true}};
  c.fanout_on_read = true;
  c.is_public = true;
  c.subscribers = subscribers;
  return c;
}

// A channel's change while another commit holds its lease is refused before phase 0: its
// subscription row (another slot) is not written, so the retry finds the user not subscribed.
// A commit that fails after taking the lease gives it back; one that lands leaves none.
TEST_F(ChangeLeaseTest, AChangeWhileAnotherCommitHoldsTheLeaseWritesNothing) {
  auto s = RedisStore::open(store_options());
  ASSERT_TRUE(s.ok()) << s.error().message;
  Store& store = **s;
  const Conversation v1 = channel(1), v2 = channel(2), v3 = channel(3);
  ASSERT_TRUE(store.commit(Batch{{PutConversation{v1}}}, true).ok());
  cmd({"SET", "{c:ch1}:lk", "another-commit", "PX", "60000"});
  auto join = [&] {
    Batch b;
    b.add(PutConversation{v2, v1});
    b.add(PutSubscription{"carol", UserConversation{"ch1", 1, 0, true}});
    return store.commit(b, true);
  };
  auto r = join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kExists) << r.error().message;
  EXPECT_FALSE(*store.user_conversation("carol", "ch1")) << "the refused change wrote its row";
  EXPECT_EQ(*store.conversation("ch1"), std::optional<Conversation>(v1));
  cmd({"DEL", "{c:ch1}:lk"});
  ASSERT_TRUE(join().ok());
  EXPECT_TRUE(*store.user_conversation("carol", "ch1"));
  EXPECT_EQ(*store.conversation("ch1"), std::optional<Conversation>(v2));
  EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:lk"}), "0") << "a change that landed keeps its lease";
  EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:rd"}), "0") << "a change that landed keeps its redo record";
  // Refused after the lease was taken (the device must be new and is there): given back.
  ASSERT_TRUE(store.commit(Batch{{PutDevice{DeviceRef{"dave", 1}, "hash-d"}}}, true).ok());
  Batch late;
  late.add(PutConversation{v3, v2});
  late.add(PutDevice{DeviceRef{"dave", 1}, "hash-d2", true});
  auto refused = store.commit(late, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kExists);
  EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:lk"}), "0") << "a refused commit kept its lease";
  EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:rd"}), "0") << "a refused commit kept its redo record";
  EXPECT_EQ(*store.conversation("ch1"), std::optional<Conversation>(v2));
}

// The commit ops of a join of `user` to channel `from`, counting from it (as RedisStore
// builds them: the record's check, the record, the subscription row). `to`: the record after.
class ChangeRedoTest : public ChangeLeaseTest {
 protected:
  // A join of carol's (v1 → v2) whose commit took the lease and wrote its redo record, wrote
  // carol's row in phase 0, and stopped there: its node died. Waits until the lease expired.
  void a_join_that_stopped_half_way(const Conversation& v1, const Conversation& v2) {
    auto stopped = testing::stop_a_join_half_way(*raw_, v1, v2, "carol", 200ms);
    ASSERT_TRUE(stopped.ok()) << stopped.error().message;
    EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:rd"}), "1");
  }
  Counter& redos_ = MetricsRegistry::global().counter("tern_redis_change_redos_total", "");
};

// The next change finds the redo record without its lease and the record still the one the
// join counted from: the join is made first (count 2, carol subscribed), the change is refused
// (it counted from 1) and, made again from the new record, lands. Without the redo record the
// count stayed 1 with carol subscribed, and her retry counted nothing.
TEST_F(ChangeRedoTest, AChangeThatStoppedHalfWayIsMadeByTheNextChange) {
  auto s = RedisStore::open(store_options());
  ASSERT_TRUE(s.ok()) << s.error().message;
  Store& store = **s;
  const Conversation v1 = channel(1), v2 = channel(2), v3 = channel(3);
  ASSERT_TRUE(store.commit(Batch{{PutConversation{v1}}}, true).ok());
  ASSERT_NO_FATAL_FAILURE(a_join_that_stopped_half_way(v1, v2));
  const uint64_t redos = redos_.value();
  auto join = [&](const Conversation& from, const Conversation& to) {
    Batch b;
    b.add(PutConversation{to, from});
    b.add(PutSubscription{"dave", UserConversation{"ch1", 1, 0, true}});
    return store.commit(b, true);
  };
  auto r = join(v1, v2);  // dave's, from the record it read before
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kExists) << r.error().message;
  EXPECT_EQ(redos_.value(), redos + 1);
  EXPECT_EQ(*store.conversation("ch1"), std::optional<Conversation>(v2)) << "carol's join was not made";
  EXPECT_TRUE(*store.user_conversation("carol", "ch1"));
  EXPECT_FALSE(*store.user_conversation("dave", "ch1")) << "the refused change wrote its row";
  EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:rd"}), "0");
  EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:lk"}), "0");
  ASSERT_TRUE(join(v2, v3).ok());  // made again from the stored record
  EXPECT_EQ(*store.conversation("ch1"), std::optional<Conversation>(v3));
  EXPECT_TRUE(*store.user_conversation("dave", "ch1"));
  EXPECT_EQ(redos_.value(), redos + 1);
}

// A redo record whose change can no longer be made is dropped, never made: its record is not
// the stored one any more (changed by a write that takes no lease), or its ops cannot run.
TEST_F(ChangeRedoTest, ARedoRecordThatCannotBeMadeIsDropped) {
  auto s = RedisStore::open(store_options());
  ASSERT_TRUE(s.ok()) << s.error().message;
  Store& store = **s;
  const Conversation v1 = channel(1), v2 = channel(2), v5 = channel(5), v6 = channel(6);
  ASSERT_TRUE(store.commit(Batch{{PutConversation{v1}}}, true).ok());
  ASSERT_NO_FATAL_FAILURE(a_join_that_stopped_half_way(v1, v2));
  cmd({"HDEL", "{u:carol}:ix", "ch1"});
  ASSERT_TRUE(store.commit(Batch{{PutConversation{v5}}}, true).ok());  // no lease, no record
  const uint64_t redos = redos_.value();
  ASSERT_TRUE(store.commit(Batch{{PutConversation{v6, v5}}}, true).ok());
  EXPECT_EQ(*store.conversation("ch1"), std::optional<Conversation>(v6));
  EXPECT_FALSE(*store.user_conversation("carol", "ch1")) << "a stale redo record was made";
  EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:rd"}), "0");
  EXPECT_EQ(redos_.value(), redos);
  // Ops that cannot run (an unknown op code): the change that found them fails once, and the
  // record goes.
  std::string expected;
  rocks::encode_conversation(expected, v6);
  cmd({"RPUSH", "{c:ch1}:rd", "dead-token", "e", "ch1", expected, "?"});
  const Conversation v7 = channel(7);
  auto r = store.commit(Batch{{PutConversation{v7, v6}}}, true);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:rd"}), "0");
  ASSERT_TRUE(store.commit(Batch{{PutConversation{v7, v6}}}, true).ok());
  EXPECT_EQ(*store.conversation("ch1"), std::optional<Conversation>(v7));
}

}  // namespace
}  // namespace tern::store::redis
