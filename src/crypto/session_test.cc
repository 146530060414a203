// Double Ratchet and X3DH properties of our sessions: set-up with and without a one-time
// prekey, out-of-order and lost messages, replays, MAX_SKIP, skipped-key expiry, forward
// secrecy, healing after a state compromise, Sesame's archived sessions, and persistence.
#include <gtest/gtest.h>

#include "crypto/session_cipher.h"
#include "crypto/test_device.h"

namespace tern::crypto {
namespace {

using testing::str;
using testing::TestDevice;

bool same_record(const SessionRecord& a, const SessionRecord& b) {
  return a.serialize().equals(b.serialize().span());
}

// Alice initiates with Bob's bundle and sends `first`; Bob decrypts it.
void handshake(TestDevice& alice, TestDevice& bob, bool one_time = true) {
  ASSERT_TRUE(initiate_session(alice.sessions["bob"], alice.local(), bob.bundle(one_time)).ok());
  auto c = alice.encrypt("bob", "hello bob");
  ASSERT_EQ(c.type, MessageType::kPreKey);
  auto pt = bob.decrypt("alice", c);
  ASSERT_TRUE(pt.ok()) << errc_name(pt.error());
  ASSERT_EQ(str(*pt), "hello bob");
}

// A handshake and Bob's first answer: both sides have sent and received.
void established(TestDevice& alice, TestDevice& bob) {
  handshake(alice, bob);
  ASSERT_TRUE(alice.decrypt("bob", bob.encrypt("alice", "r")).ok());
}

TEST(SessionTest, SetUpAndConversationBothWays) {
  TestDevice alice, bob;
  size_t prekeys_before = bob.prekeys.size();
  handshake(alice, bob);
  EXPECT_EQ(bob.prekeys.size(), prekeys_before - 1) << "the one-time prekey was used once";
  // More prekey messages before Bob answers continue the same session.
  auto c2 = alice.encrypt("bob", "still there?");
  EXPECT_EQ(c2.type, MessageType::kPreKey);
  ASSERT_EQ(str(*bob.decrypt("alice", c2)), "still there?");
  EXPECT_TRUE(bob.sessions["alice"].archived.empty());
  for (int round = 0; round < 5; ++round) {
    auto b = bob.encrypt("alice", "from bob " + std::to_string(round));
    EXPECT_EQ(b.type, MessageType::kWhisper);
    auto pa = alice.decrypt("bob", b);
    ASSERT_TRUE(pa.ok()) << errc_name(pa.error());
    EXPECT_EQ(str(*pa), "from bob " + std::to_string(round));
    for (int i = 0; i < 3; ++i) {
      auto a = alice.encrypt("bob", "a" + std::to_string(i));
      EXPECT_EQ(a.type, MessageType::kWhisper) << "after a reply no prekey message is needed";
      auto pb = bob.decrypt("alice", a);
      ASSERT_TRUE(pb.ok()) << errc_name(pb.error());
      EXPECT_EQ(str(*pb), "a" + std::to_string(i));
    }
  }
}

TEST(SessionTest, WithoutOneTimePrekey) {
  TestDevice alice, bob(0);
  handshake(alice, bob, false);
  auto b = bob.encrypt("alice", "ok");
  EXPECT_EQ(str(*alice.decrypt("bob", b)), "ok");
}

TEST(SessionTest, BadSignedPrekeySignatureRefused) {
  TestDevice alice, bob, mallory;
  auto bundle = bob.bundle();
  bundle.signed_pre_key = mallory.signed_prekey.key.public_key;  // swapped by the server
  auto r = initiate_session(alice.sessions["bob"], alice.local(), bundle);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errc::kBadSignature);
  EXPECT_TRUE(alice.sessions["bob"].empty());
}

TEST(SessionTest, OutOfOrderAndLostMessagesDecrypt) {
  TestDevice alice, bob;
  handshake(alice, bob);
  auto b0 = bob.encrypt("alice", "b0");
  ASSERT_TRUE(alice.decrypt("bob", b0).ok());
  std::vector<Ciphertext> sent;
  for (int i = 0; i < 10; ++i) sent.push_back(alice.encrypt("bob", "m" + std::to_string(i)));
  for (int i : {9, 3, 0, 5}) {
    auto p = bob.decrypt("alice", sent[static_cast<size_t>(i)]);
    ASSERT_TRUE(p.ok()) << i << " " << errc_name(p.error());
    EXPECT_EQ(str(*p), "m" + std::to_string(i));
  }
  // A DH ratchet step happens (Bob replies, Alice answers in a new chain); messages of the
  // old chain that were late still decrypt; 7 is lost forever, which harms nothing.
  auto b1 = bob.encrypt("alice", "b1");
  ASSERT_TRUE(alice.decrypt("bob", b1).ok());
  auto n0 = alice.encrypt("bob", "new chain");
  ASSERT_EQ(str(*bob.decrypt("alice", n0)), "new chain");
  for (int i : {1, 2, 4, 6, 8}) {
    auto p = bob.decrypt("alice", sent[static_cast<size_t>(i)]);
    ASSERT_TRUE(p.ok()) << i << " " << errc_name(p.error());
    EXPECT_EQ(str(*p), "m" + std::to_string(i));
  }
}

TEST(SessionTest, LateMessagesOfAnEarlierChainAfterSeveralSteps) {
  TestDevice alice, bob;
  handshake(alice, bob);
  auto b0 = bob.encrypt("alice", "b0");
  ASSERT_TRUE(alice.decrypt("bob", b0).ok());
  auto early = alice.encrypt("bob", "early");
  auto kept = alice.encrypt("bob", "delivered");
  ASSERT_TRUE(bob.decrypt("alice", kept).ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(alice.decrypt("bob", bob.encrypt("alice", "x")).ok());
    ASSERT_TRUE(bob.decrypt("alice", alice.encrypt("bob", "y")).ok());
  }
  auto p = bob.decrypt("alice", early);
  ASSERT_TRUE(p.ok()) << errc_name(p.error());
  EXPECT_EQ(str(*p), "early");
}

TEST(SessionTest, ReplayRefusedWithoutStateChange) {
  TestDevice alice, bob;
  established(alice, bob);
  auto m = alice.encrypt("bob", "once");
  ASSERT_TRUE(bob.decrypt("alice", m).ok());
  SessionRecord before = *SessionRecord::parse(bob.sessions["alice"].serialize().span());
  auto again = bob.decrypt("alice", m);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error(), Errc::kDuplicate);
  EXPECT_TRUE(same_record(before, bob.sessions["alice"]));
}

