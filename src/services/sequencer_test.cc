// Unit tests of the sequencing paths (send, membership, receipts) on real loops and the real
// group committer, with the in-memory store fake and the in-process bus.
#include "services/sequencer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <regex>
#include <set>

#include "bus/local/local_bus.h"
#include "store/memory/memory_store.h"

namespace tern::services {
namespace {

using namespace std::chrono_literals;

// A connected device as the bus sees it: records what it is told.
class Recorder final : public bus::Endpoint {
 public:
  void notify(std::shared_ptr<const bus::Notification> n) override {
    std::lock_guard lock(mu_);
    got_.push_back(std::move(n));
    cv_.notify_all();
  }
  void replaced() override {}

  // Wait (bounded: 10 s) until `n` messages of `conv` / `n` frames have arrived.
  bool wait_messages(const std::string& conv, size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return seqs_locked(conv).size() >= n; });
  }
  bool wait_frames(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return frames_locked().size() >= n; });
  }
  std::vector<Seq> message_seqs(const std::string& conv) {
    std::lock_guard lock(mu_);
    return seqs_locked(conv);
  }
  std::vector<std::string> frames() {
    std::lock_guard lock(mu_);
    return frames_locked();
  }

 private:
  std::vector<Seq> seqs_locked(const std::string& conv) {
    std::vector<Seq> out;
    for (const auto& n : got_)
      if (n->kind == bus::Notification::Kind::kMessage && n->conversation_id == conv) out.push_back(n->seq);
    return out;
  }
  std::vector<std::string> frames_locked() {
    std::vector<std::string> out;
    for (const auto& n : got_)
      if (n->kind == bus::Notification::Kind::kFrame) out.push_back(*n->frame);
    return out;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<const bus::Notification>> got_;
};

template <typename T>
T await(std::future<T>& f) {
  EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
  return f.get();
}

class SequencerTest : public ::testing::Test {
 protected:
  SequencerTest()
      : loops_(2),
        committer_(store_, /*sync*/ true, /*queue*/ 100000, /*max_batch*/ 256, &loops_),
        directory_(store_),
        sequencer_(loops_, store_, reads_, committer_, directory_, bus_, options_) {
    store::Batch b;
    for (const char* u : {"alice", "bob", "carol"}) {
      b.add(store::PutUser{u, 1});
      b.add(store::PutDevice{DeviceRef{u, 1}, std::string("tok-") + u});
    }
    EXPECT_TRUE(store_.commit(b, true).ok());
    loops_.start();
    committer_.start();
    for (const char* u : {"alice", "bob", "carol"}) bus_.attach(DeviceRef{u, 1}, endpoint(u));
  }
  ~SequencerTest() override {
    committer_.stop();
    loops_.stop();
    loops_.join();
  }

  std::shared_ptr<Recorder> endpoint(const std::string& user) {
    auto& e = endpoints_[user];
    if (!e) e = std::make_shared<Recorder>();
    return e;
  }

  std::string create_group(const std::string& creator, std::vector<std::string> members) {
    std::promise<Result<ConversationInfo>> p;
    auto f = p.get_future();
    proto::CreateConversationRequest req{true, "g", std::move(members)};
    sequencer_.create_conversation(DeviceRef{creator, 1}, req, [&p](Result<ConversationInfo> r) { p.set_value(r); });
    auto r = await(f);
    EXPECT_TRUE(r) << r.error().message;
    return r ? r->conversation_id : "";
  }

  Result<SentInfo> send(const std::string& user, const std::string& conv, const std::string& cmid) {
    std::promise<Result<SentInfo>> p;
    auto f = p.get_future();
    proto::SendFrame frame{cmid, conv, std::string("aGk="), {}, std::nullopt, std::nullopt, false, {}, {}};
    sequencer_.send(DeviceRef{user, 1}, frame, 0, [&p](Result<SentInfo> r) { p.set_value(std::move(r)); });
    return await(f);
  }

