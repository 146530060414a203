// The RocksDB key/value encodings: round trips, ordering, and rejection of malformed values.
#include "store/rocksdb/encoding.h"

#include <gtest/gtest.h>

#include <limits>

namespace tern::store::rocks {
namespace {

TEST(EncodingTest, BigEndianNumbersSortNumerically) {
  const uint64_t values[] = {0, 1, 255, 256, 65535, 65536, uint64_t{1} << 40, std::numeric_limits<uint64_t>::max()};
  std::string prev;
  for (uint64_t v : values) {
    std::string k;
    message_key(k, "c", v);
    EXPECT_LT(prev, k) << v;
    EXPECT_EQ(get_be64(k.data() + 2), v);
    prev = k;
  }
  std::string b;
  put_be32(b, 0xdeadbeef);
  EXPECT_EQ(get_be32(b.data()), 0xdeadbeefu);
}

TEST(EncodingTest, BiasedTimesSortAcrossZero) {
  std::string a, b, c;
  expiry_prefix(a, -5);
  expiry_prefix(b, 0);
  expiry_prefix(c, 5);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(unbias_i64(bias_i64(-123456789)), -123456789);
  EXPECT_EQ(unbias_i64(bias_i64(std::numeric_limits<int64_t>::min())), std::numeric_limits<int64_t>::min());
}

TEST(EncodingTest, MessageKeysOfOneConversationShareOnlyItsPrefix) {
  std::string p, k_other;
  message_prefix(p, "c");
  message_key(k_other, "c1", 1);
  EXPECT_NE(k_other.compare(0, p.size(), p), 0);
  std::string upper = prefix_successor(p);
  std::string k;
  message_key(k, "c", std::numeric_limits<uint64_t>::max());
  EXPECT_LT(k, upper);
  EXPECT_LE(upper, k_other);
}

TEST(EncodingTest, PrefixSuccessor) {
  EXPECT_EQ(prefix_successor("ab"), "ac");
  EXPECT_EQ(prefix_successor(std::string("a\xff", 2)), "b");
  EXPECT_EQ(prefix_successor(std::string("\xff\xff", 2)), "");
  EXPECT_EQ(prefix_successor(std::string("a\0", 2)), std::string("a\x01", 2));
}

TEST(EncodingTest, DeviceKeysSeparateUsersAndDevices) {
  std::string a, b, c;
  device_key(a, {"bob", 1}, "conv");
  device_key(b, {"bob", 2}, "conv");
  device_key(c, {"bobb", 1}, "conv");
  std::string p;
  device_prefix(p, {"bob", 1});
  EXPECT_EQ(a.compare(0, p.size(), p), 0);
  EXPECT_NE(b.compare(0, p.size(), p), 0);
  EXPECT_NE(c.compare(0, p.size(), p), 0);
  EXPECT_EQ(a.substr(p.size()), "conv");
}

TEST(EncodingTest, FixedValuesRoundTripAndRejectWrongSizes) {
  EXPECT_EQ(decode_u64(encode_u64(42)), 42u);
  EXPECT_EQ(decode_u64("1234567"), std::nullopt);
  EXPECT_EQ(decode_u64("123456789"), std::nullopt);
  auto pair = decode_u64_pair(encode_u64_pair(3, 4));
  ASSERT_TRUE(pair);
  EXPECT_EQ(pair->first, 3u);
  EXPECT_EQ(pair->second, 4u);
  EXPECT_EQ(decode_u64_pair(encode_u64(1)), std::nullopt);

  auto dev = decode_token_value(encode_token_value({"alice", 7}));
  ASSERT_TRUE(dev);
  EXPECT_EQ(*dev, (DeviceRef{"alice", 7}));
  EXPECT_EQ(decode_token_value("abc"), std::nullopt);

  std::string v;
  encode_idempotency(v, IdempotencyRecord{"conv", 9, -3, 1700000000000});
  auto r = decode_idempotency(v);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->conversation_id, "conv");
  EXPECT_EQ(r->seq, 9u);
  EXPECT_EQ(r->ts, -3);
  EXPECT_EQ(r->expires_at, 1700000000000);
  EXPECT_EQ(decode_idempotency(v.substr(0, 23)), std::nullopt);
}

Conversation sample() {
  Conversation c;
  c.id = "g-1";
  c.type = ConvType::kGroup;
  c.name = std::string("na\0me\xff", 6);
  c.created_ts = 1700000000000;
  c.members = {Member{"alice", 1, 0, true}, Member{"bob", 2, 9, false}, Member{std::string(200, 'x'), 300, 0, false}};
  return c;
}

TEST(EncodingTest, ConversationRoundTrips) {
  std::string v;
  encode_conversation(v, sample());
  auto c = decode_conversation(v);
  ASSERT_TRUE(c);
  Conversation s = sample();
  EXPECT_EQ(c->id, s.id);
  EXPECT_EQ(c->type, s.type);
  EXPECT_EQ(c->name, s.name);
  EXPECT_EQ(c->created_ts, s.created_ts);
  ASSERT_EQ(c->members.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(c->members[i].user, s.members[i].user);
    EXPECT_EQ(c->members[i].joined_seq, s.members[i].joined_seq);
    EXPECT_EQ(c->members[i].left_seq, s.members[i].left_seq);
    EXPECT_EQ(c->members[i].admin, s.members[i].admin);
  }
  Conversation empty;
  encode_conversation(v, empty);
  auto e = decode_conversation(v);
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->members.empty());
  EXPECT_EQ(e->type, ConvType::kDirect);
}

