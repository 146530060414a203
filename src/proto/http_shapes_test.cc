#include "proto/http_shapes.h"

#include <gtest/gtest.h>

namespace tern::proto {
namespace {

Limits limits;

TEST(HttpShapes, Register) {
  EXPECT_EQ(parse_register(R"({"user":"alice"})", limits)->user, "alice");
  EXPECT_EQ(parse_register(R"({"user":"Alice"})", limits).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse_register(R"({"user":1})", limits).error().code, ErrorCode::kMalformed);
  EXPECT_EQ(parse_register("{", limits).error().code, ErrorCode::kMalformed);
}

TEST(HttpShapes, CreateConversation) {
  auto d = parse_create_conversation(R"({"type":"direct","members":["bob"]})", limits);
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->group);
  EXPECT_EQ(parse_create_conversation(R"({"type":"direct","members":["bob","carol"]})", limits).error().code, ErrorCode::kInvalidArgument);
  auto g = parse_create_conversation(R"({"type":"group","name":"n","members":["bob","carol","bob"]})", limits);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->members.size(), 2u);
  EXPECT_EQ(parse_create_conversation(R"({"type":"room"})", limits).error().code, ErrorCode::kInvalidArgument);
}

TEST(HttpShapes, CreateChannel) {
  auto pub = parse_create_conversation(R"({"type":"channel","name":"news"})", limits);
  ASSERT_TRUE(pub);
  EXPECT_TRUE(pub->channel);
  EXPECT_TRUE(pub->is_public);  // public unless it says otherwise
  auto priv = parse_create_conversation(R"({"type":"channel","name":"news","public":false})", limits);
  ASSERT_TRUE(priv);
  EXPECT_FALSE(priv->is_public);
  // Members named at creation are ignored: a channel starts with its owner only.
  auto named = parse_create_conversation(R"({"type":"channel","name":"n","members":["bob"]})", limits);
  ASSERT_TRUE(named);
  EXPECT_TRUE(named->members.empty());
  for (const char* bad : {R"({"type":"channel","public":"yes"})", R"({"type":"channel","public":1})",
                          R"({"type":"channel","public":null})"}) {
    auto r = parse_create_conversation(bad, limits);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kMalformed) << bad;
    EXPECT_EQ(r.error().message, "field 'public' must be true or false") << bad;
  }
}

TEST(HttpShapes, Members) {
  auto m = parse_members(R"({"add":["dave"]})", limits);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->add.size(), 1u);
  EXPECT_EQ(parse_members("{}", limits).error().code, ErrorCode::kMalformed);
  Limits small;
  small.max_http_body_bytes = 4;
  EXPECT_EQ(parse_members(R"({"add":["dave"]})", small).error().code, ErrorCode::kTooLarge);
}

TEST(HttpShapes, QueryParam) {
  EXPECT_EQ(query_param("after_seq=4&limit=10", "limit"), "10");
  EXPECT_EQ(query_param("after_seq=4&limit=10", "after_seq"), "4");
  EXPECT_EQ(query_param("after_seq=4", "token"), "");
}

TEST(HttpShapes, CreateSelf) {
  auto s = parse_create_conversation(R"({"type":"self"})", limits);
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->self);
  EXPECT_FALSE(s->group);
  EXPECT_TRUE(s->members.empty());
  EXPECT_EQ(parse_create_conversation(R"({"type":"self","members":["bob"]})", limits).error().code,
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern::proto