TEST(SessionTest, ReplayedPreKeyMessageAfterPrekeyUsedIsRefused) {
  TestDevice alice, bob;
  ASSERT_TRUE(initiate_session(alice.sessions["bob"], alice.local(), bob.bundle()).ok());
  auto first = alice.encrypt("bob", "first");
  ASSERT_TRUE(bob.decrypt("alice", first).ok());
  // The same message again: the session exists (same base key), the key is used.
  auto r = bob.decrypt("alice", first);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errc::kDuplicate);
  // On a fresh device state without that session the one-time prekey is gone: refused.
  bob.sessions.clear();
  auto r2 = bob.decrypt("alice", first);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error(), Errc::kNoSession);
  EXPECT_TRUE(bob.sessions["alice"].empty());
}

TEST(SessionTest, TamperedPreKeyMessageCreatesNothingAndKeepsThePrekey) {
  TestDevice alice, bob;
  ASSERT_TRUE(initiate_session(alice.sessions["bob"], alice.local(), bob.bundle()).ok());
  auto first = alice.encrypt("bob", "first");
  size_t prekeys = bob.prekeys.size();
  // Flip a bit of the inner SignalMessage's MAC. (The outer fields registrationId and the key
  // ids are not authenticated, in Signal's format too; a wrong key id simply finds no key.)
  auto parsed = PreKeySignalMessage::parse(first.bytes);
  ASSERT_TRUE(parsed.ok());
  auto inner = parsed->message;
  inner.serialized.back() ^= 1;
  auto rebuilt = PreKeySignalMessage::make(parsed->registration_id, parsed->pre_key_id, parsed->signed_pre_key_id,
                                           parsed->base_key, parsed->identity_key, inner);
  Ciphertext bad{MessageType::kPreKey, rebuilt.serialized};
  auto r = bob.decrypt("alice", bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errc::kBadMac);
  EXPECT_TRUE(bob.sessions["alice"].empty());
  EXPECT_EQ(bob.prekeys.size(), prekeys) << "the one-time prekey is deleted only after success";
  EXPECT_EQ(str(*bob.decrypt("alice", first)), "first");
}

