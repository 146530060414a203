// The protobuf codec's strictness and Signal's four wire messages: round trips, MACs,
// signatures, and refusal of malformed input (never UB: run under ASan/UBSan too).
#include <gtest/gtest.h>

#include "crypto/protobuf.h"
#include "crypto/secret.h"
#include "crypto/test_hex.h"
#include "crypto/wire.h"

namespace tern::crypto {
namespace {

using testing::hex;
using testing::unhex;

std::vector<bool> read_all_ok(const std::vector<uint8_t>& in, std::vector<pb::Field>* out = nullptr) {
  pb::Reader r(in);
  pb::Field f;
  for (;;) {
    auto more = r.next(f);
    if (!more.ok()) return {false};
    if (!*more) return {true};
    if (out) out->push_back(f);
  }
}

TEST(ProtobufTest, RoundTripVarintsAndBytes) {
  pb::Writer w;
  w.varint_field(1, 0);
  w.varint_field(2, 300);
  w.varint_field(3, 0xffffffffu);
  w.varint_field(15, UINT64_MAX);
  w.bytes_field(16, std::vector<uint8_t>{1, 2, 3});
  auto bytes = w.take();
  EXPECT_EQ(hex(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 5)), "080010ac02");
  std::vector<pb::Field> fields;
  ASSERT_TRUE(read_all_ok(bytes, &fields)[0]);
  ASSERT_EQ(fields.size(), 5u);
  EXPECT_EQ(fields[1].varint, 300u);
  EXPECT_EQ(*pb::as_u32(fields[2]), 0xffffffffu);
  EXPECT_FALSE(pb::as_u32(fields[3]).ok()) << "wider than uint32";
  EXPECT_EQ(fields[3].varint, UINT64_MAX);
  EXPECT_EQ(fields[4].number, 16u);
  EXPECT_EQ(hex(fields[4].bytes), "010203");
  EXPECT_FALSE(pb::as_bytes(fields[0]).ok());
  EXPECT_FALSE(pb::as_u32(fields[4]).ok());
}

TEST(ProtobufTest, MalformedInputRefused) {
  for (const char* bad : {
           "08",                      // truncated varint value
           "0880",                    // varint with a continuation bit and no more bytes
           "088000",                  // overlong varint (needless 0x00 group)
           "08ffffffffffffffffff02",  // varint beyond 64 bits
           "08ffffffffffffffffffff01",  // 11-byte varint
           "1205010203",              // length 5, only 3 bytes
           "12ffffffff0f00",          // length far past the end
           "00",                      // field number 0
           "0b",                      // group start (wire type 3)
           "0c",                      // group end (wire type 4)
           "0e",                      // wire type 6
           "0d0102",                  // fixed32 truncated
           "090102030405",            // fixed64 truncated
           "80808080808001",          // field key varint too long
       }) {
    EXPECT_FALSE(read_all_ok(unhex(bad))[0]) << bad;
  }
  EXPECT_TRUE(read_all_ok(unhex("0d01020304" "090102030405060708"))[0]) << "fixed fields are skippable";
  EXPECT_TRUE(read_all_ok({})[0]);
}

PublicKey random_key() { return KeyPair::generate().public_key; }

TEST(WireTest, SignalMessageRoundTripAndMac) {
  Key32 mac_key;
  random_bytes(mac_key.bytes);
  PublicKey ratchet = random_key(), alice = random_key(), bob = random_key();
  auto m = SignalMessage::make(mac_key.span(), ratchet, 42, 41, {9, 8, 7}, alice, bob);
  ASSERT_EQ(m.serialized[0], 0x33);
  auto p = SignalMessage::parse(m.serialized);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ratchet_key, ratchet);
  EXPECT_EQ(p->counter, 42u);
  EXPECT_EQ(p->previous_counter, 41u);
  EXPECT_EQ(p->ciphertext, (std::vector<uint8_t>{9, 8, 7}));
  EXPECT_TRUE(p->verify_mac(mac_key.span(), alice, bob));
  EXPECT_FALSE(p->verify_mac(mac_key.span(), bob, alice)) << "identities are bound in order";
  auto tampered = m.serialized;
  tampered[tampered.size() - 10] ^= 1;  // inside the ciphertext
  auto pt = SignalMessage::parse(tampered);
  ASSERT_TRUE(pt.ok());
  EXPECT_FALSE(pt->verify_mac(mac_key.span(), alice, bob));
}

