// The history payload codec (history_transfer.h) and its application to a SqliteStore.
#include "client/history_transfer.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <filesystem>

#include "base/clock.h"
#include "client/sqlite_store.h"

namespace tern::client {
namespace {

Message msg(const std::string& conv, Seq seq, const std::string& body) {
  Message m;
  m.conversation_id = conv;
  m.seq = seq;
  m.sender = "bob";
  m.sender_device = 1;
  m.ts = 1'700'000'000'000 + static_cast<int64_t>(seq);
  m.body = body;
  return m;
}

TEST(HistoryCodec, RoundTripKeepsEveryField) {
  Message a = msg("d-0123", 3, std::string("bin\0ary", 7));
  a.reply_to = 2;
  a.expires_at = 1'900'000'000'000;
  Message b = msg("g-abcd", 1, "");
  b.system_json = R"({"action":"create"})";
  auto chunks = encode_history({a, b});
  ASSERT_EQ(chunks.size(), 1u);
  auto back = decode_history(chunks[0]);
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].conversation_id, "d-0123");
  EXPECT_EQ((*back)[0].seq, 3u);
  EXPECT_EQ((*back)[0].sender, "bob");
  EXPECT_EQ((*back)[0].sender_device, 1u);
  EXPECT_EQ((*back)[0].ts, a.ts);
  EXPECT_EQ((*back)[0].body, a.body);
  EXPECT_EQ((*back)[0].reply_to, 2u);
  EXPECT_EQ((*back)[0].expires_at, a.expires_at);
  EXPECT_EQ((*back)[1].system_json, b.system_json);
  EXPECT_FALSE((*back)[1].reply_to);
}