TEST(SessionTest, MessageForAnotherRecipientRefused) {
  // The MAC binds both identities: Bob cannot pass Alice's message to Carol's session state
  // even if the keys matched; here Carol has her own session with Alice.
  TestDevice alice, bob, carol;
  established(alice, bob);
  ASSERT_TRUE(initiate_session(alice.sessions["carol"], alice.local(), carol.bundle()).ok());
  ASSERT_TRUE(carol.decrypt("alice", alice.encrypt("carol", "hi carol")).ok());
  auto to_bob = alice.encrypt("bob", "for bob only");
  auto before = carol.sessions["alice"].serialize();
  EXPECT_FALSE(carol.decrypt("alice", to_bob).ok());
  EXPECT_TRUE(carol.sessions["alice"].serialize().equals(before.span()));
}

TEST(SessionTest, GarbageInputRefusedWithoutStateChange) {
  TestDevice alice, bob;
  established(alice, bob);
  auto before = bob.sessions["alice"].serialize();
  auto real = alice.encrypt("bob", "real");
  int refused = 0;
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> junk(static_cast<size_t>(i % 200));
    random_bytes(junk);
    if (i % 2 == 0 && junk.size() > 1) junk[0] = 0x33;  // past the version check
    if (i % 4 == 0 && junk.size() > 20) std::copy_n(real.bytes.begin(), 20, junk.begin());
    refused += bob.decrypt("alice", Ciphertext{MessageType::kWhisper, junk}).ok() ? 0 : 1;
    refused += bob.decrypt("alice", Ciphertext{MessageType::kPreKey, junk}).ok() ? 0 : 1;
  }
  EXPECT_EQ(refused, 4000);
  EXPECT_TRUE(bob.sessions["alice"].serialize().equals(before.span()));
  EXPECT_EQ(str(*bob.decrypt("alice", real)), "real");
}

TEST(SessionTest, MoreThanMaxSkipRefusedWithoutStateChange) {
  TestDevice alice, bob;
  established(alice, bob);
  RatchetLimits limits;
  limits.max_skip = 50;
  std::vector<Ciphertext> sent;
  for (int i = 0; i < 52; ++i) sent.push_back(alice.encrypt("bob", "m" + std::to_string(i)));
  SessionRecord before = *SessionRecord::parse(bob.sessions["alice"].serialize().span());
  auto far = bob.decrypt("alice", sent[51], 0, limits);  // 51 keys to skip > 50
  ASSERT_FALSE(far.ok());
  EXPECT_EQ(far.error(), Errc::kTooFarAhead);
  EXPECT_TRUE(same_record(before, bob.sessions["alice"]));
  auto edge = bob.decrypt("alice", sent[50], 0, limits);  // exactly 50 skipped: allowed
  ASSERT_TRUE(edge.ok()) << errc_name(edge.error());
  EXPECT_EQ(bob.sessions["alice"].current->skipped.size(), 50u);
  EXPECT_EQ(str(*bob.decrypt("alice", sent[51], 0, limits)), "m51");
  EXPECT_EQ(str(*bob.decrypt("alice", sent[0], 0, limits)), "m0");
}

TEST(SessionTest, DefaultMaxSkipIs2000) {
  TestDevice alice, bob;
  established(alice, bob);
  Ciphertext last;
  for (int i = 0; i <= 2001; ++i) last = alice.encrypt("bob", "m");
  auto r = bob.decrypt("alice", last);  // counter 2001: 2001 keys to skip
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errc::kTooFarAhead);
}

TEST(SessionTest, SkippedKeysExpireByAgeAndCount) {
  TestDevice alice, bob;
  established(alice, bob);
  RatchetLimits limits;
  limits.skipped_key_max_age_s = 100;
  limits.max_skipped_keys = 5;
  std::vector<Ciphertext> sent;
  for (int i = 0; i < 12; ++i) sent.push_back(alice.encrypt("bob", "m" + std::to_string(i)));
  ASSERT_TRUE(bob.decrypt("alice", sent[10], 1000, limits).ok());  // skips 0..9: keeps 5..9
  EXPECT_EQ(bob.sessions["alice"].current->skipped.size(), 5u);
  EXPECT_EQ(bob.decrypt("alice", sent[2], 1000, limits).error(), Errc::kDuplicate) << "evicted by count";
  EXPECT_EQ(str(*bob.decrypt("alice", sent[6], 1050, limits)), "m6");
  // The next decrypt after 100 s drops the rest.
  ASSERT_TRUE(bob.decrypt("alice", sent[11], 1101, limits).ok());
  EXPECT_TRUE(bob.sessions["alice"].current->skipped.empty());
  EXPECT_EQ(bob.decrypt("alice", sent[7], 1101, limits).error(), Errc::kDuplicate) << "expired by age";
}

