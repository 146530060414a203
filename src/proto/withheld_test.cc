// A message withheld from a blocker (issue 12, services/blocks.h): stored with
// "withheld_from", which no device ever receives; the blocker's devices get a tombstone.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "proto/frames.h"

namespace tern::proto {
namespace {

boost::json::object parse(const std::string& s) { return boost::json::parse(s).as_object(); }

MessageRecord withheld() {
  MessageRecord m;
  m.conversation_id = "d-1";
  m.seq = 2;
  m.sender = "bob";
  m.sender_device = 1;
  m.ts = 1700;
  m.body = "aGk=";
  m.reply_to = 1;
  m.withheld_from = "alice";
  return m;
}

TEST(Withheld, TheBlockerGetsATombstoneOthersTheMessageWithoutTheMark) {
  const std::string stored = encode_message(withheld());
  ASSERT_NE(stored.find("\"withheld_from\":\"alice\""), std::string::npos);
  auto for_alice = render_message_for(stored, DeviceRef{"alice", 1});
  ASSERT_TRUE(for_alice);
  auto a = parse(*for_alice);
  EXPECT_EQ(a.at("seq").as_int64(), 2);
  EXPECT_EQ(a.at("body").as_string(), "");
  EXPECT_TRUE(a.at("withheld").as_bool());
  EXPECT_FALSE(a.contains("withheld_from"));
  EXPECT_FALSE(a.contains("reply_to"));
  auto for_bob2 = render_message_for(stored, DeviceRef{"bob", 2});
  ASSERT_TRUE(for_bob2);
  auto b = parse(*for_bob2);
  EXPECT_EQ(b.at("body").as_string(), "aGk=");
  EXPECT_FALSE(b.contains("withheld_from"));
  EXPECT_FALSE(b.contains("withheld"));
  auto expired = render_expired(stored);
  ASSERT_TRUE(expired);
  EXPECT_FALSE(parse(*expired).contains("withheld_from"));
}

TEST(Withheld, PerDeviceBodiesAreStillRenderedAndTheMarkRemoved) {
  MessageRecord m = withheld();
  m.body.reset();
  m.bodies = {{"alice:1", "QQ=="}, {"bob:2", "Qg=="}};
  const std::string stored = encode_message(m);
  auto b = parse(*render_message_for(stored, DeviceRef{"bob", 2}));
  EXPECT_EQ(b.at("body").as_string(), "Qg==");
  EXPECT_FALSE(b.contains("bodies"));
  EXPECT_FALSE(b.contains("withheld_from"));
  auto a = parse(*render_message_for(stored, DeviceRef{"alice", 1}));
  EXPECT_EQ(a.at("body").as_string(), "") << "the blocker's own entry in bodies is not shown either";
  EXPECT_FALSE(a.contains("bodies"));
}

TEST(Withheld, AnOrdinaryMessageIsSentAsStored) {
  MessageRecord m = withheld();
  m.withheld_from.clear();
  const std::string stored = encode_message(m);
  EXPECT_EQ(stored.find("withheld"), std::string::npos);
  EXPECT_EQ(*render_message_for(stored, DeviceRef{"alice", 1}), stored);
}

}  // namespace
}  // namespace tern::proto
