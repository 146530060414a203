#include "client/convert.h"

#include <gtest/gtest.h>

#include "client/errors.h"

namespace tern::client {
namespace {

TEST(Convert, History) {
  auto p = parse_history(
      R"({"messages":[{"conversation_id":"c","seq":3,"sender":"bob","sender_device":2,"ts":5,"body":"aGk=","reply_to":2},)"
      R"({"seq":4,"sender":"alice","sender_device":1,"ts":6,"body":"","system":{"added":["dave"]}},)"
      R"(7,{"seq":0}],"head":9})",
      "c");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->head, 9u);
  ASSERT_EQ(p->messages.size(), 2u);
  EXPECT_EQ(p->messages[0].body, "hi");
  EXPECT_EQ(p->messages[0].reply_to, 2u);
  EXPECT_EQ(p->messages[0].sender_device, 2u);
  EXPECT_EQ(p->messages[1].conversation_id, "c");
  ASSERT_TRUE(p->messages[1].system_json.has_value());
  EXPECT_NE(p->messages[1].system_json->find("dave"), std::string::npos);
  EXPECT_FALSE(parse_history("[]", "c").ok());
  EXPECT_FALSE(parse_history("{\"head\":1}", "c").ok());
  EXPECT_FALSE(parse_history("not json", "c").ok());
}

TEST(Convert, Conversations) {
  auto c = parse_conversations(
      R"({"conversations":[{"conversation_id":"g1","type":"group","name":"team","head":4,"members":["a","b"]},{"type":"x"}]})");
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->size(), 1u);
  EXPECT_EQ((*c)[0].name, "team");
  EXPECT_EQ((*c)[0].head, 4u);
  EXPECT_EQ((*c)[0].members.size(), 2u);
}

TEST(Convert, CredentialsAndCodes) {
  auto cr = parse_credentials(R"({"user":"alice","device":2,"token":"t"})");
  ASSERT_TRUE(cr.ok());
  EXPECT_EQ(cr->device, 2u);
  EXPECT_FALSE(parse_credentials(R"({"user":"alice","device":0,"token":"t"})").ok());
  auto lc = parse_link_code(R"({"code":"ABCD-EFGH","expires_at":123})");
  ASSERT_TRUE(lc.ok());
  EXPECT_EQ(lc->expires_at, 123);
  EXPECT_EQ(parse_conversation_id(R"({"conversation_id":"x"})").value(), "x");
}

TEST(Convert, Errors) {
  EXPECT_EQ(error_from_http(429, R"({"error":"rate_limited","message":"slow"})").code, ErrorCode::kRateLimited);
  EXPECT_EQ(error_from_http(403, R"({"error":"forbidden"})").code, ErrorCode::kForbidden);
  EXPECT_EQ(error_from_http(410, "").code, ErrorCode::kNotFound);
  EXPECT_EQ(error_from_http(503, "<html>").code, ErrorCode::kOverloaded);
  EXPECT_EQ(error_from_http(403, R"({"error":"not_member"})").code, ErrorCode::kForbidden);  // unknown name: by status
  EXPECT_TRUE(retryable(ErrorCode::kRateLimited));
  EXPECT_FALSE(retryable(ErrorCode::kForbidden));
  EXPECT_EQ(error_code_from_name("too_large"), ErrorCode::kTooLarge);
}

TEST(Convert, MessageEventBody) {
  proto::MessageEvent e{"c", 1, "bob", 1, 2, "aGVsbG8=", std::nullopt, std::nullopt, std::nullopt};
  EXPECT_EQ(message_from_event(std::move(e)).body, "hello");
  proto::MessageEvent bad{"c", 1, "bob", 1, 2, "***", std::nullopt, std::nullopt, std::nullopt};
  EXPECT_EQ(message_from_event(std::move(bad)).body, "");
}

}  // namespace
}  // namespace tern::client
