// Unit tests of several nodes sequencing one conversation on one shared store: each "node"
// is a full Sequencer (its loops, group committer, directory, bus) on its own MemoryStore,
// and the MemoryStores share one State with dense appends on, as RedisStore does for ternd.
// A node whose head was behind (another node appended first) must sequence its sends again
// without any client-visible failure (GroupCommitter::kBehind, Sender::kMaxAttempts).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "base/metrics.h"
#include "bus/local/local_bus.h"
#include "proto/frames.h"
#include "services/sequencer.h"
#include "store/memory/memory_store.h"

namespace tern::services {
namespace {

using namespace std::chrono_literals;

struct Node {
  explicit Node(std::shared_ptr<store::MemoryStore::State> state)
      : store(std::move(state)),
        loops(2),
        committer(store, /*sync*/ true, /*queue*/ 100000, /*max_batch*/ 64, &loops),
        directory(store),
        sequencer(loops, store, committer, directory, bus, options) {
    store.dense_appends(true);
    loops.start();
    committer.start();
  }
  ~Node() {
    committer.stop();
    loops.stop();
    loops.join();
  }
  store::MemoryStore store;
  ServiceOptions options;
  Loops loops;
  GroupCommitter committer;
  Directory directory;
  bus::LocalBus bus;
  Sequencer sequencer;
};

uint64_t resequenced() {
  return MetricsRegistry::global()
      .counter("tern_sends_resequenced_total",
               "sends sequenced again because another node had appended to the conversation first")
      .value();
}

class SequencerNodesTest : public ::testing::Test {
 protected:
  SequencerNodesTest() {
    store::Batch b;
    for (const char* u : {"alice", "bob", "carol"}) {
      b.add(store::PutUser{u, 1});
      b.add(store::PutDevice{DeviceRef{u, 1}, std::string("tok-") + u});
    }
    EXPECT_TRUE(view_.commit(b, true).ok());
    for (int i = 0; i < 3; ++i) nodes_.push_back(std::make_unique<Node>(view_.state()));
  }

  std::string create_group(Node& n, const std::string& creator, std::vector<std::string> members) {
    std::promise<Result<ConversationInfo>> p;
    auto f = p.get_future();
    proto::CreateConversationRequest req{true, "g", std::move(members)};
    n.sequencer.create_conversation(DeviceRef{creator, 1}, req, [&p](Result<ConversationInfo> r) { p.set_value(r); });
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    auto r = f.get();
    EXPECT_TRUE(r) << r.error().message;
    return r ? r->conversation_id : "";
  }

  Result<SentInfo> send(Node& n, const std::string& user, const std::string& conv, const std::string& cmid) {
    std::promise<Result<SentInfo>> p;
    auto f = p.get_future();
    proto::SendFrame frame{cmid, conv, std::string("aGk="), {}, std::nullopt, std::nullopt, false, {}, {}};
    n.sequencer.send(DeviceRef{user, 1}, frame, 0, [&p](Result<SentInfo> r) { p.set_value(std::move(r)); });
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  }

  store::MemoryStore view_;  // the shared data, read directly by the assertions
  std::vector<std::unique_ptr<Node>> nodes_;
};

TEST_F(SequencerNodesTest, ASendOnAHeadThatAnotherNodeMovedIsSequencedAgain) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string g = create_group(a, "alice", {"bob"});  // seq 1; node a caches head 1
  ASSERT_TRUE(send(a, "alice", g, "warm"));                  // seq 2; still cached on a
  auto theirs = send(b, "bob", g, "b-1");                    // b loads head 2: seq 3
  ASSERT_TRUE(theirs) << theirs.error().message;
  EXPECT_EQ(theirs->seq, 3u);
  const uint64_t before = resequenced();
  auto ours = send(a, "alice", g, "a-1");  // a still thinks 2: seq 3 is behind, then 4
  ASSERT_TRUE(ours) << ours.error().message;
  EXPECT_EQ(ours->seq, 4u);
  EXPECT_EQ(resequenced(), before + 1);
  // A resend of the same client_msg_id through either node gets the seq it was acknowledged with.
  auto again = send(b, "alice", g, "a-1");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->seq, 4u);
  auto log = view_.read_messages(g, 0, 100);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 4u);
  for (size_t i = 0; i < log->size(); ++i) EXPECT_EQ((*log)[i].seq, i + 1);
  EXPECT_NE((*log)[3].frame.find("\"sender\":\"alice\""), std::string::npos);
}

// Every conversation written from all three nodes at once, pipelined (no sender waits for
// its `sent`): every send succeeds, each conversation's log is dense and holds every message
// once at the seq it was acknowledged with, and one device's messages keep their order.
TEST_F(SequencerNodesTest, ThreeNodesWritingTwoConversationsAtOnceNeedNoResend) {
  const std::string g1 = create_group(*nodes_[0], "alice", {"bob", "carol"});
  const std::string g2 = create_group(*nodes_[1], "bob", {"alice", "carol"});
  constexpr int kPerSender = 60;
  const char* users[] = {"alice", "bob", "carol"};
  std::mutex mu;
  std::map<std::pair<std::string, std::string>, Seq> acked;  // (conversation, cmid) → seq
  std::vector<std::string> errors;
  std::atomic<int> answered{0};
  std::promise<void> all;
  const int total = kPerSender * 3 * 2;
  for (int i = 0; i < kPerSender; ++i) {
    for (int n = 0; n < 3; ++n) {
      for (const std::string& g : {g1, g2}) {
        const std::string cmid = std::string(users[n]) + g + "-" + std::to_string(i);  // ids are per device
        proto::SendFrame frame{cmid, g, std::string("aGk="), {}, {}, {}, false, {}, {}};
        nodes_[n]->sequencer.send(DeviceRef{users[n], 1}, frame, 0, [&, g, cmid](Result<SentInfo> r) {
          {
            std::lock_guard lock(mu);
            if (r) acked[{g, cmid}] = r->seq;
            else errors.push_back(r.error().message);
          }
          if (++answered == total) all.set_value();
        });
      }
    }
  }
  auto f = all.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  std::lock_guard lock(mu);
  ASSERT_TRUE(errors.empty()) << errors.size() << " sends failed, e.g. " << errors.front();
  ASSERT_EQ(acked.size(), static_cast<size_t>(total));
  std::set<std::pair<std::string, Seq>> distinct;
  for (const auto& [k, seq] : acked) distinct.emplace(k.first, seq);
  ASSERT_EQ(distinct.size(), acked.size()) << "two sends were acknowledged with one seq";
  for (const std::string& g : {g1, g2}) {
    auto log = view_.read_messages(g, 0, 1000);
    ASSERT_TRUE(log);
    ASSERT_EQ(log->size(), static_cast<size_t>(1 + 3 * kPerSender));  // the creation, then the sends
    for (size_t i = 0; i < log->size(); ++i) ASSERT_EQ((*log)[i].seq, i + 1) << "log of " << g << " not dense";
    for (int n = 0; n < 3; ++n) {
      Seq last = 0;
      for (int i = 0; i < kPerSender; ++i) {
        const Seq seq = acked.at({g, std::string(users[n]) + g + "-" + std::to_string(i)});
        EXPECT_GT(seq, last) << users[n] << "'s message " << i << " came before an earlier one";
        last = seq;
        const std::string& frame = (*log)[seq - 1].frame;
        EXPECT_NE(frame.find(std::string("\"sender\":\"") + users[n] + "\""), std::string::npos) << frame;
      }
    }
  }
}

}  // namespace
}  // namespace tern::services
