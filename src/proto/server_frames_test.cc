#include "proto/server_frames.h"

#include <gtest/gtest.h>

#include "proto/frames.h"

namespace tern::proto {
namespace {

TEST(ServerFrames, RoundTripsServerEncoders) {
  auto sent = parse_server_frame(encode_sent("c-1", "d-1", 7, 1700));
  ASSERT_TRUE(sent);
  EXPECT_EQ(std::get<SentEvent>(*sent).seq, 7u);
  auto rec = parse_server_frame(encode_receipt("d-1", "bob", "read", 4));
  ASSERT_TRUE(rec);
  EXPECT_EQ(std::get<ReceiptEvent>(*rec).status, "read");
  MessageRecord m{"d-1", 3, "alice", 2, 1700, std::string("aGk="), {}, 1, std::nullopt, std::nullopt, {}};
  auto msg = parse_server_frame(encode_message(m));
  ASSERT_TRUE(msg);
  const auto& me = std::get<MessageEvent>(*msg);
  EXPECT_EQ(me.sender_device, 2u);
  EXPECT_EQ(me.body, "aGk=");
  EXPECT_EQ(*me.reply_to, 1u);
  EXPECT_TRUE(std::holds_alternative<SyncedEvent>(*parse_server_frame(encode_synced())));
  EXPECT_FALSE(parse_server_frame("nope"));
  auto low = parse_server_frame(R"({"type":"prekeys_low","count":4})");
  ASSERT_TRUE(low);
  EXPECT_EQ(std::get<PrekeysLowEvent>(*low).count, 4u);
  auto mismatch = parse_server_frame(
      R"({"missing":["b:2"],"extra":[],"stale":["b:1"],"type":"error","code":"device_mismatch","message":"m","ref":"c"})");
  ASSERT_TRUE(mismatch);
  EXPECT_EQ(std::get<ErrorEvent>(*mismatch).stale, (std::vector<std::string>{"b:1"}));
  EXPECT_EQ(std::get<ErrorEvent>(*mismatch).missing, (std::vector<std::string>{"b:2"}));
}

TEST(ServerFrames, ClientEncodersParseOnServer) {
  Limits limits;
  EXPECT_TRUE(parse_client_frame(encode_send("c", "d", "aGk=", 2, 30), limits));
  EXPECT_TRUE(parse_client_frame(encode_send_bodies("c", "d", {{"bob:1", "aGk="}}), limits));
  EXPECT_TRUE(parse_client_frame(encode_ack("d", 3), limits));
  EXPECT_TRUE(parse_client_frame(encode_read("d", 3), limits));
  EXPECT_TRUE(parse_client_frame(encode_typing_frame("d", true), limits));
  EXPECT_TRUE(parse_client_frame(encode_presence_subscribe({"bob"}), limits));
}

}  // namespace
}  // namespace tern::proto