  Result<std::vector<std::string>> change(const std::string& actor, const std::string& conv,
                                          proto::MembersRequest req) {
    std::promise<Result<std::vector<std::string>>> p;
    auto f = p.get_future();
    sequencer_.change_members(DeviceRef{actor, 1}, conv, req, [&p](auto r) { p.set_value(std::move(r)); });
    return await(f);
  }

  Result<void> ack(const std::string& user, const std::string& conv, Seq seq, bool read = false) {
    std::promise<Result<void>> p;
    auto f = p.get_future();
    sequencer_.acknowledge(DeviceRef{user, 1}, conv, seq, read, [&p](Result<void> r) { p.set_value(r); });
    return await(f);
  }

  store::MemoryStore store_;
  ServiceOptions options_;
  Loops loops_;
  GroupCommitter committer_;
  Directory directory_;
  StoreReads reads_{loops_, 0};  // inline, as with the embedded store
  std::atomic<int64_t> skew_us_{0};  // the bus's clock minus the system's
  bus::LocalBus bus_{[this] { return tern::wall_us() + skew_us_.load(); }};
  Sequencer sequencer_;
  std::map<std::string, std::shared_ptr<Recorder>> endpoints_;
};

TEST_F(SequencerTest, ConcurrentSendsGetDenseSeqsInCommitOrder) {
  const std::string g = create_group("alice", {"bob", "carol"});
  constexpr int kPerSender = 150;
  std::mutex mu;
  std::vector<Seq> seqs;
  std::promise<void> all;
  std::atomic<int> done{0};
  for (int i = 0; i < kPerSender; ++i) {
    for (const char* u : {"alice", "bob"}) {
      proto::SendFrame frame{std::string(u) + "-" + std::to_string(i), g, std::string("aGk="), {}, {}, {}, false, {}, {}};
      sequencer_.send(DeviceRef{u, 1}, frame, 0, [&](Result<SentInfo> r) {
        ASSERT_TRUE(r) << r.error().message;
        {
          std::lock_guard lock(mu);
          seqs.push_back(r->seq);
        }
        if (++done == 2 * kPerSender) all.set_value();
      });
    }
  }
  auto f = all.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  std::set<Seq> unique(seqs.begin(), seqs.end());
  ASSERT_EQ(unique.size(), seqs.size()) << "a seq was handed out twice";
  EXPECT_EQ(*unique.begin(), 2u);  // seq 1 is the group's creation
  EXPECT_EQ(*unique.rbegin(), static_cast<Seq>(1 + 2 * kPerSender));
  EXPECT_EQ(*store_.head(g), static_cast<Seq>(1 + 2 * kPerSender));
  // Carol (a recipient of both) is told every seq exactly once, in increasing order.
  ASSERT_TRUE(endpoint("carol")->wait_messages(g, 301));
  auto got = endpoint("carol")->message_seqs(g);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], i + 1);
}

TEST_F(SequencerTest, RetryWithTheSameClientMsgIdGetsTheOriginalSeq) {
  const std::string g = create_group("alice", {"bob"});
  auto first = send("alice", g, "m-1");
  ASSERT_TRUE(first);
  auto other = send("alice", g, "m-2");
  ASSERT_TRUE(other);
  auto retry = send("alice", g, "m-1");
  ASSERT_TRUE(retry);
  EXPECT_EQ(retry->seq, first->seq);
  EXPECT_EQ(retry->ts, first->ts);
  EXPECT_EQ(*store_.head(g), other->seq);  // the retry appended nothing
  // Another device's same id is another message.
  auto bobs = send("bob", g, "m-1");
  ASSERT_TRUE(bobs);
  EXPECT_EQ(bobs->seq, other->seq + 1);
}

// The stored frame's "ts".
int64_t stored_ts(const std::string& frame) {
  std::smatch m;
  if (!std::regex_search(frame, m, std::regex(R"("ts":(\d+))"))) return -1;
  return std::stoll(m[1]);
}