TEST(WireTest, SignalMessageStrictness) {
  Key32 mac_key;
  PublicKey k = random_key();
  auto m = SignalMessage::make(mac_key.span(), k, 1, 0, {1}, k, k);
  auto v2 = m.serialized;
  v2[0] = 0x22;
  EXPECT_EQ(SignalMessage::parse(v2).error(), Errc::kUnsupportedVersion);
  auto v4 = m.serialized;
  v4[0] = 0x44;
  EXPECT_EQ(SignalMessage::parse(v4).error(), Errc::kUnsupportedVersion);
  EXPECT_FALSE(SignalMessage::parse(std::span<const uint8_t>(m.serialized).first(5)).ok());
  EXPECT_FALSE(SignalMessage::parse({}).ok());
  // A ratchet key without the 0x05 type byte, a missing counter, and a repeated field.
  pb::Writer w;
  w.bytes_field(1, std::vector<uint8_t>(32, 1));
  w.varint_field(2, 1);
  w.bytes_field(4, std::vector<uint8_t>{1});
  std::vector<uint8_t> raw = {0x33};
  raw.insert(raw.end(), w.bytes().begin(), w.bytes().end());
  raw.resize(raw.size() + 8);
  EXPECT_EQ(SignalMessage::parse(raw).error(), Errc::kMalformed);
  pb::Writer w2;
  w2.bytes_field(1, serialize_public(k));
  w2.bytes_field(4, std::vector<uint8_t>{1});
  raw = {0x33};
  raw.insert(raw.end(), w2.bytes().begin(), w2.bytes().end());
  raw.resize(raw.size() + 8);
  EXPECT_EQ(SignalMessage::parse(raw).error(), Errc::kMalformed) << "counter is required";
  pb::Writer w3;
  w3.bytes_field(1, serialize_public(k));
  w3.varint_field(2, 1);
  w3.varint_field(2, 2);
  w3.bytes_field(4, std::vector<uint8_t>{1});
  raw = {0x33};
  raw.insert(raw.end(), w3.bytes().begin(), w3.bytes().end());
  raw.resize(raw.size() + 8);
  EXPECT_EQ(SignalMessage::parse(raw).error(), Errc::kMalformed) << "repeated field";
  std::vector<uint8_t> huge(kMaxWireMessage + 1, 0x33);
  EXPECT_EQ(SignalMessage::parse(huge).error(), Errc::kTooLarge);
}

TEST(WireTest, PreKeySignalMessageRoundTrip) {
  Key32 mac_key;
  PublicKey k = random_key(), base = random_key(), id = random_key();
  auto inner = SignalMessage::make(mac_key.span(), k, 0, 0, {5, 5}, id, k);
  for (std::optional<uint32_t> pre_key : {std::optional<uint32_t>(77), std::optional<uint32_t>()}) {
    auto m = PreKeySignalMessage::make(1234, pre_key, 9, base, id, inner);
    auto p = PreKeySignalMessage::parse(m.serialized);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->registration_id, 1234u);
    EXPECT_EQ(p->pre_key_id, pre_key);
    EXPECT_EQ(p->signed_pre_key_id, 9u);
    EXPECT_EQ(p->base_key, base);
    EXPECT_EQ(p->identity_key, id);
    EXPECT_EQ(p->message.serialized, inner.serialized);
    EXPECT_TRUE(p->message.verify_mac(mac_key.span(), id, k));
  }
}

