// session_reads: a connect's opening reads the snapshots of its inbox's conversations and the
// device's cursors in them with one store call each (Directory::conversations, Store::cursors),
// whatever the inbox holds: on Redis one round trip each, not one or two per conversation.
#include "services/session_reads.h"

#include <gtest/gtest.h>

#include "services/device_session_fixture.h"

namespace tern::services {
namespace {

using sessiontest::DeviceSessionFixture;

class SessionReads : public DeviceSessionFixture, public ::testing::Test {
 protected:
  SessionReads() : DeviceSessionFixture(0) {}

  // alice makes a group with bob and sends one message into it.
  std::string group_with_news(const std::string& name) {
    std::promise<Result<ConversationInfo>> made;
    auto f = made.get_future();
    sequencer_.create_conversation(DeviceRef{"alice", 1}, proto::CreateConversationRequest{true, name, {"bob"}},
                                   [&made](Result<ConversationInfo> r) { made.set_value(r); });
    auto info = f.get();
    EXPECT_TRUE(info);
    if (!info) return "";
    std::promise<Result<SentInfo>> sent;
    auto g = sent.get_future();
    sequencer_.send(DeviceRef{"alice", 1},
                    proto::SendFrame{"m-" + name, info->conversation_id, std::string("aGk="), {}, {}, {}, false, {}, {}}, 0,
                    [&sent](Result<SentInfo> r) { sent.set_value(std::move(r)); });
    EXPECT_TRUE(g.get());
    return info->conversation_id;
  }
};

TEST_F(SessionReads, AnOpeningReadsItsInboxConversationsAndCursorsInOneCallEach) {
  std::vector<std::string> convs{conv_};
  EXPECT_GT(send("alice", "m-first"), 0u);
  for (int i = 0; i < 5; ++i) convs.push_back(group_with_news("g" + std::to_string(i)));
  // bob has read up to seq 1 of the third.
  store::Batch b;
  b.add(store::SetCursor{DeviceRef{"bob", 1}, convs[2], 1});
  ASSERT_TRUE(store_.commit(b, true).ok());

  // A directory that holds nothing (as on a node that just started): every snapshot is read.
  Directory cold(store_, 1000);
  ServiceContext ctx{options_, loops_, admission_, store_, reads_, committer_, cold, bus_, sequencer_, presence_,
                     accounts_, draining_, fanout_};
  store_.conversation_calls = 0;
  store_.conversations_of_calls = 0;
  store_.cursor_calls = 0;
  store_.cursors_calls = 0;
  const session_reads::Opening o = session_reads::read_opening(ctx, DeviceRef{"bob", 1});
  ASSERT_FALSE(o.failure) << o.failure->error.message;
  ASSERT_EQ(o.inbox.size(), convs.size());
  ASSERT_EQ(o.rows.size(), convs.size());
  for (size_t i = 0; i < o.rows.size(); ++i) {
    EXPECT_EQ(o.rows[i].conversation_id, o.inbox[i].first);
    EXPECT_EQ(o.rows[i].membership.kind, session_reads::Membership::Kind::kMember) << o.rows[i].conversation_id;
    EXPECT_EQ(o.rows[i].cursor, o.rows[i].conversation_id == convs[2] ? 1u : 0u) << o.rows[i].conversation_id;
  }
  EXPECT_EQ(store_.conversations_of_calls, 1);
  EXPECT_EQ(store_.conversation_calls, 0) << "no snapshot read one by one";
  EXPECT_EQ(store_.cursors_calls, 1);
  EXPECT_EQ(store_.cursor_calls, 0) << "no cursor read one by one";
  EXPECT_EQ(cold.cached_conversations(), convs.size()) << "what was read is cached";

  // Warm: the snapshots come from the cache, the cursors still in one call.
  const session_reads::Opening again = session_reads::read_opening(ctx, DeviceRef{"bob", 1});
  ASSERT_FALSE(again.failure);
  EXPECT_EQ(store_.conversations_of_calls, 1);
  EXPECT_EQ(store_.cursors_calls, 2);
  EXPECT_EQ(store_.cursor_calls, 0);
}

}  // namespace
}  // namespace tern::services
