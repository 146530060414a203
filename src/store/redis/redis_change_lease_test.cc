// The change lease of a channel's change on a real 3-master + 3-replica Redis Cluster
// (redis_change_lease.h): taken only from the expected record and by one commit at a time,
// given back, expired; a commit that meets another's lease writes nothing; the phase-1
// script's check of it (op 'l').
#include "store/redis/redis_change_lease.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <thread>

#include "store/redis/redis_cluster.h"
#include "store/redis/redis_scripts.h"
#include "store/redis/redis_store.h"
#include "store/redis/testing/redis_cluster_server.h"

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
    for (uint16_t p : cluster_->ports()) {
      auto role = cluster_->command(p, {"ROLE"});
      if (role.ok() && role->rfind("master", 0) == 0) {
        ASSERT_TRUE(cluster_->command(p, {"FLUSHALL"}).ok());
      }
    }
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
  auto stale = a.take("ch", "v0");
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, ErrorCode::kExists);
  EXPECT_EQ(cmd({"EXISTS", "{c:ch}:lk"}), "0") << "a stale change takes no lease";
  EXPECT_TRUE(a.token_for("ch").empty());
  ASSERT_TRUE(a.take("ch", "v1").ok());
  EXPECT_FALSE(a.token_for("ch").empty());
  EXPECT_TRUE(a.token_for("other").empty());
  EXPECT_EQ(cmd({"GET", "{c:ch}:lk"}), std::string(a.token_for("ch")));
  const long ttl = std::stol(cmd({"PTTL", "{c:ch}:lk"}));
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 60'000);
  auto second = b.take("ch", "v1");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kExists) << "one commit at a time";
  a.release();
  EXPECT_EQ(cmd({"EXISTS", "{c:ch}:lk"}), "0");
  ASSERT_TRUE(b.take("ch", "v1").ok());
  a.release();  // a holds nothing now: b's lease stays
  EXPECT_EQ(cmd({"GET", "{c:ch}:lk"}), std::string(b.token_for("ch")));
  // A record not stored matches nothing.
  auto none = b.take("nothing", "v1");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kExists);
}

TEST_F(ChangeLeaseTest, ALeaseNotGivenBackExpires) {
  cmd({"SET", "{c:ch}:m", "v1"});
  ChangeLeases dead(*raw_, 300ms), next(*raw_, 60s);
  ASSERT_TRUE(dead.take("ch", "v1").ok());  // and never given back: its node died
  ASSERT_FALSE(next.take("ch", "v1").ok());
  bool taken = false;
  for (const auto deadline = Clock::now() + 5s; !taken && Clock::now() < deadline;) {
    std::this_thread::sleep_for(20ms);
    taken = next.take("ch", "v1").ok();
  }
  EXPECT_TRUE(taken) << "the lease of a node that died did not expire";
}

// The phase-1 script's op 'l': another token's lease refuses the script before it writes;
// this commit's own lease, or none (expired), passes, and its own is deleted.
TEST_F(ChangeLeaseTest, ThePhaseOneCheckRefusesAnotherCommitsLeaseAndGivesItsOwnBack) {
  auto commit = [&](std::string_view token) {
    return cmd({"EVAL", scripts::kCommit, "1", "{c:ch}:lk", "0", "l", "ch", token, "h", "{c:ch}:x", "f", "1"});
  };
  cmd({"SET", "{c:ch}:lk", "theirs"});
  EXPECT_NE(commit("mine").find("TERNCONV"), std::string::npos);
  EXPECT_EQ(cmd({"HGET", "{c:ch}:x", "f"}), "(nil)") << "a refused script writes nothing";
  EXPECT_EQ(cmd({"GET", "{c:ch}:lk"}), "theirs");
  cmd({"SET", "{c:ch}:lk", "mine"});
  commit("mine");
  EXPECT_EQ(cmd({"HGET", "{c:ch}:x", "f"}), "1");
  EXPECT_EQ(cmd({"EXISTS", "{c:ch}:lk"}), "0") << "its own lease is given back";
  cmd({"HDEL", "{c:ch}:x", "f"});
  commit("mine");  // expired: the record's check ('e') still guards the change
  EXPECT_EQ(cmd({"HGET", "{c:ch}:x", "f"}), "1");
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
  // Refused after the lease was taken (the device must be new and is there): given back.
  ASSERT_TRUE(store.commit(Batch{{PutDevice{DeviceRef{"dave", 1}, "hash-d"}}}, true).ok());
  Batch late;
  late.add(PutConversation{v3, v2});
  late.add(PutDevice{DeviceRef{"dave", 1}, "hash-d2", true});
  auto refused = store.commit(late, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kExists);
  EXPECT_EQ(cmd({"EXISTS", "{c:ch1}:lk"}), "0") << "a refused commit kept its lease";
  EXPECT_EQ(*store.conversation("ch1"), std::optional<Conversation>(v2));
}

}  // namespace
}  // namespace tern::store::redis
