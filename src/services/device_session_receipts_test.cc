// DeviceSession, after `synced`: the durable receipt state of the user's conversations is
// sent again, read a batch of conversations at a time (Store::receipts_of: one round trip on
// Redis) and paced by the write queue: a conversation whose turn comes while the queue is
// full is read again once it drains, not skipped. Inline, on reader threads and in fibers.
#include "services/device_session.h"

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>

#include "services/device_session_fixture.h"

namespace tern::services {
namespace {

using namespace sessiontest;

class DeviceSessionReceipts : public DeviceSessionFixture, public ::testing::TestWithParam<size_t> {
 protected:
  DeviceSessionReceipts() : DeviceSessionFixture(GetParam()) {}

  // `n` more groups of alice and bob, each with alice's receipt state (delivered i + 1, read
  // i); the conversations bob is in, the fixture's first.
  std::vector<std::string> groups_with_receipts(int n) {
    std::vector<std::string> ids{conv_};
    store::Batch b;
    b.add(store::SetReceipt{conv_, "alice", 1, 1});
    for (int i = 0; i < n; ++i) {
      store::Conversation c;
      c.id = "r" + std::to_string(100 + i);
      c.type = store::ConvType::kGroup;
      c.members = {store::Member{"alice", 1, 0, true}, store::Member{"bob", 1, 0, false}};
      b.add(store::PutConversation{c});
      b.add(store::SetReceipt{c.id, "alice", static_cast<Seq>(i + 1), static_cast<Seq>(i)});
      ids.push_back(c.id);
    }
    EXPECT_TRUE(store_.commit(b, true).ok());
    return ids;
  }

  // Connects bob and drains his connection (resuming the session) until every conversation
  // of `ids` had a receipt frame, or 10 s; the (conversation, status) pairs seen, with how
  // often.
  std::map<std::pair<std::string, std::string>, int> receipts_after_connect(size_t limit,
                                                                            const std::vector<std::string>& ids) {
    static const std::regex conv_re(R"re("conversation_id":"([^"]+)")re"), status_re(R"re("status":"([a-z]+)")re");
    std::map<std::pair<std::string, std::string>, int> seen;
    std::set<std::string> convs;
    auto take = [&](const std::string& f) {
      if (f.find(R"("type":"receipt")") == std::string::npos) return;
      std::smatch c, st;
      if (!std::regex_search(f, c, conv_re) || !std::regex_search(f, st, status_re)) return;
      ++seen[{c[1].str(), st[1].str()}];
      convs.insert(c[1].str());
    };
    connect_bob(limit);
    for (const auto& f : drain_until_synced()) take(f);  // receipts may follow `synced` at once
    for (const auto until = std::chrono::steady_clock::now() + 10s;
         convs.size() < ids.size() && std::chrono::steady_clock::now() < until;) {
      on_loop([&] {
        for (auto& f : conn_->drain()) take(f);
        session_->on_writable();
      });
    }
    return seen;
  }
};

INSTANTIATE_TEST_SUITE_P(Reads, DeviceSessionReceipts, ::testing::Values(size_t{0}, size_t{2}, kInFibers),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           if (info.param == kInFibers) return std::string("InFibers");
                           return info.param == 0 ? std::string("Inline") : std::string("ReaderThreads");
                         });

TEST_P(DeviceSessionReceipts, EveryConversationsReceiptStateIsSentInBatchesOfReads) {
  const std::vector<std::string> ids = groups_with_receipts(40);  // 41 conversations
  store_.receipts_calls = 0;
  store_.receipts_of_calls = 0;
  const auto seen = receipts_after_connect(1 << 20, ids);
  for (const auto& id : ids) {
    EXPECT_EQ(seen.count({id, "delivered"}), 1u) << id;
    EXPECT_EQ(seen.count({id, "read"}), id == "r100" ? 0u : 1u) << id << " (read 0 is no receipt)";
  }
  for (const auto& [key, times] : seen) EXPECT_EQ(times, 1) << key.first << " " << key.second << ": sent once";
  EXPECT_EQ(store_.receipts_of_calls, 3) << "41 conversations, 16 per read";
  EXPECT_EQ(store_.receipts_calls, 0) << "none read one by one";
}

TEST_P(DeviceSessionReceipts, AConversationWhoseTurnComesWhileTheQueueIsFullIsReadAgainNotSkipped) {
  const std::vector<std::string> ids = groups_with_receipts(40);
  // Room for a few receipt frames (about 100 bytes each) at a time: a batch of 16
  // conversations fills the queue many times over.
  constexpr size_t kLimit = 600;
  const auto seen = receipts_after_connect(kLimit, ids);
  std::set<std::string> convs;
  for (const auto& [key, times] : seen) {
    convs.insert(key.first);
    EXPECT_EQ(times, 1) << key.first << " " << key.second << ": sent once";
  }
  EXPECT_EQ(convs.size(), ids.size()) << "every conversation's receipt state, each in its turn";
  EXPECT_FALSE(conn_->overflowed());
  EXPECT_GT(store_.receipts_of_calls, 3) << "the batches were cut short by the full queue and read again";
}

}  // namespace
}  // namespace tern::services
