#include "proto/frames.h"

#include <gtest/gtest.h>

namespace tern::proto {
namespace {

Limits limits;

ErrorCode parse_code(std::string_view text) {
  auto r = parse_client_frame(text, limits);
  return r ? ErrorCode::kOk : r.error().code;
}

TEST(Frames, ParsesSend) {
  std::string ref;
  auto r = parse_client_frame(R"({"type":"send","client_msg_id":"c-1","conversation_id":"d-1","body":"aGk=","reply_to":3,"ttl":60,"extra":1})", limits, &ref);
  ASSERT_TRUE(r) << r.error().message;
  const auto& s = std::get<SendFrame>(*r);
  EXPECT_EQ(s.client_msg_id, "c-1");
  EXPECT_EQ(s.conversation_id, "d-1");
  EXPECT_EQ(*s.body, "aGk=");
  EXPECT_EQ(*s.reply_to, 3u);
  EXPECT_EQ(*s.ttl_seconds, 60);
  EXPECT_EQ(ref, "c-1");
}

TEST(Frames, ParsesPerDeviceBodies) {
  auto r = parse_client_frame(R"({"type":"send","client_msg_id":"c","conversation_id":"g","bodies":{"bob:1":"YQ==","alice:2":"Yg=="}})", limits);
  ASSERT_TRUE(r);
  EXPECT_EQ(std::get<SendFrame>(*r).bodies.size(), 2u);
  EXPECT_EQ(parse_code(R"({"type":"send","client_msg_id":"c","conversation_id":"g","bodies":{"bob":"YQ=="}})"), ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse_code(R"({"type":"send","client_msg_id":"c","conversation_id":"g","body":"YQ==","bodies":{"bob:1":"YQ=="}})"), ErrorCode::kMalformed);
}

TEST(Frames, ParsesOtherClientFrames) {
  EXPECT_EQ(parse_code(R"({"type":"ack","conversation_id":"c","seq":7})"), ErrorCode::kOk);
  EXPECT_EQ(parse_code(R"({"type":"read","conversation_id":"c","seq":7})"), ErrorCode::kOk);
  EXPECT_EQ(parse_code(R"({"type":"typing","conversation_id":"c","active":true})"), ErrorCode::kOk);
  auto p = parse_client_frame(R"({"type":"presence_subscribe","users":["bob","carol"]})", limits);
  ASSERT_TRUE(p);
  EXPECT_EQ(std::get<PresenceSubscribeFrame>(*p).users.size(), 2u);
}

TEST(Frames, RejectsBadInputWithStableCodes) {
  EXPECT_EQ(parse_code("not json"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code("[1,2]"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code(R"({"no_type":1})"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code(R"({"type":"launch"})"), ErrorCode::kUnknownType);
  EXPECT_EQ(parse_code(R"({"type":"ack","conversation_id":"c","seq":"7"})"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code(R"({"type":"ack","conversation_id":"c","seq":-1})"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code(R"({"type":"ack","conversation_id":5,"seq":1})"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code(R"({"type":"send","client_msg_id":"c","conversation_id":"g","body":"!!"})"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code(R"({"type":"send","client_msg_id":"","conversation_id":"g","body":"YQ=="})"), ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse_code(R"({"type":"typing","conversation_id":"c","active":1})"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code(R"({"type":"send","client_msg_id":"c","conversation_id":"g","body":"YQ==","ttl":0})"), ErrorCode::kInvalidArgument);
}

TEST(Frames, RejectsDeepNesting) {
  std::string deep = R"({"type":"ack","x":)" + std::string(100, '[') + std::string(100, ']') + "}";
  EXPECT_EQ(parse_code(deep), ErrorCode::kMalformed);
}

TEST(Frames, EnforcesSizeLimits) {
  Limits small;
  small.max_body_bytes = 3;
  auto r = parse_client_frame(R"({"type":"send","client_msg_id":"c","conversation_id":"g","body":"YWJjZA=="})", small);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kTooLarge);
  small.max_frame_bytes = 10;
  auto f = parse_client_frame(R"({"type":"ack","conversation_id":"c","seq":7})", small);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, ErrorCode::kTooLarge);
}

TEST(Frames, RendersPerDeviceMessages) {
  MessageRecord m{"g", 4, "alice", 1, 1700, std::nullopt, {{"bob:1", "YQ=="}, {"bob:2", "Yg=="}}, 2, std::nullopt, std::nullopt};
  const auto stored = encode_message(m);
  auto bob2 = render_message_for(stored, DeviceRef{"bob", 2});
  ASSERT_TRUE(bob2);
  EXPECT_NE(bob2->find(R"("body":"Yg==")"), std::string::npos);
  EXPECT_EQ(bob2->find("bodies"), std::string::npos);
  auto meta = stored_meta(stored);
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->seq, 4u);
  EXPECT_EQ(meta->sender, "alice");
  EXPECT_TRUE(meta->per_device);

  MessageRecord plain{"d", 1, "alice", 1, 1700, std::string("aGk="), {}, std::nullopt, std::nullopt, std::nullopt};
  const auto stored_plain = encode_message(plain);
  EXPECT_EQ(*render_message_for(stored_plain, DeviceRef{"bob", 1}), stored_plain);
}

TEST(Frames, RendersExpiredMessagesAsTombstones) {
  MessageRecord m{"d", 5, "alice", 1, 1700, std::string("c2VjcmV0"), {}, std::nullopt, 1800, std::nullopt};
  auto t = render_expired(encode_message(m));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->find("c2VjcmV0"), std::string::npos);
  EXPECT_NE(t->find(R"("expired":true)"), std::string::npos);
  EXPECT_NE(t->find(R"("seq":5)"), std::string::npos);
}

TEST(Frames, EncodesErrorsWithDetail) {
  Error e = make_error(ErrorCode::kDeviceMismatch, "device list changed");
  e.detail_json = R"({"missing":["bob:2"],"extra":[]})";
  const auto text = encode_error(e, "c-1");
  EXPECT_NE(text.find(R"("code":"device_mismatch")"), std::string::npos);
  EXPECT_NE(text.find(R"("missing":["bob:2"])"), std::string::npos);
  EXPECT_NE(text.find(R"("ref":"c-1")"), std::string::npos);
}

}  // namespace
}  // namespace tern::proto