// A message's ts and expiry, and a conversation's creation, are on the bus's clock (on Redis:
// the one the nodes share), not on this node's: a node whose own clock is 40 s behind the
// others' would otherwise time its messages 40 s back, out of order with those another node
// sequenced before, and expire them 40 s late.
TEST_F(SequencerTest, MessagesAreTimedByTheBusClock) {
  skew_us_ = 40'000'000;
  const int64_t before = bus_.clock_ms();
  const std::string g = create_group("alice", {"bob"});
  std::promise<Result<SentInfo>> p;
  auto f = p.get_future();
  sequencer_.send(DeviceRef{"alice", 1}, proto::SendFrame{"t-1", g, std::string("aGk="), {}, {}, 60, false, {}, {}}, 0,
                  [&p](Result<SentInfo> r) { p.set_value(std::move(r)); });
  auto sent = await(f);
  const int64_t after = bus_.clock_ms();
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_GE(sent->ts, before);
  EXPECT_LE(sent->ts, after);

  auto stored = store_.read_messages(g, 0, 10);
  ASSERT_TRUE(stored);
  ASSERT_EQ(stored->size(), 2u);  // the creation, the message
  const int64_t created = stored_ts((*stored)[0].frame);
  EXPECT_GE(created, before);
  EXPECT_LE(created, after);
  EXPECT_EQ(stored_ts((*stored)[1].frame), sent->ts);
  auto meta = proto::stored_meta((*stored)[1].frame);
  ASSERT_TRUE(meta);
  ASSERT_TRUE(meta->expires_at);
  EXPECT_EQ(*meta->expires_at, sent->ts + 60'000);

  auto retry = send("alice", g, "t-1");  // its record is found by the bus's clock too
  ASSERT_TRUE(retry);
  EXPECT_EQ(retry->seq, sent->seq);
  EXPECT_EQ(retry->ts, sent->ts);
}

TEST_F(SequencerTest, TheSendPathReadsNothingButTheIdempotencyRecord) {
  const std::string g = create_group("alice", {"bob", "carol"});
  ASSERT_TRUE(send("alice", g, "warm"));  // loads the conversation's state once
  const size_t before = store_.reads();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(send("alice", g, "m" + std::to_string(i)));
  EXPECT_EQ(store_.reads() - before, 20u);
  // Acks are blind too, once the receipt marks are loaded.
  ASSERT_TRUE(ack("bob", g, 2));
  const size_t after_first_ack = store_.reads();
  ASSERT_TRUE(ack("bob", g, 10));
  ASSERT_TRUE(ack("carol", g, 12, /*read*/ true));
  EXPECT_EQ(store_.reads(), after_first_ack);
}

TEST_F(SequencerTest, AFailedCommitRefusesEveryLaterWrite) {
  const std::string g = create_group("alice", {"bob"});
  store_.fail_commits(true);
  auto failed = send("alice", g, "lost");
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ErrorCode::kInternal);
  // The seq handed to the lost batch must never be followed by later messages: the node
  // refuses writes until it restarts and reloads its heads from the store.
  store_.fail_commits(false);
  auto later = send("alice", g, "later");
  ASSERT_FALSE(later);
  EXPECT_EQ(later.error().code, ErrorCode::kInternal);
  EXPECT_EQ(*store_.head(g), 1u);
}