TEST(EncodingTest, VersionOneConversationsStillDecode) {
  // A record written before channels: version 1, no flags and no subscriber count.
  std::string v;
  encode_conversation(v, sample());
  std::string v1 = v.substr(0, v.size() - 9);
  v1[0] = 1;
  auto c = decode_conversation(v1);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->members.size(), 3u);
  EXPECT_FALSE(c->fanout_on_read);
  EXPECT_FALSE(c->is_public);
  EXPECT_EQ(c->subscribers, 0u);
  // Version 1 knew no channels.
  std::string channel_v1 = v1;
  channel_v1[1] = 2;
  EXPECT_EQ(decode_conversation(channel_v1), std::nullopt);
}

TEST(EncodingTest, ChannelFieldsRoundTrip) {
  Conversation ch = sample();
  ch.type = ConvType::kChannel;
  ch.fanout_on_read = true;
  ch.is_public = true;
  ch.subscribers = 123456;
  std::string v;
  encode_conversation(v, ch);
  auto c = decode_conversation(v);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->type, ConvType::kChannel);
  EXPECT_TRUE(c->fanout_on_read);
  EXPECT_TRUE(c->is_public);
  EXPECT_EQ(c->subscribers, 123456u);
  std::string bad_flags = v;
  bad_flags[v.size() - 9] = 4;
  EXPECT_EQ(decode_conversation(bad_flags), std::nullopt);
}

TEST(EncodingTest, UserRowsWithAndWithoutTheFanoutFlag) {
  auto old = decode_user_row("g", encode_u64_pair(3, 0));
  ASSERT_TRUE(old);
  EXPECT_EQ(old->joined_seq, 3u);
  EXPECT_FALSE(old->fanout_on_read);
  auto flagged = decode_user_row("ch", encode_user_row(UserConversation{"ch", 5, 9, true}));
  ASSERT_TRUE(flagged);
  EXPECT_EQ(flagged->conversation_id, "ch");
  EXPECT_EQ(flagged->joined_seq, 5u);
  EXPECT_EQ(flagged->left_seq, 9u);
  EXPECT_TRUE(flagged->fanout_on_read);
  EXPECT_EQ(decode_user_row("g", encode_u64_pair(3, 0) + std::string(1, '\x02')), std::nullopt);
  EXPECT_EQ(decode_user_row("g", "short"), std::nullopt);
}

TEST(EncodingTest, ConversationDecodeRejectsEveryTruncationAndTrailingBytes) {
  std::string v;
  encode_conversation(v, sample());
  for (size_t n = 0; n < v.size(); ++n) EXPECT_EQ(decode_conversation(v.substr(0, n)), std::nullopt) << n;
  EXPECT_EQ(decode_conversation(v + "x"), std::nullopt);
  std::string bad_version = v;
  bad_version[0] = 3;
  EXPECT_EQ(decode_conversation(bad_version), std::nullopt);
  std::string bad_type = v;
  bad_type[1] = 7;
  EXPECT_EQ(decode_conversation(bad_type), std::nullopt);
}

TEST(EncodingTest, ConversationDecodeSurvivesHostileCountsAndLengths) {
  // version, type, id length = huge varint.
  EXPECT_EQ(decode_conversation(std::string("\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12)), std::nullopt);
  // Unterminated varint.
  EXPECT_EQ(decode_conversation(std::string("\x01\x00\x80\x80\x80", 5)), std::nullopt);
  // Valid header, member count 2^40 with nothing after it.
  std::string v("\x01\x01\x00\x00", 4);
  put_be64(v, 0);
  v += std::string("\x80\x80\x80\x80\x80\x20", 6);
  EXPECT_EQ(decode_conversation(v), std::nullopt);
  // Every single-byte mutation either decodes or is rejected: never crashes.
  std::string good;
  encode_conversation(good, sample());
  for (size_t i = 0; i < good.size(); ++i) {
    for (int delta : {1, 0x7f, 0x80}) {
      std::string m = good;
      m[i] = static_cast<char>(static_cast<uint8_t>(m[i]) + delta);
      (void)decode_conversation(m);
    }
  }
}

}  // namespace
}  // namespace tern::store::rocks
