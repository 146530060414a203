// Issue 8, items 10, 11 and 13: what a user (or a local user of the machine) learns.
//  10. Direct conversation ids were `d-` + a SHA-256 prefix of the two names, and non-members
//      got 403 where a conversation exists and 404 where it does not: anyone could test
//      whether two users talk. Now ids are keyed with a server secret and a non-member gets
//      one answer whether or not the conversation exists.
//  11. Five wrong link-code guesses by anyone revoked the target's codes, and 429 vs 404 told
//      whether the target had a code outstanding. Now the guesser is throttled, and every
//      failure has one answer.
//  13. The data directory was 0755 and its files 0644.
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <set>

#include "harm.h"
#include "store/redis/testing/redis_server.h"

namespace tern::test {
namespace {

class AdversarialPrivacy : public ServerTest {};

std::string legacy_direct_id(const std::string& a, const std::string& b) {
  const std::string key = a < b ? a + '\n' + b : b + '\n' + a;
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  char hex[33];
  sodium_bin2hex(hex, sizeof hex, digest, 16);
  return std::string("d-") + hex;
}

std::string answer(const HttpResult& r) { return std::to_string(r.status) + " " + r.body; }

// What carol (never a member) learns about alice and bob: nothing. She cannot derive their
// direct id, and every probe of it answers exactly like a probe of an id that does not exist.
// A removed member still gets wire-v1's 403. The id is stable across restarts and differs
// between deployments (it is keyed with each deployment's own secret, kept 0600 in the data
// dir; on Redis, shared through it).
TEST_F(AdversarialPrivacy, DirectIdsCannotBeDerivedOrProbed) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args(setup_friendly())));
  Account alice = api().must_register("alice");
  Account bob = api().must_register("bob");
  Account carol = api().must_register("carol");
  Account dave = api().must_register("dave");
  const std::string id = api().must_direct(alice.token, "bob");
  ASSERT_FALSE(id.empty());
  EXPECT_NE(id, legacy_direct_id("alice", "bob")) << "the id is a public function of the two names";
  EXPECT_EQ(id.rfind("d-", 0), 0u) << id;

  const std::string absent = "d-0123456789abcdef0123456789abcdef";
  EXPECT_EQ(answer(api().messages(carol.token, id, 0, 10)), answer(api().messages(carol.token, absent, 0, 10)))
      << "backfill tells an existing conversation from a missing one";
  EXPECT_EQ(answer(api().add_members(carol.token, id, {"carol"})), answer(api().add_members(carol.token, absent, {"carol"})))
      << "member change tells an existing conversation from a missing one";
  Device dc(carol);
  ASSERT_TRUE(dc.connect_synced(port()));
  auto e1 = dc.send_wait(id, "probe-1", "x");
  auto e2 = dc.send_wait(absent, "probe-2", "x");
  ASSERT_TRUE(e1 && e2);
  EXPECT_EQ(jstr(*e1, "code") + jstr(*e1, "message"), jstr(*e2, "code") + jstr(*e2, "message"))
      << dump(*e1) << " vs " << dump(*e2);

  // wire-v1: a member who was removed is refused with 403.
  const std::string group = api().must_group(alice.token, "g", {"dave"});
  ASSERT_EQ(api().remove_members(alice.token, group, {"dave"}).status, 200);
  auto removed = api().messages(dave.token, group, 0, 10);
  EXPECT_EQ(removed.status, 403) << removed.body;
  EXPECT_EQ(removed.error_code(), "forbidden") << removed.body;

  // The secret lives in the data dir, mode 0600; the id is stable across restarts.
  bool found_secret = false;
  for (const auto& entry : std::filesystem::directory_iterator(server_->data_dir()))
    if (entry.is_regular_file() && entry.path().filename().string().find("secret") != std::string::npos) {
      found_secret = true;
      struct stat st{};
      ASSERT_EQ(::stat(entry.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 0777, 0600u) << entry.path();
    }
  EXPECT_TRUE(found_secret) << "no *secret* file in the data directory";
  ASSERT_NO_FATAL_FAILURE(restart_server());
  auto again = api().create_direct(bob.token, "alice");
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(jstr(again.obj(), "conversation_id"), id) << "the id changed across a restart";

  // Another deployment: on the Redis backend, another Redis (two nodes of one Redis share the
  // secret through it, so that they agree on every id: docs/scaling.md).
  std::vector<std::string> other_args = config_args(setup_friendly());
  std::unique_ptr<store::redis::testing::RedisServer> other_redis;
  if (on_redis_backend()) {
    other_redis = std::make_unique<store::redis::testing::RedisServer>();
    ASSERT_TRUE(other_redis->start().ok());
    other_args.insert(other_args.end(), {"--store", "redis", "--redis", other_redis->url()});
  }
  TestServer other(other_args);
  ASSERT_TRUE(other.start()) << other.error();
  Api api2(other.port());
  Account a2 = api2.must_register("alice");
  api2.must_register("bob");
  EXPECT_NE(api2.must_direct(a2.token, "bob"), id) << "two servers derive the same id: the key is not secret";
}

