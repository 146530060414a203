#include "client/keyring.h"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <boost/json.hpp>

#include "crypto/keys.h"

namespace tern::client {
namespace {

namespace json = boost::json;

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/tern-keyring-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string sub(const std::string& name) const { return (path / name).string(); }
};

// What GET /v1/keys/{user}/{device} would answer for the keys of an upload body (taking its
// first one-time prekey, if any).
std::string bundle_answer(const std::string& upload, uint32_t device) {
  json::object up = json::parse(upload).as_object();
  json::object d{{"device", device},
                 {"registration_id", up.at("registration_id")},
                 {"identity_key", up.at("identity_key")},
                 {"signed_prekey", up.at("signed_prekey")}};
  const auto& otks = up.at("one_time_prekeys").as_array();
  if (!otks.empty()) d["one_time_prekey"] = otks[0];
  return json::serialize(json::object{{"user", "x"}, {"devices", json::array{d}}});
}

std::unique_ptr<Keyring> must_open(const std::string& dir) {
  auto k = Keyring::open(dir);
  EXPECT_TRUE(k) << (k ? "" : k.error().message);
  return k ? std::move(*k) : nullptr;
}

// Two devices' keyrings in a temp dir; bundle_of() uploads (in memory) and hands out a bundle.
class KeyringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    alice = must_open(tmp.sub("alice"));
    bob = must_open(tmp.sub("bob"));
    ASSERT_TRUE(alice && bob);
  }
  static crypto::PreKeyBundle bundle_of(Keyring& k, size_t prekeys) {
    auto upload = k.upload_body(true, prekeys);
    EXPECT_TRUE(upload);
    auto bundles = upload ? parse_bundles(bundle_answer(*upload, 1)) : Result<std::vector<DeviceBundle>>(Error{});
    EXPECT_TRUE(bundles && bundles->size() == 1);
    return bundles && bundles->size() == 1 ? (*bundles)[0].bundle : crypto::PreKeyBundle{};
  }
  TempDir tmp;
  std::unique_ptr<Keyring> alice, bob;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

TEST_F(KeyringTest, SessionFromABundleBothWaysAndAcrossRestarts) {
  auto upload = bob->upload_body(true, 3);
  ASSERT_TRUE(upload) << upload.error().message;
  EXPECT_EQ(bob->one_time_prekeys(), 3u);
  auto bundles = parse_bundles(bundle_answer(*upload, 1));
  ASSERT_TRUE(bundles) << bundles.error().message;
  ASSERT_EQ(bundles->size(), 1u);

  bool changed = true;
  ASSERT_TRUE(alice->start_session("bob:1", (*bundles)[0].bundle, &changed));
  EXPECT_FALSE(changed);
  EXPECT_EQ(alice->session_registration("bob:1"), bob->registration_id());
  auto c1 = alice->encrypt("bob:1", "hello bob");
  ASSERT_TRUE(c1) << c1.error().message;
  auto p1 = bob->decrypt("alice:1", *c1);
  ASSERT_TRUE(p1) << p1.error().message;
  EXPECT_EQ(*p1, "hello bob");
  EXPECT_EQ(bob->one_time_prekeys(), 2u) << "the one-time prekey is used up";
  auto replayed = bob->decrypt("alice:1", *c1);
  EXPECT_FALSE(replayed) << "a replay is refused";

  auto c2 = bob->encrypt("alice:1", "hi alice");
  ASSERT_TRUE(c2) << c2.error().message;
  auto p2 = alice->decrypt("bob:1", *c2);
  ASSERT_TRUE(p2) << p2.error().message;
  EXPECT_EQ(*p2, "hi alice");

  // Both save (a batch's commit) and restart: the sessions continue from disk.
  ASSERT_TRUE(alice->commit());
  ASSERT_TRUE(bob->commit());
  alice.reset();
  bob.reset();
  alice = must_open(tmp.sub("alice"));
  bob = must_open(tmp.sub("bob"));
  ASSERT_TRUE(alice && bob);
  auto c3 = alice->encrypt("bob:1", "after the restart");
  ASSERT_TRUE(c3);
  auto p3 = bob->decrypt("alice:1", *c3);
  ASSERT_TRUE(p3) << p3.error().message;
  EXPECT_EQ(*p3, "after the restart");
  EXPECT_EQ(bob->one_time_prekeys(), 2u);
}

