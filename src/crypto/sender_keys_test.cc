// Sender Keys: distribution, group encrypt/decrypt, out-of-order, replay, MAX_SKIP, signature
// checks, late joiners, rotation, persistence.
#include <gtest/gtest.h>

#include "crypto/sender_keys.h"
#include "crypto/test_device.h"

namespace tern::crypto {
namespace {

using testing::str;

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

Uuid new_distribution() {
  Uuid u;
  random_bytes(u);
  return u;
}

struct Group {
  Uuid dist = new_distribution();
  SenderKeyRecord own;
  std::vector<SenderKeyRecord> members = std::vector<SenderKeyRecord>(3);

  void distribute() {
    auto skdm = create_sender_key_distribution(own, dist);
    auto parsed = SenderKeyDistributionMessage::parse(skdm.serialized);  // as received on the wire
    ASSERT_TRUE(parsed.ok());
    for (auto& m : members) ASSERT_TRUE(process_sender_key_distribution(m, *parsed).ok());
  }
  std::vector<uint8_t> send(const std::string& text) { return *group_encrypt(own, dist, bytes(text)); }
  // Messages "m0".."m<n-1>".
  std::vector<std::vector<uint8_t>> send_many(int n) {
    std::vector<std::vector<uint8_t>> sent;
    for (int i = 0; i < n; ++i) sent.push_back(send("m" + std::to_string(i)));
    return sent;
  }
};

TEST(SenderKeysTest, EveryMemberDecryptsEveryMessage) {
  Group g;
  g.distribute();
  for (int i = 0; i < 5; ++i) {
    auto ct = g.send("msg " + std::to_string(i));
    for (auto& m : g.members) {
      auto pt = group_decrypt(m, ct, 0);
      ASSERT_TRUE(pt.ok()) << errc_name(pt.error());
      EXPECT_EQ(str(*pt), "msg " + std::to_string(i));
    }
  }
}

TEST(SenderKeysTest, OutOfOrderReplayAndUsedKeys) {
  Group g;
  g.distribute();
  auto sent = g.send_many(6);
  auto& m = g.members[0];
  for (int i : {4, 1, 5, 0}) EXPECT_EQ(str(*group_decrypt(m, sent[static_cast<size_t>(i)], 0)), "m" + std::to_string(i));
  EXPECT_EQ(m.states.front().skipped.size(), 2u);  // 2 and 3 kept
  EXPECT_EQ(group_decrypt(m, sent[4], 0).error(), Errc::kDuplicate);
  EXPECT_EQ(group_decrypt(m, sent[0], 0).error(), Errc::kDuplicate);
  EXPECT_EQ(str(*group_decrypt(m, sent[3], 0)), "m3");
  EXPECT_EQ(m.states.front().skipped.size(), 1u) << "used key deleted";
}

TEST(SenderKeysTest, TooFarAheadAndTamperedChangeNoState) {
  Group g;
  g.distribute();
  RatchetLimits limits;
  limits.max_skip = 10;
  auto sent = g.send_many(12);
  auto& m = g.members[0];
  auto before = m.serialize();
  EXPECT_EQ(group_decrypt(m, sent[11], 0, limits).error(), Errc::kTooFarAhead);
  EXPECT_TRUE(m.serialize().equals(before.span()));
  auto bad = sent[0];
  bad[bad.size() - 70] ^= 1;  // inside the ciphertext: the signature fails
  EXPECT_EQ(group_decrypt(m, bad, 0, limits).error(), Errc::kBadSignature);
  EXPECT_TRUE(m.serialize().equals(before.span()));
  EXPECT_EQ(str(*group_decrypt(m, sent[10], 0, limits)), "m10");
}

TEST(SenderKeysTest, ForgedBySomeoneWithTheChainKeyButNotTheSigningKeyRefused) {
  Group g;
  g.distribute();
  // A member knows the chain key but not the signing key: its forgery fails the signature.
  SenderKeyRecord forger;
  auto skdm = create_sender_key_distribution(g.own, g.dist);
  SenderKeyState s;
  s.chain_id = skdm.chain_id;
  s.iteration = skdm.iteration;
  s.chain_key = Key32(std::span<const uint8_t, 32>(skdm.chain_key));
  KeyPair other = KeyPair::generate();
  s.signing_public = other.public_key;
  s.signing_private = Key32(std::span<const uint8_t, 32>(other.private_key.data(), 32));
  forger.states.push_front(s);
  auto forged = group_encrypt(forger, g.dist, bytes("fake"));
  ASSERT_TRUE(forged.ok());
  EXPECT_EQ(group_decrypt(g.members[1], *forged, 0).error(), Errc::kBadSignature);
}

TEST(SenderKeysTest, LateJoinerCannotReadEarlierMessagesAndRepeatKeepsProgress) {
  Group g;
  g.distribute();
  auto early = g.send("before you joined");
  ASSERT_TRUE(group_decrypt(g.members[0], early, 0).ok());
  SenderKeyRecord joiner;
  auto skdm = create_sender_key_distribution(g.own, g.dist);
  EXPECT_EQ(skdm.iteration, 1u);
  ASSERT_TRUE(process_sender_key_distribution(joiner, skdm).ok());
  EXPECT_EQ(group_decrypt(joiner, early, 0).error(), Errc::kDuplicate);
  auto later = g.send("after");
  EXPECT_EQ(str(*group_decrypt(joiner, later, 0)), "after");
  // The same SKDM delivered again (at-least-once) does not rewind the chain.
  ASSERT_TRUE(process_sender_key_distribution(joiner, skdm).ok());
  EXPECT_EQ(group_decrypt(joiner, later, 0).error(), Errc::kDuplicate);
}

TEST(SenderKeysTest, RotationLocksOutMembersWithoutTheNewKey) {
  Group g;
  g.distribute();
  ASSERT_TRUE(group_decrypt(g.members[2], g.send("all"), 0).ok());
  // Member 2 leaves: the sender drops its key and distributes a new one to members 0 and 1.
  g.own = SenderKeyRecord{};
  auto skdm = create_sender_key_distribution(g.own, g.dist);
  ASSERT_TRUE(process_sender_key_distribution(g.members[0], skdm).ok());
  ASSERT_TRUE(process_sender_key_distribution(g.members[1], skdm).ok());
  auto ct = g.send("after removal");
  EXPECT_EQ(str(*group_decrypt(g.members[0], ct, 0)), "after removal");
  EXPECT_EQ(str(*group_decrypt(g.members[1], ct, 0)), "after removal");
  EXPECT_EQ(group_decrypt(g.members[2], ct, 0).error(), Errc::kNoSession);
}

TEST(SenderKeysTest, StatesAreBoundedAndPersist) {
  SenderKeyRecord rec;
  Uuid dist = new_distribution();
  for (int i = 0; i < 8; ++i) {
    SenderKeyRecord sender;
    ASSERT_TRUE(process_sender_key_distribution(rec, create_sender_key_distribution(sender, dist)).ok());
  }
  EXPECT_EQ(rec.states.size(), kMaxSenderKeyStates);
  Group g;
  g.distribute();
  auto sent = g.send_many(3);
  ASSERT_TRUE(group_decrypt(g.members[0], sent[2], 0).ok());
  auto own = SenderKeyRecord::parse(g.own.serialize().span());
  auto member = SenderKeyRecord::parse(g.members[0].serialize().span());
  ASSERT_TRUE(own.ok() && member.ok());
  EXPECT_EQ(member->states.front().skipped.size(), 2u);
  EXPECT_EQ(str(*group_decrypt(*member, sent[0], 0)), "m0");
  auto next = group_encrypt(*own, g.dist, bytes("continued"));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(str(*group_decrypt(*member, *next, 0)), "continued");
  auto bytes_ = g.members[0].serialize();
  int refused = 0;
  for (size_t n = 0; n < bytes_.size(); ++n) refused += SenderKeyRecord::parse(bytes_.span().first(n)).ok() ? 0 : 1;
  EXPECT_GT(refused, 0);
}

TEST(SenderKeysTest, SkippedKeysExpire) {
  Group g;
  g.distribute();
  RatchetLimits limits;
  limits.skipped_key_max_age_s = 10;
  auto sent = g.send_many(3);
  auto& m = g.members[0];
  ASSERT_TRUE(group_decrypt(m, sent[1], 100, limits).ok());
  ASSERT_TRUE(group_decrypt(m, sent[2], 111, limits).ok());
  EXPECT_EQ(group_decrypt(m, sent[0], 111, limits).error(), Errc::kDuplicate);
}

}  // namespace
}  // namespace tern::crypto