// What mallory (on another address, without a token) can do to alice's device linking:
// nothing. 30 wrong guesses leave alice's codes valid, every failed attempt gets the same
// answer whether the target has codes or not, and once throttled even a right code is refused
// with that same answer (and stays valid for alice).
TEST_F(AdversarialPrivacy, LinkCodeGuessingIsThrottledByTheGuesser) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args(setup_friendly())));
  Account alice = api().must_register("alice");
  api().must_register("bob");  // no codes outstanding
  auto c1 = http_request(port(), "POST", "/v1/devices/link-codes", std::string("{}"), alice.token);
  auto c2 = http_request(port(), "POST", "/v1/devices/link-codes", std::string("{}"), alice.token);
  ASSERT_EQ(c1.status, 201) << c1.body;
  ASSERT_EQ(c2.status, 201) << c2.body;
  const std::string code1 = jstr(c1.obj(), "code"), code2 = jstr(c2.obj(), "code");

  std::set<std::string> answers;
  for (int i = 0; i < 30; ++i) {
    const std::string user = i % 2 ? "alice" : "bob";
    const std::string guess = "ZZZZ-" + std::string(1, "ABCDEFGH"[i % 8]) + "ZZ" + std::string(1, "JKLMNPQR"[i / 8]);
    auto r = http_from("127.0.0.2", port(), "POST", "/v1/devices/link",
                       json::serialize(json::object{{"user", user}, {"code", guess}}));
    answers.insert(answer(r));
  }
  auto right = http_from("127.0.0.2", port(), "POST", "/v1/devices/link",
                         json::serialize(json::object{{"user", "alice"}, {"code", code2}}));
  answers.insert(answer(right));
  EXPECT_EQ(answers.size(), 1u) << "failures answered differently (an oracle):\n"
                                << [&] { std::string s; for (auto& a : answers) s += a + "\n"; return s; }();
  EXPECT_NE(right.status, 201) << "a throttled guesser still redeemed a code";

  for (const std::string& code : {code1, code2}) {
    auto ok = http_from("127.0.0.1", port(), "POST", "/v1/devices/link",
                        json::serialize(json::object{{"user", "alice"}, {"code", code}}));
    EXPECT_EQ(ok.status, 201) << "alice's code " << code << " no longer works after mallory's guesses: " << ok.body;
  }
}

// What another local user of the machine can read: nothing. With a permissive umask (000)
// the data directory ends up 0700 and every file in it 0600.
TEST_F(AdversarialPrivacy, DataDirectoryIsPrivateWhateverTheUmask) {
  const mode_t old = ::umask(0);
  start_server(config_args(setup_friendly()));
  ::umask(old);
  ASSERT_FALSE(HasFatalFailure());
  Account alice = api().must_register("alice");
  api().must_register("bob");
  const std::string conv = api().must_direct(alice.token, "bob");
  Device d(alice);
  ASSERT_TRUE(d.connect_synced(port()));
  d.must_send(conv, "m1", "secret words");
  ASSERT_NO_FATAL_FAILURE(restart_server(/*graceful=*/true));  // flushes: SST files exist too

  size_t checked = 0;
  struct stat st{};
  ASSERT_EQ(::stat(server_->data_dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << server_->data_dir();
  for (const auto& e : std::filesystem::recursive_directory_iterator(server_->data_dir())) {
    ASSERT_EQ(::stat(e.path().c_str(), &st), 0);
    const mode_t want = e.is_directory() ? 0700 : 0600;
    EXPECT_EQ(st.st_mode & 0777, want) << e.path() << " is " << std::oct << (st.st_mode & 0777);
    ++checked;
  }
  EXPECT_GT(checked, 3u);
}

}  // namespace
}  // namespace tern::test
