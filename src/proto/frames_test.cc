#include "proto/frames.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "proto/json_writer.h"

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

TEST(Frames, ParsesKeysFlagAndRegistrationIds) {
  auto r = parse_client_frame(
      R"({"type":"send","client_msg_id":"c","conversation_id":"d","keys":true,"bodies":{"bob:1":"aGk=","bob:2":"aGk="},"registration_ids":{"bob:1":4711}})",
      limits);
  ASSERT_TRUE(r) << r.error().message;
  const auto& s = std::get<SendFrame>(*r);
  EXPECT_TRUE(s.keys);
  EXPECT_EQ(s.registration_ids, (std::map<std::string, uint32_t>{{"bob:1", 4711}}));
  auto plain = parse_client_frame(R"({"type":"send","client_msg_id":"c","conversation_id":"d","body":"aGk="})", limits);
  ASSERT_TRUE(plain);
  EXPECT_FALSE(std::get<SendFrame>(*plain).keys) << "absent means false";
  EXPECT_TRUE(std::get<SendFrame>(*plain).registration_ids.empty());
  const std::string head = R"({"type":"send","client_msg_id":"c","conversation_id":"d",)";
  EXPECT_EQ(parse_code(head + R"("body":"aGk=","keys":1})"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code(head + R"("bodies":{"bob:1":"aGk="},"registration_ids":[1]})"), ErrorCode::kMalformed);
  EXPECT_EQ(parse_code(head + R"("bodies":{"bob:1":"aGk="},"registration_ids":{"bob:2":1}})"),
            ErrorCode::kInvalidArgument) << "only keys of bodies";
  EXPECT_EQ(parse_code(head + R"("body":"aGk=","registration_ids":{"bob:1":1}})"), ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse_code(head + R"("bodies":{"bob:1":"aGk="},"registration_ids":{"bob:1":0}})"), ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse_code(head + R"("bodies":{"bob:1":"aGk="},"registration_ids":{"bob:1":4294967296}})"),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse_code(head + R"("bodies":{"bob:1":"aGk="},"registration_ids":{"bob:1":"7"}})"),
            ErrorCode::kInvalidArgument);
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
  MessageRecord m{"g", 4, "alice", 1, 1700, std::nullopt, {{"bob:1", "YQ=="}, {"bob:2", "Yg=="}}, 2, std::nullopt, std::nullopt, {}};
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

  MessageRecord plain{"d", 1, "alice", 1, 1700, std::string("aGk="), {}, std::nullopt, std::nullopt, std::nullopt, {}};
  const auto stored_plain = encode_message(plain);
  EXPECT_EQ(*render_message_for(stored_plain, DeviceRef{"bob", 1}), stored_plain);
}

TEST(Frames, RendersExpiredMessagesAsTombstones) {
  MessageRecord m{"d", 5, "alice", 1, 1700, std::string("c2VjcmV0"), {}, std::nullopt, 1800, std::nullopt, {}};
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

TEST(Frames, DirectEncodingMatchesTheJsonSerializer) {
  namespace json = boost::json;
  MessageRecord m;
  m.conversation_id = "g-abc";
  m.seq = 18446744073709551615ull;
  m.sender = "al\"ice\\\n\x01";
  m.sender_device = 4294967295u;
  m.ts = -5;
  m.body = "aGk=";
  m.bodies = {{"bob:1", "YQ=="}, {"carol:2", "Yg=="}};
  m.reply_to = 7;
  m.expires_at = 1700000000000;
  m.system_json = R"({"action":"add","by":"x","users":["y"]})";
  json::object o;
  o["type"] = "message";
  o["conversation_id"] = m.conversation_id;
  o["seq"] = m.seq;
  o["sender"] = m.sender;
  o["sender_device"] = m.sender_device;
  o["ts"] = m.ts;
  o["body"] = *m.body;
  json::object b;
  for (const auto& [k, v] : m.bodies) b[k] = v;
  o["bodies"] = std::move(b);
  o["reply_to"] = *m.reply_to;
  o["expires_at"] = *m.expires_at;
  o["system"] = json::parse(*m.system_json);
  EXPECT_EQ(encode_message(m), json::serialize(o));

  json::object sent{{"type", "sent"}, {"client_msg_id", "c\t1"}, {"conversation_id", "d-1"}, {"seq", 3u}, {"ts", 9}};
  EXPECT_EQ(encode_sent("c\t1", "d-1", 3, 9), json::serialize(sent));
  json::object receipt{{"type", "receipt"}, {"conversation_id", "d-1"}, {"user", "bob"}, {"status", "read"}, {"seq", 12u}};
  EXPECT_EQ(encode_receipt("d-1", "bob", "read", 12), json::serialize(receipt));

  std::string all;
  for (int c = 0; c < 128; ++c) all += static_cast<char>(c);
  all += "\xc3\xa9";  // UTF-8 passes through
  std::string direct;
  append_json_string(direct, all);
  EXPECT_EQ(direct, json::serialize(json::value(all)));
}

TEST(Frames, StoredMetaReadsEveryShapeOfStoredMessage) {
  MessageRecord m;
  m.conversation_id = "g-1";
  m.seq = 42;
  m.sender = "alice";
  m.sender_device = 3;
  m.ts = 1700;
  m.body = "aGk=";
  auto meta = stored_meta(encode_message(m));
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->seq, 42u);
  EXPECT_EQ(meta->sender, "alice");
  EXPECT_EQ(meta->sender_device, 3u);
  EXPECT_FALSE(meta->expires_at);
  EXPECT_FALSE(meta->per_device);
  EXPECT_FALSE(meta->system);

  m.body.reset();
  m.bodies = {{"bob:1", "YQ=="}};
  m.reply_to = 2;
  m.expires_at = 99;
  meta = stored_meta(encode_message(m));
  ASSERT_TRUE(meta);
  EXPECT_TRUE(meta->per_device);
  EXPECT_EQ(meta->expires_at, std::optional<int64_t>(99));

  MessageRecord sys;
  sys.conversation_id = "g-1";
  sys.seq = 1;
  sys.sender = "a\"b";  // an escape: read by the full parser
  sys.body = "";
  sys.system_json = R"({"action":"create","by":"x","name":"n","users":["x"]})";
  meta = stored_meta(encode_message(sys));
  ASSERT_TRUE(meta);
  EXPECT_TRUE(meta->system);
  EXPECT_EQ(meta->sender, "a\"b");
  EXPECT_FALSE(stored_meta("{not json"));
}

TEST(Frames, PeeksTheRefOfASendWithoutParsing) {
  EXPECT_EQ(peek_send_ref(R"({"type":"send","client_msg_id":"c-1","conversation_id":"d-1","body":""})"), "c-1");
  EXPECT_EQ(peek_send_ref(R"({"client_msg_id":"x9","type":"send"})"), "x9");
  EXPECT_EQ(peek_send_ref(R"({"type":"ack","conversation_id":"d-1","seq":1})"), "");
  EXPECT_EQ(peek_send_ref(R"({"type":"send","client_msg_id":"a\"b"})"), "");
  EXPECT_EQ(peek_send_ref(R"({"type":"send","client_msg_id":"unterminated)"), "");
}

TEST(Frames, SendNamesMediaInClearMetadata) {
  const std::string id(64, 'a');
  auto f = parse_client_frame(R"({"type":"send","client_msg_id":"c","conversation_id":"d","body":"eA==","media":[")" + id +
                                  R"(",")" + id + R"("]})",
                              Limits{});
  ASSERT_TRUE(f);
  EXPECT_EQ(std::get<SendFrame>(*f).media, std::vector<std::string>{id});  // repeats dropped
  for (const char* bad : {R"("media":"x")", R"("media":["ABC"])", R"("media":[1])"}) {
    auto b = parse_client_frame(R"({"type":"send","client_msg_id":"c","conversation_id":"d","body":"eA==",)" +
                                    std::string(bad) + "}",
                                Limits{});
    ASSERT_FALSE(b) << bad;
  }
  Limits one;
  one.max_media_per_message = 1;
  auto many = parse_client_frame(R"({"type":"send","client_msg_id":"c","conversation_id":"d","body":"eA==","media":[")" +
                                     id + R"(",")" + std::string(64, 'b') + R"("]})",
                                 one);
  ASSERT_FALSE(many);
  EXPECT_EQ(many.error().code, ErrorCode::kTooLarge);

  MessageRecord m{"d", 3, "alice", 1, 1700, std::string("eA=="), {}, std::nullopt, 1800, std::nullopt, {id}};
  const auto stored = encode_message(m);
  EXPECT_NE(stored.find(R"("media":[")" + id + R"("])"), std::string::npos);
  auto meta = stored_meta(stored);
  ASSERT_TRUE(meta);
  EXPECT_EQ(*meta->expires_at, 1800);
  auto t = render_expired(stored);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->find(id), std::string::npos);  // a tombstone names no media
}

}  // namespace
}  // namespace tern::proto