TEST(WireTest, PreKeyIdZeroMeansNone) {
  // libsignal-protocol-typescript writes preKeyId = 0 when the bundle had no one-time prekey.
  Key32 mac_key;
  PublicKey k = random_key();
  auto inner = SignalMessage::make(mac_key.span(), k, 0, 0, {1}, k, k);
  auto m = PreKeySignalMessage::make(1, 0u, 9, k, k, inner);
  auto p = PreKeySignalMessage::parse(m.serialized);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->pre_key_id.has_value());
}

TEST(WireTest, SenderKeyMessagesRoundTripAndSignature) {
  KeyPair signing = KeyPair::generate();
  Uuid dist{};
  random_bytes(dist);
  auto m = SenderKeyMessage::make(dist, 7, 3, {1, 2, 3, 4}, std::span<const uint8_t, 32>(signing.private_key.data(), 32));
  auto p = SenderKeyMessage::parse(m.serialized);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->distribution_id, dist);
  EXPECT_EQ(p->chain_id, 7u);
  EXPECT_EQ(p->iteration, 3u);
  EXPECT_TRUE(p->verify_signature(signing.public_key));
  EXPECT_FALSE(p->verify_signature(random_key()));
  auto bad = m.serialized;
  bad[3] ^= 1;
  auto pb = SenderKeyMessage::parse(bad);
  EXPECT_TRUE(!pb.ok() || !pb->verify_signature(signing.public_key));

  Key32 ck;
  random_bytes(ck.bytes);
  auto d = SenderKeyDistributionMessage::make(dist, 7, 3, ck.span(), signing.public_key);
  auto pd = SenderKeyDistributionMessage::parse(d.serialized);
  ASSERT_TRUE(pd.ok());
  EXPECT_EQ(pd->chain_key, ck.bytes);
  EXPECT_EQ(pd->signing_key, signing.public_key);
  EXPECT_EQ(pd->iteration, 3u);
  EXPECT_FALSE(SenderKeyDistributionMessage::parse(std::span<const uint8_t>(d.serialized).first(d.serialized.size() - 1)).ok());
}

// Every truncation and every single-byte corruption of valid messages parses or fails cleanly
// (ASan/UBSan builds make UB visible); bounded: each message is < 200 bytes.
TEST(WireTest, TruncationsAndCorruptionsNeverMisbehave) {
  Key32 mac_key;
  KeyPair signing = KeyPair::generate();
  PublicKey k = random_key();
  auto sm = SignalMessage::make(mac_key.span(), k, 1, 0, {1, 2, 3}, k, k);
  auto pk = PreKeySignalMessage::make(1, 2, 3, k, k, sm);
  Uuid dist{};
  auto skm = SenderKeyMessage::make(dist, 1, 2, {3}, std::span<const uint8_t, 32>(signing.private_key.data(), 32));
  auto skd = SenderKeyDistributionMessage::make(dist, 1, 2, mac_key.span(), k);
  int parsed = 0, refused = 0;
  for (const auto* bytes : {&sm.serialized, &pk.serialized, &skm.serialized, &skd.serialized}) {
    ASSERT_LT(bytes->size(), 400u);
    for (size_t len = 0; len < bytes->size(); ++len) {
      std::span<const uint8_t> part(bytes->data(), len);
      (SignalMessage::parse(part).ok() ? parsed : refused)++;
      (PreKeySignalMessage::parse(part).ok() ? parsed : refused)++;
      (SenderKeyMessage::parse(part).ok() ? parsed : refused)++;
      (SenderKeyDistributionMessage::parse(part).ok() ? parsed : refused)++;
    }
    for (size_t i = 0; i < bytes->size(); ++i) {
      for (uint8_t x : {0x01, 0x80, 0xff}) {
        auto c = *bytes;
        c[i] ^= x;
        (SignalMessage::parse(c).ok() ? parsed : refused)++;
        (PreKeySignalMessage::parse(c).ok() ? parsed : refused)++;
        (SenderKeyMessage::parse(c).ok() ? parsed : refused)++;
        (SenderKeyDistributionMessage::parse(c).ok() ? parsed : refused)++;
      }
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(parsed + refused, 1000);
}

}  // namespace
}  // namespace tern::crypto