TEST(SessionTest, TamperedMessageChangesNoStateThenOriginalDecrypts) {
  TestDevice alice, bob;
  established(alice, bob);
  auto m = alice.encrypt("bob", "intact");
  SessionRecord before = *SessionRecord::parse(bob.sessions["alice"].serialize().span());
  for (size_t i : {size_t{1}, m.bytes.size() / 2, m.bytes.size() - 1}) {
    auto bad = m;
    bad.bytes[i] ^= 0x04;
    EXPECT_FALSE(bob.decrypt("alice", bad).ok()) << i;
    EXPECT_TRUE(same_record(before, bob.sessions["alice"])) << i;
  }
  // A forged message with a fresh ratchet key (would force a DH step) changes nothing either.
  auto parsed = SignalMessage::parse(m.bytes);
  Key32 junk;
  auto forged = SignalMessage::make(junk.span(), KeyPair::generate().public_key, 0, 0, parsed->ciphertext,
                                    alice.identity.public_key, bob.identity.public_key);
  EXPECT_EQ(bob.decrypt("alice", Ciphertext{MessageType::kWhisper, forged.serialized}).error(), Errc::kBadMac);
  EXPECT_TRUE(same_record(before, bob.sessions["alice"]));
  EXPECT_EQ(str(*bob.decrypt("alice", m)), "intact");
}

TEST(SessionTest, UsedMessageKeysAreGone) {
  TestDevice alice, bob;
  established(alice, bob);
  auto m0 = alice.encrypt("bob", "zero");
  auto m1 = alice.encrypt("bob", "one");
  ASSERT_TRUE(bob.decrypt("alice", m1).ok());
  ASSERT_EQ(bob.sessions["alice"].current->skipped.size(), 1u);
  ASSERT_TRUE(bob.decrypt("alice", m0).ok());
  EXPECT_TRUE(bob.sessions["alice"].current->skipped.empty()) << "the skipped key was deleted on use";
  // An attacker who steals Bob's whole state now cannot open m0 or m1 with it.
  SessionRecord stolen = *SessionRecord::parse(bob.sessions["alice"].serialize().span());
  EXPECT_FALSE(session_decrypt(stolen, m0.bytes, 0).ok());
  EXPECT_FALSE(session_decrypt(stolen, m1.bytes, 0).ok());
}

TEST(SessionTest, CompromisedStateHealsAfterDhRatchetRoundTrip) {
  TestDevice alice, bob;
  established(alice, bob);
  // Eve copies Bob's state and then sees every message Alice sends.
  SessionRecord eve = *SessionRecord::parse(bob.sessions["alice"].serialize().span());
  auto m1 = alice.encrypt("bob", "m1");
  auto eve1 = session_decrypt(eve, m1.bytes, 0);
  ASSERT_TRUE(eve1.ok()) << "the compromise is real: same chain";
  EXPECT_EQ(str(*eve1), "m1");
  ASSERT_TRUE(bob.decrypt("alice", m1).ok());
  // Bob -> Alice -> Bob -> Alice: Bob's fresh ratchet key (unknown to Eve) enters the root.
  ASSERT_TRUE(alice.decrypt("bob", bob.encrypt("alice", "b1")).ok());
  auto m2 = alice.encrypt("bob", "m2");
  (void)session_decrypt(eve, m2.bytes, 0);  // Eve keeps following as well as she can
  ASSERT_TRUE(bob.decrypt("alice", m2).ok());
  ASSERT_TRUE(alice.decrypt("bob", bob.encrypt("alice", "b2")).ok());
  auto m3 = alice.encrypt("bob", "m3");
  auto eve3 = session_decrypt(eve, m3.bytes, 0);
  EXPECT_FALSE(eve3.ok()) << "healed: Eve cannot decrypt after the DH ratchet round trip";
  EXPECT_EQ(str(*bob.decrypt("alice", m3)), "m3");
}

