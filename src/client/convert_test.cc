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

TEST(Convert, ConversationsListChannels) {
  // A channel has subscribers and admins instead of members; unknown fields are tolerated.
  auto c = parse_conversations(
      R"({"conversations":[{"conversation_id":"ch-1","type":"channel","head":7,"joined_seq":3,"name":"news",)"
      R"("public":false,"subscribers":200000,"admins":["alice","bob"],"future":{"x":1}},)"
      R"({"conversation_id":"g1","type":"group","name":"team","head":4,"members":["a","b"]}]})");
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->size(), 2u);
  const auto& ch = (*c)[0];
  EXPECT_TRUE(ch.is_channel());
  EXPECT_EQ(ch.name, "news");
  EXPECT_EQ(ch.head, 7u);
  EXPECT_EQ(ch.joined_seq, 3u);
  EXPECT_FALSE(ch.is_public);
  EXPECT_EQ(ch.subscribers, 200000u);
  EXPECT_EQ(ch.admins, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_TRUE(ch.members.empty());
  EXPECT_NE(ch.json.find("future"), std::string::npos);
  EXPECT_FALSE((*c)[1].is_channel());
  EXPECT_EQ((*c)[1].subscribers, 0u);
}

TEST(Convert, ChannelInfo) {
  auto i = parse_conversation_info(
      R"({"conversation_id":"ch-9","type":"channel","name":"n","public":true,"owner":"alice","admins":["alice"],)"
      R"("subscribers":3,"head":12,"joined_seq":0,"views":[{"seq":11,"views":2},{"seq":12,"views":1},{"views":5},7]})");
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(i->owner, "alice");
  EXPECT_TRUE(i->is_public);
  EXPECT_EQ(i->subscribers, 3u);
  EXPECT_EQ(i->head, 12u);
  ASSERT_EQ(i->views.size(), 2u);  // entries without a seq are skipped
  EXPECT_EQ(i->views[0].seq, 11u);
  EXPECT_EQ(i->views[0].views, 2u);
  EXPECT_EQ(i->views[1].views, 1u);
  auto g = parse_conversation_info(R"({"conversation_id":"g-1","type":"group","head":2,"members":["a","b"]})");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->members.size(), 2u);
  EXPECT_TRUE(g->views.empty());
  EXPECT_FALSE(parse_conversation_info(R"({"type":"channel"})").ok());
  EXPECT_FALSE(parse_conversation_info("[]").ok());
}

TEST(Convert, ChannelAnswers) {
  auto j = parse_join(R"({"conversation_id":"ch-1","joined_seq":41,"subscribers":5})");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->conversation_id, "ch-1");
  EXPECT_EQ(j->joined_seq, 41u);
  EXPECT_EQ(j->subscribers, 5u);
  EXPECT_FALSE(parse_join(R"({"joined_seq":1})").ok());
  auto s = parse_subscribers_answer(R"({"subscribers":12})");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, 12u);
  EXPECT_FALSE(parse_subscribers_answer(R"({"members":[]})").ok());
  EXPECT_FALSE(parse_subscribers_answer(R"({"subscribers":-1})").ok());
  auto a = parse_admins_answer(R"({"admins":["alice","carol"]})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->size(), 2u);
  EXPECT_FALSE(parse_admins_answer("{}").ok());
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
