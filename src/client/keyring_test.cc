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

  // Both restart: the sessions continue from disk.
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

}  // namespace
}  // namespace tern::client