TEST(SessionTest, SesameNewBaseKeyArchivesOldSessionWhichStillDecrypts) {
  TestDevice alice, bob;
  established(alice, bob);
  auto late_old = alice.encrypt("bob", "from the old session");
  // Alice loses her session (e.g. reinstalled session state) and sets up a new one.
  alice.sessions["bob"] = SessionRecord{};
  ASSERT_TRUE(initiate_session(alice.sessions["bob"], alice.local(), bob.bundle()).ok());
  auto fresh = alice.encrypt("bob", "new session");
  ASSERT_EQ(fresh.type, MessageType::kPreKey);
  ASSERT_EQ(str(*bob.decrypt("alice", fresh)), "new session");
  ASSERT_EQ(bob.sessions["alice"].archived.size(), 1u);
  // The late message of the old session decrypts from the archive.
  auto p = bob.decrypt("alice", late_old);
  ASSERT_TRUE(p.ok()) << errc_name(p.error());
  EXPECT_EQ(str(*p), "from the old session");
  // Bob's answer goes in the session that is active after that (the one just used).
  auto b = bob.encrypt("alice", "answer");
  EXPECT_FALSE(alice.decrypt("bob", b).ok()) << "Alice discarded that session";
}

TEST(SessionTest, ArchiveIsBounded) {
  TestDevice alice, bob(20);
  for (size_t i = 0; i < kMaxArchivedSessions + 3; ++i) {
    alice.sessions["bob"] = SessionRecord{};
    handshake(alice, bob);
  }
  EXPECT_EQ(bob.sessions["alice"].archived.size(), kMaxArchivedSessions);
}

TEST(SessionTest, PersistAndContinue) {
  TestDevice alice, bob;
  handshake(alice, bob);
  auto pending = alice.encrypt("bob", "in flight");
  auto a_bytes = alice.sessions["bob"].serialize();
  auto b_bytes = bob.sessions["alice"].serialize();
  auto a = SessionRecord::parse(a_bytes.span());
  auto b = SessionRecord::parse(b_bytes.span());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(a->serialize().equals(a_bytes.span()));
  alice.sessions["bob"] = std::move(*a);
  bob.sessions["alice"] = std::move(*b);
  EXPECT_EQ(str(*bob.decrypt("alice", pending)), "in flight");
  EXPECT_EQ(str(*alice.decrypt("bob", bob.encrypt("alice", "back"))), "back");
  // Every truncation of a record is refused or parses to something; none crashes.
  int refused = 0;
  for (size_t n = 0; n < b_bytes.size(); ++n) {
    refused += SessionRecord::parse(b_bytes.span().first(n)).ok() ? 0 : 1;
  }
  EXPECT_GT(refused, 0);
  std::vector<uint8_t> wrong_version(b_bytes.span().begin(), b_bytes.span().end());
  wrong_version[0] = 2;
  EXPECT_EQ(SessionRecord::parse(wrong_version).error(), Errc::kUnsupportedVersion);
}

TEST(KeysTest, RecordsRoundTrip) {
  TestDevice d;
  auto id = parse_identity(serialize_identity(d.identity).span());
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->public_key, d.identity.public_key);
  EXPECT_TRUE(id->private_key.equals(d.identity.private_key.span()));
  auto spk = SignedPreKeyRecord::parse(d.signed_prekey.serialize().span());
  ASSERT_TRUE(spk.ok());
  EXPECT_EQ(spk->signature, d.signed_prekey.signature);
  EXPECT_TRUE(verify_signed_prekey(d.identity.public_key, spk->key.public_key, spk->signature));
  auto pk = PreKeyRecord::parse(d.prekeys.begin()->second.serialize().span());
  ASSERT_TRUE(pk.ok());
  EXPECT_EQ(pk->id, d.prekeys.begin()->first);
  // A record whose public key does not match its private key is refused.
  auto bytes = serialize_identity(d.identity);
  std::vector<uint8_t> bad(bytes.span().begin(), bytes.span().end());
  bad[5] ^= 1;  // inside the public key
  EXPECT_FALSE(parse_identity(bad).ok());
  auto ids = generate_prekeys(0xFFFFFE, 3);
  EXPECT_EQ(ids[0].id, 0xFFFFFEu);
  EXPECT_EQ(ids[1].id, 0xFFFFFFu);
  EXPECT_EQ(ids[2].id, 1u);
  for (int i = 0; i < 100; ++i) {
    uint32_t r = generate_registration_id();
    EXPECT_GE(r, 1u);
    EXPECT_LE(r, 16380u);
  }
}

}  // namespace
}  // namespace tern::crypto