TEST(HistoryCodec, ChunksStayUnderTheBoundAndKeepOrder) {
  std::vector<Message> all;
  for (Seq s = 1; s <= 400; ++s) all.push_back(msg("d-0123", s, std::string(1000, 'x')));
  all.push_back(msg("d-0123", 401, std::string(60'000, 'y')));  // alone over a chunk: left out
  auto chunks = encode_history(all);
  ASSERT_GT(chunks.size(), 1u);
  Seq next = 1;
  for (const auto& c : chunks) {
    EXPECT_LE(c.size(), kMaxHistoryChunk);
    auto d = decode_history(c);
    ASSERT_TRUE(d) << d.error().message;
    for (const auto& m : *d) EXPECT_EQ(m.seq, next++);
  }
  EXPECT_EQ(next, 401u);
}

TEST(HistoryCodec, MalformedPayloadsAreRefused) {
  const std::string good = encode_history({msg("d-0123", 1, "hi")}).at(0);
  ASSERT_TRUE(decode_history(good));
  EXPECT_EQ(decode_history(std::string(kMaxHistoryChunk + 1, ' ')).error().code, ErrorCode::kTooLarge);
  EXPECT_EQ(decode_history("not json").error().code, ErrorCode::kMalformed);
  EXPECT_EQ(decode_history(R"({"v":2,"entries":[]})").error().code, ErrorCode::kMalformed);
  EXPECT_EQ(decode_history(R"({"v":1})").error().code, ErrorCode::kMalformed);
  EXPECT_EQ(decode_history(R"({"v":1,"entries":[1]})").error().code, ErrorCode::kMalformed);
  // A channel, a self conversation, seq 0, a bad sender, bad base64: each refused.
  EXPECT_FALSE(decode_history(R"({"v":1,"entries":[{"c":"ch-1","s":1,"u":"bob","d":1,"t":1,"b":""}]})"));
  EXPECT_FALSE(decode_history(R"({"v":1,"entries":[{"c":"s-1","s":1,"u":"bob","d":1,"t":1,"b":""}]})"));
  EXPECT_FALSE(decode_history(R"({"v":1,"entries":[{"c":"d-1","s":0,"u":"bob","d":1,"t":1,"b":""}]})"));
  EXPECT_FALSE(decode_history(R"({"v":1,"entries":[{"c":"d-1","s":1,"u":"B B","d":1,"t":1,"b":""}]})"));
  EXPECT_FALSE(decode_history(R"({"v":1,"entries":[{"c":"d-1","s":1,"u":"bob","d":1,"t":1,"b":"@@"}]})"));
  EXPECT_FALSE(decode_history(R"({"v":1,"entries":[{"c":"d-1","s":1,"u":"bob","d":-1,"t":1,"b":""}]})"));
  std::string many = R"({"v":1,"entries":[)";
  for (size_t i = 0; i <= kMaxHistoryEntries; ++i) many += std::string(i ? "," : "") + "{}";
  many += "]}";
  EXPECT_EQ(decode_history(many).error().code, ErrorCode::kTooLarge);
  // Every truncation of a good payload is refused without a crash.
  for (size_t n = 0; n < good.size(); ++n) EXPECT_FALSE(decode_history(good.substr(0, n))) << n;
}

TEST(HistoryCodec, KindsAndTargetsFromClientMessageIds) {
  EXPECT_EQ(history_kind("hr-2"), kHistoryRequestKind);
  EXPECT_EQ(history_kind("h-2-5-0"), kHistoryKind);
  EXPECT_EQ(history_kind("c-1"), 0x01);
  EXPECT_EQ(history_target("h-2-5-0"), 2u);
  EXPECT_FALSE(history_target("hr-2"));
  EXPECT_FALSE(history_target("h-x"));
  EXPECT_FALSE(history_target("h-99999999999-1-0"));
}

class HistoryApply : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tern-history-" + std::to_string(::getpid()) + "-" + std::to_string(now_ms()));
    std::filesystem::create_directories(dir_);
    auto s = SqliteStore::open((dir_ / "state.sqlite").string());
    ASSERT_TRUE(s);
    store_ = std::move(*s);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::filesystem::path dir_;
  std::unique_ptr<SqliteStore> store_;
  boost::asio::io_context ioc_;
};

TEST_F(HistoryApply, TheSamePayloadTwiceAddsNothingAndExpiredEntriesAreSkipped) {
  Api api(ioc_, *parse_server_url("http://127.0.0.1:1", ""), "t", {});
  HistoryTransfer h({"alice", 2, "t"}, api, *store_, {}, {});
  Message gone = msg("d-0123", 3, "expired");
  gone.expires_at = now_ms() - 1;
  const std::string payload = encode_history({msg("d-0123", 1, "one"), msg("d-0123", 2, "two"), gone}).at(0);
  auto first = h.apply(payload);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(*first, 2u);
  auto again = h.apply(payload);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);
  auto rows = store_->messages("d-0123", 0, 100);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].body, "one");
  EXPECT_EQ((*rows)[1].body, "two");
  EXPECT_FALSE(h.apply("garbage"));
}

TEST_F(HistoryApply, TheSenderPicksTheLastMessagesOfTheRecentConversations) {
  for (Seq s = 1; s <= 5; ++s) ASSERT_TRUE(store_->save_message(msg("d-old", s, "o" + std::to_string(s))));
  for (Seq s = 1; s <= 5; ++s) {
    Message m = msg("g-new", s, s == 2 ? "" : "n" + std::to_string(s));  // seq 2: undecryptable here
    m.ts += 1000;
    ASSERT_TRUE(store_->save_message(m));
  }
  ASSERT_TRUE(store_->save_message(msg("ch-x", 1, "channel")));
  auto convs = store_->recent_conversations(1);
  ASSERT_TRUE(convs);
  ASSERT_EQ(*convs, std::vector<std::string>{"g-new"});
  auto all = store_->recent_conversations(10);
  ASSERT_TRUE(all);
  EXPECT_EQ(*all, (std::vector<std::string>{"g-new", "d-old"}));
  auto last = store_->last_messages("g-new", 3, now_ms());
  ASSERT_TRUE(last);
  ASSERT_EQ(last->size(), 3u);
  EXPECT_EQ((*last)[0].seq, 3u);
  EXPECT_EQ((*last)[2].seq, 5u);
  auto readable = store_->last_messages("g-new", 10, now_ms());
  ASSERT_TRUE(readable);
  EXPECT_EQ(readable->size(), 4u);  // the empty one is left out
}

}  // namespace
}  // namespace tern::client