TEST_F(SequencerTest, MembershipErasDecideWhoIsTold) {
  const std::string g = create_group("alice", {"bob", "carol"});
  ASSERT_TRUE(send("alice", g, "before"));  // seq 2: everyone
  ASSERT_TRUE(change("alice", g, proto::MembersRequest{{}, {"bob"}}));  // seq 3: bob's removal, which he sees
  auto after = send("alice", g, "after");  // seq 4: not bob
  ASSERT_TRUE(after);
  EXPECT_EQ(after->seq, 4u);
  auto bobs_send = send("bob", g, "x");
  ASSERT_FALSE(bobs_send);
  EXPECT_EQ(bobs_send.error().code, ErrorCode::kForbidden);
  ASSERT_TRUE(change("alice", g, proto::MembersRequest{{"bob"}, {}}));  // seq 5: bob back, a new era
  ASSERT_TRUE(send("carol", g, "again"));                                // seq 6
  ASSERT_TRUE(endpoint("bob")->wait_messages(g, 5));
  EXPECT_EQ(endpoint("bob")->message_seqs(g), (std::vector<Seq>{1, 2, 3, 5, 6}));
  auto conv = *store_.conversation(g);
  ASSERT_TRUE(conv);
  const auto* bob = find_member(*conv, "bob");
  ASSERT_TRUE(bob);
  EXPECT_EQ(bob->joined_seq, 5u);
  EXPECT_TRUE(bob->active());
}

TEST_F(SequencerTest, TheLastAdminLeavingPromotesTheLongestStandingMember) {
  const std::string g = create_group("alice", {"bob"});
  ASSERT_TRUE(change("alice", g, proto::MembersRequest{{"carol"}, {}}));
  ASSERT_TRUE(change("alice", g, proto::MembersRequest{{}, {"alice"}}));
  auto conv = *store_.conversation(g);
  ASSERT_TRUE(conv);
  EXPECT_TRUE(find_member(*conv, "bob")->admin);
  EXPECT_FALSE(find_member(*conv, "carol")->admin);
}

TEST_F(SequencerTest, ReceiptsGoToTheSendersOfTheCoveredMessagesOnly) {
  const std::string g = create_group("alice", {"bob", "carol"});
  ASSERT_TRUE(send("alice", g, "a1"));  // seq 2
  ASSERT_TRUE(ack("bob", g, 2));
  ASSERT_TRUE(endpoint("alice")->wait_frames(1));
  EXPECT_NE(endpoint("alice")->frames().front().find(R"("status":"delivered")"), std::string::npos);
  ASSERT_TRUE(send("carol", g, "c1"));  // seq 3
  ASSERT_TRUE(ack("bob", g, 3));
  ASSERT_TRUE(endpoint("carol")->wait_frames(1));
  // Alice sent nothing in (2, 3]: she hears nothing more.
  EXPECT_EQ(endpoint("alice")->frames().size(), 1u);
  // Reading up to 3 newly covers both their messages: both hear "read".
  ASSERT_TRUE(ack("bob", g, 3, /*read*/ true));
  ASSERT_TRUE(endpoint("alice")->wait_frames(2));
  ASSERT_TRUE(endpoint("carol")->wait_frames(2));
  EXPECT_NE(endpoint("alice")->frames().back().find(R"("status":"read")"), std::string::npos);
  // The marks are durable and only grow.
  ASSERT_TRUE(ack("bob", g, 2));
  auto rs = *store_.receipts(g);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].delivered, 3u);
  EXPECT_EQ(rs[0].read, 3u);
  EXPECT_EQ(*store_.cursor(DeviceRef{"bob", 1}, g), 2u);  // the cursor is the device's own
}

TEST_F(SequencerTest, AnAckThatCatchesUpDeletesTheInboxEntry) {
  const std::string g = create_group("alice", {"bob"});
  ASSERT_TRUE(send("alice", g, "a1"));
  ASSERT_TRUE(send("alice", g, "a2"));
  auto inbox = *store_.inbox(DeviceRef{"bob", 1});
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].second, 3u);
  ASSERT_TRUE(ack("bob", g, 2));  // behind: the entry stays
  EXPECT_EQ(store_.inbox(DeviceRef{"bob", 1})->size(), 1u);
  ASSERT_TRUE(ack("bob", g, 3));
  EXPECT_TRUE(store_.inbox(DeviceRef{"bob", 1})->empty());
  auto beyond = ack("bob", g, 9);
  ASSERT_FALSE(beyond);
  EXPECT_EQ(beyond.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern::services