TEST_F(KeyringTest, StateIsEncryptedAtRestWithAPrivateKeyFile) {
  const std::string dir = tmp.sub("alice");
  ASSERT_TRUE(alice->start_session("bob:1", bundle_of(*bob, 1)));
  ASSERT_TRUE(alice->encrypt("bob:1", "canary-7f3a"));
  ASSERT_TRUE(alice->commit());
  for (const char* f : {"/keyring.key", "/keyring.state"}) {
    struct stat st {};
    ASSERT_EQ(::stat((dir + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  const std::string state = slurp(dir + "/keyring.state");
  EXPECT_EQ(state.find("bob:1"), std::string::npos) << "nothing readable in the state file";
  EXPECT_EQ(state.find(alice->identity_public().substr(1, 16)), std::string::npos);

  // A changed byte: refused, not replaced by a new identity.
  const std::string identity = alice->identity_public();
  alice.reset();
  std::string bad = state;
  bad[bad.size() / 2] ^= 1;
  std::ofstream(dir + "/keyring.state", std::ios::binary | std::ios::trunc) << bad;
  auto broken = Keyring::open(dir);
  EXPECT_FALSE(broken) << "a tampered state must not open";
  std::ofstream(dir + "/keyring.state", std::ios::binary | std::ios::trunc) << state;
  auto restored = must_open(dir);
  ASSERT_TRUE(restored);
  EXPECT_EQ(restored->identity_public(), identity);
  EXPECT_TRUE(restored->has_session("bob:1"));
}

TEST_F(KeyringTest, BadBundleSignatureAndGarbageChangeNothing) {
  const crypto::PreKeyBundle good = bundle_of(*bob, 2);
  crypto::PreKeyBundle forged = good;
  forged.signed_pre_key_signature[3] ^= 1;
  EXPECT_FALSE(alice->start_session("bob:1", forged));
  EXPECT_FALSE(alice->has_session("bob:1"));
  ASSERT_TRUE(alice->start_session("bob:1", good));
  auto c = alice->encrypt("bob:1", "one");
  ASSERT_TRUE(c);
  EXPECT_FALSE(bob->decrypt("alice:1", "AwAAAA=="));  // a PreKeySignalMessage that does not parse
  EXPECT_FALSE(bob->decrypt("alice:1", "not base64"));
  EXPECT_EQ(bob->one_time_prekeys(), 2u);
  auto p = bob->decrypt("alice:1", *c);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(*p, "one");
  EXPECT_FALSE(parse_bundles(R"({"devices":[{"device":1}]})"));
  EXPECT_FALSE(parse_bundles("nope"));
}

TEST_F(KeyringTest, AReinstalledDeviceIsAnIdentityChange) {
  ASSERT_TRUE(alice->start_session("bob:1", bundle_of(*bob, 1)));
  auto reinstalled = must_open(tmp.sub("bob-new"));
  ASSERT_TRUE(reinstalled);
  bool changed = false;
  ASSERT_TRUE(alice->start_session("bob:1", bundle_of(*reinstalled, 1), &changed));
  EXPECT_TRUE(changed);
  auto c = alice->encrypt("bob:1", "to the new install");
  ASSERT_TRUE(c);
  auto p = reinstalled->decrypt("alice:1", *c);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(*p, "to the new install");
  EXPECT_FALSE(bob->decrypt("alice:1", *c)) << "the old installation cannot read it";
}

// ---- passphrase mode (KeyringOptions::passphrase) and the in-memory variant ----

bool exists(const std::string& path) { return std::filesystem::exists(path); }

std::unique_ptr<Keyring> must_open_with(const std::string& dir, std::string_view passphrase) {
  auto k = Keyring::open(dir, KeyringOptions{passphrase});
  EXPECT_TRUE(k) << (k ? "" : k.error().message);
  return k ? std::move(*k) : nullptr;
}

TEST_F(KeyringTest, PassphraseModeWritesNoKeyFileAndReopensWithThePassphrase) {
  const std::string dir = tmp.sub("carol");
  auto carol = must_open_with(dir, "correct horse battery staple");
  ASSERT_TRUE(carol);
  EXPECT_TRUE(carol->passphrase_protected());
  ASSERT_TRUE(carol->start_session("bob:1", bundle_of(*bob, 1)));
  auto c = carol->encrypt("bob:1", "canary-pass-91c2");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(carol->commit());
  EXPECT_FALSE(exists(dir + "/keyring.key")) << "no key file in passphrase mode";
  for (const char* f : {"/keyring.salt", "/keyring.state"}) {
    struct stat st {};
    ASSERT_EQ(::stat((dir + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  EXPECT_EQ(slurp(dir + "/keyring.state").find("bob:1"), std::string::npos);
  const std::string identity = carol->identity_public();
  const uint32_t reg = carol->registration_id();
  carol.reset();

  carol = must_open_with(dir, "correct horse battery staple");
  ASSERT_TRUE(carol);
  EXPECT_EQ(carol->identity_public(), identity);
  EXPECT_EQ(carol->registration_id(), reg);
  EXPECT_TRUE(carol->has_session("bob:1"));
  auto p = bob->decrypt("carol:1", *c);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(*p, "canary-pass-91c2");
  auto c2 = carol->encrypt("bob:1", "after reopening");
  ASSERT_TRUE(c2);
  auto p2 = bob->decrypt("carol:1", *c2);
  ASSERT_TRUE(p2) << p2.error().message;
  EXPECT_EQ(*p2, "after reopening");
}

TEST_F(KeyringTest, AWrongPassphraseIsAClearErrorAndChangesNothing) {
  const std::string dir = tmp.sub("carol");
  ASSERT_TRUE(must_open_with(dir, "right"));
  const std::string state = slurp(dir + "/keyring.state"), salt = slurp(dir + "/keyring.salt");
  auto wrong = Keyring::open(dir, KeyringOptions{"wrong"});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::kUnauthorized);
  EXPECT_NE(wrong.error().message.find("wrong passphrase"), std::string::npos) << wrong.error().message;
  EXPECT_EQ(slurp(dir + "/keyring.state"), state);
  EXPECT_EQ(slurp(dir + "/keyring.salt"), salt);
  EXPECT_FALSE(exists(dir + "/keyring.key"));
  EXPECT_TRUE(must_open_with(dir, "right"));
}

TEST_F(KeyringTest, ModesDoNotSwitchByThemselves) {
  // A key-file keyring opened with a passphrase: refused, no salt written.
  const std::string plain_dir = tmp.sub("alice");
  const std::string state = slurp(plain_dir + "/keyring.state");
  auto with_pass = Keyring::open(plain_dir, KeyringOptions{"pass"});
  ASSERT_FALSE(with_pass);
  EXPECT_EQ(with_pass.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(with_pass.error().message.find("key file"), std::string::npos) << with_pass.error().message;
  EXPECT_FALSE(exists(plain_dir + "/keyring.salt"));
  EXPECT_EQ(slurp(plain_dir + "/keyring.state"), state);

  // A passphrase keyring opened without one: refused, no key file made.
  const std::string pass_dir = tmp.sub("carol");
  ASSERT_TRUE(must_open_with(pass_dir, "pass"));
  const std::string pass_state = slurp(pass_dir + "/keyring.state");
  auto without = Keyring::open(pass_dir);
  ASSERT_FALSE(without);
  EXPECT_EQ(without.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(without.error().message.find("passphrase"), std::string::npos) << without.error().message;
  EXPECT_FALSE(exists(pass_dir + "/keyring.key"));
  EXPECT_EQ(slurp(pass_dir + "/keyring.state"), pass_state);
}

TEST_F(KeyringTest, SetPassphraseSwitchesModesExplicitlyBothWays) {
  const std::string dir = tmp.sub("alice");
  ASSERT_TRUE(alice->start_session("bob:1", bundle_of(*bob, 1)));
  const std::string identity = alice->identity_public();

  ASSERT_TRUE(alice->set_passphrase("first"));
  EXPECT_TRUE(alice->passphrase_protected());
  EXPECT_FALSE(exists(dir + "/keyring.key"));
  EXPECT_TRUE(exists(dir + "/keyring.salt"));
  ASSERT_TRUE(alice->encrypt("bob:1", "saved under the passphrase"));
  ASSERT_TRUE(alice->commit());  // a save in the new mode
  alice.reset();
  EXPECT_FALSE(Keyring::open(dir)) << "no longer opens with the key file";
  alice = must_open_with(dir, "first");
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->identity_public(), identity);
  EXPECT_TRUE(alice->has_session("bob:1"));

  // A new passphrase: the old one stops working.
  ASSERT_TRUE(alice->set_passphrase("second"));
  alice.reset();
  auto old = Keyring::open(dir, KeyringOptions{"first"});
  ASSERT_FALSE(old);
  EXPECT_EQ(old.error().code, ErrorCode::kUnauthorized);
  alice = must_open_with(dir, "second");
  ASSERT_TRUE(alice);

  // Back to the key file.
  ASSERT_TRUE(alice->set_passphrase(std::nullopt));
  EXPECT_FALSE(alice->passphrase_protected());
  EXPECT_TRUE(exists(dir + "/keyring.key"));
  EXPECT_FALSE(exists(dir + "/keyring.salt"));
  alice.reset();
  alice = must_open(dir);
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->identity_public(), identity);
  EXPECT_TRUE(alice->has_session("bob:1"));
}

TEST_F(KeyringTest, ASwitchCutShortIsSettledByTheKeyThatOpensTheState) {
  // As if a switch to a passphrase stopped after writing the salt: the state is still under
  // the key file, both files exist.
  const std::string dir = tmp.sub("alice");
  const std::string identity = alice->identity_public();
  alice.reset();
  ASSERT_TRUE(must_open_with(tmp.sub("other"), "pass"));
  std::filesystem::copy_file(tmp.sub("other") + "/keyring.salt", dir + "/keyring.salt");
  auto with_pass = Keyring::open(dir, KeyringOptions{"pass"});
  ASSERT_FALSE(with_pass) << "the passphrase does not open a state still under the key file";
  EXPECT_EQ(with_pass.error().code, ErrorCode::kUnauthorized);
  EXPECT_TRUE(exists(dir + "/keyring.key"));
  alice = must_open(dir);
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->identity_public(), identity);
  EXPECT_FALSE(exists(dir + "/keyring.salt")) << "the switch is rolled back";

  // As if a switch to the key file stopped after writing the new key file: the state is still
  // under the passphrase.
  const std::string pdir = tmp.sub("other");
  std::ofstream(pdir + "/keyring.key", std::ios::binary) << std::string(32, '\x42');
  auto without = Keyring::open(pdir);
  ASSERT_FALSE(without);
  EXPECT_EQ(without.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(without.error().message.find("passphrase"), std::string::npos) << without.error().message;
  ASSERT_TRUE(must_open_with(pdir, "pass"));
  EXPECT_FALSE(exists(pdir + "/keyring.key")) << "the leftover key file is removed";
  EXPECT_TRUE(exists(pdir + "/keyring.salt"));
}

TEST_F(KeyringTest, ATamperedSaltFileIsRefusedBeforeAnyKeyDerivation) {
  const std::string dir = tmp.sub("carol");
  ASSERT_TRUE(must_open_with(dir, "pass"));
  std::string salt = slurp(dir + "/keyring.salt");
  ASSERT_EQ(salt.size(), 34u);
  salt[10 + 7] = '\x7f';  // memlimit's top byte: far beyond libsodium's SENSITIVE limit
  std::ofstream(dir + "/keyring.salt", std::ios::binary | std::ios::trunc) << salt;
  auto k = Keyring::open(dir, KeyringOptions{"pass"});
  ASSERT_FALSE(k);
  EXPECT_NE(k.error().message.find("keyring.salt is corrupt"), std::string::npos) << k.error().message;
}

TEST(KeyringInMemory, SessionsWorkAndNothingIsWritten) {
  auto a = Keyring::in_memory();
  auto b = Keyring::in_memory();
  ASSERT_TRUE(a && b);
  auto upload = b->upload_body(true, 1);
  ASSERT_TRUE(upload) << upload.error().message;
  auto bundles = parse_bundles(bundle_answer(*upload, 1));
  ASSERT_TRUE(bundles && bundles->size() == 1);
  ASSERT_TRUE(a->start_session("b:1", (*bundles)[0].bundle));
  for (int i = 0; i < 3; ++i) {
    auto c = a->encrypt("b:1", "m" + std::to_string(i));
    ASSERT_TRUE(c) << c.error().message;
    auto p = b->decrypt("a:1", *c);
    ASSERT_TRUE(p) << p.error().message;
    EXPECT_EQ(*p, "m" + std::to_string(i));
  }
  EXPECT_FALSE(a->set_passphrase("x")) << "an in-memory keyring has nothing to protect on disk";
}

// Sender keys persist with the rest: after both keyrings reopen, the receiver still decrypts
// the sender's next group message, and a rotation makes a key the old holder cannot use.
TEST_F(KeyringTest, SenderKeysPersistAndARotatedKeyIsNotReadableWithTheOldOne) {
  const std::string conv = "g-1";
  {
    auto a = Keyring::open(tmp.sub("a"));
    auto b = Keyring::open(tmp.sub("b"));
    ASSERT_TRUE(a && b);
    auto missing = (*a)->group_encrypt(conv, "x");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
    auto skdm = (*a)->sender_key_distribution(conv);
    ASSERT_TRUE(skdm) << skdm.error().message;
    EXPECT_FALSE((*a)->sender_key_given(conv, "b:1"));
    ASSERT_TRUE((*a)->note_sender_key_given(conv, {"b:1"}));
    EXPECT_TRUE((*a)->sender_key_given(conv, "b:1"));
    auto c1 = (*a)->group_encrypt(conv, "one");
    ASSERT_TRUE(c1) << c1.error().message;
    auto early = (*b)->group_decrypt(conv, "a:1", *c1);
    ASSERT_FALSE(early);
    EXPECT_EQ(early.error().code, ErrorCode::kNotFound) << "no key yet: the caller may wait for it";
    ASSERT_TRUE((*b)->process_sender_key(conv, "a:1", *skdm));
    auto p1 = (*b)->group_decrypt(conv, "a:1", *c1);
    ASSERT_TRUE(p1) << p1.error().message;
    EXPECT_EQ(*p1, "one");
    EXPECT_FALSE((*b)->group_decrypt(conv, "a:1", *c1)) << "a replay is refused";
    EXPECT_FALSE((*b)->process_sender_key(conv, "a:1", std::vector<uint8_t>{1, 2, 3}));
    ASSERT_TRUE((*a)->commit());
    ASSERT_TRUE((*b)->commit());
  }
  auto a = Keyring::open(tmp.sub("a"));
  auto b = Keyring::open(tmp.sub("b"));
  ASSERT_TRUE(a && b);
  EXPECT_TRUE((*a)->sender_key_given(conv, "b:1"));
  EXPECT_EQ((*a)->sender_key_holders(conv), std::vector<std::string>{"b:1"});
  auto c2 = (*a)->group_encrypt(conv, "two");
  ASSERT_TRUE(c2);
  auto p2 = (*b)->group_decrypt(conv, "a:1", *c2);
  ASSERT_TRUE(p2) << p2.error().message;
  EXPECT_EQ(*p2, "two");
  // Rotation: b keeps only the old key.
  ASSERT_TRUE((*a)->rotate_sender_key(conv));
  EXPECT_FALSE((*a)->sender_key_given(conv, "b:1"));
  ASSERT_TRUE((*a)->sender_key_distribution(conv));
  auto c3 = (*a)->group_encrypt(conv, "three");
  ASSERT_TRUE(c3);
  auto p3 = (*b)->group_decrypt(conv, "a:1", *c3);
  ASSERT_FALSE(p3);
  EXPECT_EQ(p3.error().code, ErrorCode::kNotFound);
  EXPECT_FALSE((*b)->group_decrypt("g-other", "a:1", *c2)) << "keys are per conversation";
}

// ---- saves per batch (keyring.h: a change marks the state, commit() writes it) ----

// A batch of 50 decrypts is one save, and a commit without changes writes nothing.
TEST_F(KeyringTest, ABatchOfDecryptsIsOneSave) {
  ASSERT_TRUE(alice->start_session("bob:1", bundle_of(*bob, 1)));
  std::vector<std::string> cs;
  for (int i = 0; i < 50; ++i) {
    auto c = alice->encrypt("bob:1", "m" + std::to_string(i));
    ASSERT_TRUE(c) << c.error().message;
    cs.push_back(*c);
  }
  const uint64_t before = bob->saves();
  for (int i = 0; i < 50; ++i) {
    auto p = bob->decrypt("alice:1", cs[i]);
    ASSERT_TRUE(p) << p.error().message;
    EXPECT_EQ(*p, "m" + std::to_string(i));
  }
  EXPECT_EQ(bob->saves(), before) << "decrypts do not write";
  EXPECT_TRUE(bob->dirty());
  ASSERT_TRUE(bob->commit());
  EXPECT_EQ(bob->saves(), before + 1);
  EXPECT_FALSE(bob->dirty());
  ASSERT_TRUE(bob->commit());
  EXPECT_EQ(bob->saves(), before + 1) << "nothing changed: nothing written";
  EXPECT_FALSE(bob->decrypt("alice:1", cs[0])) << "a failed decrypt (a replay) changes nothing";
  EXPECT_FALSE(bob->dirty());
}

// A crash (the keyring abandoned) between the decrypts and the save: the reopened keyring is
// the saved one, and decrypts the same messages again (what the server replays, since
// nothing was acked). After a save, they are replays (kExists): the save must come after the
// plaintexts are kept and before the ack.
TEST_F(KeyringTest, ChangesNotCommittedAreLostAndTheReplayDecryptsAgain) {
  const std::string dir = tmp.sub("bob");
  ASSERT_TRUE(alice->start_session("bob:1", bundle_of(*bob, 2)));
  std::vector<std::string> cs;
  for (int i = 0; i < 5; ++i) cs.push_back(*alice->encrypt("bob:1", "m" + std::to_string(i)));
  ASSERT_TRUE(alice->commit());
  for (const auto& c : cs) ASSERT_TRUE(bob->decrypt("alice:1", c));  // the first one sets up the session
  EXPECT_EQ(bob->one_time_prekeys(), 1u);
  bob.reset();  // the crash: no commit

  bob = must_open(dir);
  ASSERT_TRUE(bob);
  EXPECT_FALSE(bob->has_session("alice:1"));
  EXPECT_EQ(bob->one_time_prekeys(), 2u) << "the prekey is still there for the replay";
  for (int i = 0; i < 5; ++i) {
    auto p = bob->decrypt("alice:1", cs[i]);
    ASSERT_TRUE(p) << i << ": " << p.error().message;
    EXPECT_EQ(*p, "m" + std::to_string(i));
  }
  ASSERT_TRUE(bob->commit());  // kept and saved: now it may be acked
  bob.reset();

  bob = must_open(dir);
  ASSERT_TRUE(bob);
  for (const auto& c : cs) {
    auto again = bob->decrypt("alice:1", c);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, ErrorCode::kExists);
  }
  auto next = alice->encrypt("bob:1", "after the save");
  ASSERT_TRUE(next);
  auto p = bob->decrypt("alice:1", *next);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(*p, "after the save");
}

// The send side: a ciphertext whose ratchet step was not saved is never sent (the caller
// commits first). After a crash without the save the reopened keyring encrypts the next
// message with the same message key: this is what the commit before the socket prevents.
TEST_F(KeyringTest, AnEncryptIsDurableOnlyAfterCommit) {
  const std::string dir = tmp.sub("alice");
  ASSERT_TRUE(alice->start_session("bob:1", bundle_of(*bob, 1)));
  ASSERT_TRUE(alice->commit());
  auto first = alice->encrypt("bob:1", "one");
  ASSERT_TRUE(first);
  EXPECT_TRUE(alice->dirty());
  alice.reset();  // crash before the commit: "one" never left
  alice = must_open(dir);
  ASSERT_TRUE(alice);
  auto again = alice->encrypt("bob:1", "two");
  ASSERT_TRUE(again);
  ASSERT_TRUE(alice->commit());
  auto p = bob->decrypt("alice:1", *again);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(*p, "two");
  EXPECT_FALSE(bob->decrypt("alice:1", *first)) << "the unsaved step's key was given to \"two\"";
  alice.reset();
  alice = must_open(dir);
  ASSERT_TRUE(alice);
  auto third = alice->encrypt("bob:1", "three");
  ASSERT_TRUE(third);
  auto p3 = bob->decrypt("alice:1", *third);
  ASSERT_TRUE(p3) << "committed before it left: the next message follows on";
  EXPECT_EQ(*p3, "three");
}

}  // namespace
}  // namespace tern::client
