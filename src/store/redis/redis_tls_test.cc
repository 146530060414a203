// TLS to Redis (rediss://) on real redis-servers that speak TLS only and ask for a client
// certificate (certificates made by the openssl command, testing/test_certs.h): a connection
// on a thread and in fibers sharing it, AsyncRedis (commands and pub/sub), with a password on
// top (the store over TLS: redis_login_test's Cluster case, and ternd's integration tests);
// and what is refused, with the reason: a server certificate from another
// CA, one for another name, no client certificate, plain TCP to a TLS port.
#include <hiredis/hiredis.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <ctime>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/fiber.h"
#include "store/redis/async_redis.h"
#include "store/redis/redis_cluster.h"
#include "store/redis/redis_connection.h"
#include "store/redis/redis_tls.h"
#include "store/redis/testing/redis_server.h"
#include "store/redis/testing/run_until.h"
#include "store/redis/testing/test_certs.h"

namespace tern::store::redis {
namespace {

using namespace std::chrono_literals;
using testing::run_until;
using testing::TestCerts;

std::string text_of(const Reply& r) { return r ? std::string(r->str, r->len) : "?"; }

// The client side of `certs`: its CA, and its client certificate unless `anonymous`.
std::shared_ptr<const RedisTls> client_tls(const TestCerts& certs, bool anonymous = false) {
  RedisTlsFiles files{certs.ca(), anonymous ? "" : certs.client_cert(), anonymous ? "" : certs.client_key()};
  auto tls = RedisTls::create(files);
  EXPECT_TRUE(tls.ok()) << tls.error().message;
  return tls.ok() ? *tls : nullptr;
}

class RedisTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = TestCerts::make();
    ASSERT_TRUE(c.ok()) << c.error().message;
    certs_ = std::move(c).value();
    login_.password = "pw-over-tls";
    login_.tls = client_tls(*certs_);
    ASSERT_TRUE(login_.tls);
    server_ = std::make_unique<testing::RedisServer>(std::vector<std::string>{}, login_);
    server_->serve_tls(*certs_);
    ASSERT_TRUE(server_->start().ok()) << "redis-server with --tls-port (Debian's is built with TLS)";
  }
  RedisAddress address() const { return RedisAddress{"127.0.0.1", server_->port()}; }

  std::unique_ptr<TestCerts> certs_;
  RedisCredentials login_;
  std::unique_ptr<testing::RedisServer> server_;
};

TEST(RedisTlsUrl, RedissAsksForTlsOnEverySeedOrNone) {
  bool tls = false;
  RedisCredentials c;
  auto one = parse_redis_url("rediss://u:p@127.0.0.1:6380", &c, &tls);
  ASSERT_TRUE(one.ok()) << one.error().message;
  EXPECT_TRUE(tls);
  EXPECT_EQ(one->port, 6380);
  EXPECT_EQ(c.password, "p");
  auto plain = parse_redis_url("redis://127.0.0.1:6379", nullptr, &tls);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(tls);
  EXPECT_FALSE(parse_redis_url("rediss://127.0.0.1:6380").ok()) << "TLS asked for where nobody takes it";
  auto seeds = parse_redis_urls("rediss://127.0.0.1:7000,rediss://127.0.0.1:7001", nullptr, &tls);
  ASSERT_TRUE(seeds.ok());
  EXPECT_TRUE(tls);
  auto mixed = parse_redis_urls("rediss://127.0.0.1:7000,redis://127.0.0.1:7001", nullptr, &tls);
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.error().message.find("mix"), std::string::npos) << mixed.error().message;
}

TEST(RedisTlsFilesTest, MissingOrMismatchedFilesAreRefusedByName) {
  auto certs = TestCerts::make();
  ASSERT_TRUE(certs.ok());
  auto no_ca = RedisTls::create({"/nonexistent/ca.crt", "", ""});
  ASSERT_FALSE(no_ca.ok());
  EXPECT_NE(no_ca.error().message.find("/nonexistent/ca.crt"), std::string::npos) << no_ca.error().message;
  auto half = RedisTls::create({(*certs)->ca(), (*certs)->client_cert(), ""});
  ASSERT_FALSE(half.ok());
  auto other = TestCerts::make();
  ASSERT_TRUE(other.ok());
  auto mismatched = RedisTls::create({(*certs)->ca(), (*certs)->client_cert(), (*other)->client_key()});
  ASSERT_FALSE(mismatched.ok());
  EXPECT_NE(mismatched.error().message.find("mismatch"), std::string::npos) << mismatched.error().message;
  EXPECT_NE(mismatched.error().message.find("client key"), std::string::npos) << mismatched.error().message;
}

// When the client certificate expires (ternd exports it and warns ahead): the test CA's
// certificates are valid for 2 days from now; none without a client certificate.
TEST(RedisTlsFilesTest, TheClientCertificatesExpiryIsKnown) {
  auto certs = TestCerts::make();
  ASSERT_TRUE(certs.ok());
  auto tls = RedisTls::create({(*certs)->ca(), (*certs)->client_cert(), (*certs)->client_key()});
  ASSERT_TRUE(tls.ok()) << tls.error().message;
  const auto not_after = (*tls)->client_cert_not_after();
  ASSERT_TRUE(not_after.has_value());
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  EXPECT_GT(*not_after, now + 86400);
  EXPECT_LE(*not_after, now + 2 * 86400 + 60);
  auto anonymous = RedisTls::create({(*certs)->ca(), "", ""});
  ASSERT_TRUE(anonymous.ok());
  EXPECT_FALSE((*anonymous)->client_cert_not_after().has_value());
}

TEST_F(RedisTlsTest, AConnectionOnAThreadSpeaksTlsAndLogsIn) {
  auto c = RedisConnection::connect(address(), 1000ms, 2000ms, login_);
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_TRUE((*c)->command({"SET", "k", std::string(100000, 'v')}).ok());  // many records each way
  auto got = (*c)->command({"GET", "k"});
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(text_of(*got), std::string(100000, 'v'));
  // The log-in went over TLS too (the port takes nothing else: the last test).
  auto who = (*c)->command({"ACL", "WHOAMI"});
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(text_of(*who), "default");
}

TEST_F(RedisTlsTest, FibersShareATlsConnectionMadeInOne) {
  boost::asio::io_context io;
  LoopConnections pool;
  testing::LoopFibers fibers(io);
  std::vector<std::string> answers, errors;
  for (int i = 0; i < 3; ++i) {
    fibers.spawn([&, i] {
      auto c = pool.get(address(), 1000ms, 2000ms, login_);
      if (!c) return errors.push_back(c.error().message);
      // A large reply spans many TLS records: read in pieces by the fiber that drives.
      auto set = (*c)->command({"SET", "big" + std::to_string(i), std::string(50000 + i, 'x')});
      if (!set) return errors.push_back(set.error().message);
      auto r = (*c)->command({"GET", "big" + std::to_string(i)});
      if (!r) return errors.push_back(r.error().message);
      answers.push_back(std::to_string(text_of(*r).size()));
    });
  }
  ASSERT_TRUE(fibers.run());
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(std::set<std::string>(answers.begin(), answers.end()), (std::set<std::string>{"50000", "50001", "50002"}));
  EXPECT_EQ(pool.size(), 1u);
}

TEST_F(RedisTlsTest, AsyncRedisSpeaksTlsForCommandsAndPubSub) {
  boost::asio::io_context io;
  AsyncRedisOptions o;
  o.address = address();
  o.credentials = login_;
  auto sub = AsyncRedis::create(io, o);
  auto pub = AsyncRedis::create(io, o);
  std::vector<std::string> pushed;
  sub->set_push_handler([&](Reply r) {
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) pushed.emplace_back(r->element[2]->str, r->element[2]->len);
  });
  bool subscribed = false;
  sub->command({"SUBSCRIBE", "ch"}, [&](Result<Reply> r) { subscribed = r.ok(); });
  ASSERT_TRUE(run_until(io, [&] { return subscribed; }));
  std::vector<std::string> got;
  for (const char* word : {"a", "b"})
    pub->command({"ECHO", word}, [&](Result<Reply> r) { got.push_back(r ? text_of(*r) : r.error().message); });
  pub->command({"PUBLISH", "ch", std::string(40000, 'p')}, [&](Result<Reply> r) { got.push_back(r ? "published" : r.error().message); });
  ASSERT_TRUE(run_until(io, [&] { return got.size() == 3 && pushed.size() == 1; }));
  EXPECT_EQ(got, (std::vector<std::string>{"a", "b", "published"}));
  EXPECT_EQ(pushed.front(), std::string(40000, 'p'));
}

// Rotation (ternd reloads on SIGHUP): reload() reads the same paths again; connections made
// after it use what they hold now, a live one keeps its own. Redis trusts both CAs' clients
// for the rotation (one CA file holding both, as docs/scaling.md says).
TEST_F(RedisTlsTest, AReloadTakesTheFilesAsTheyAreNowForTheConnectionsMadeAfterIt) {
  auto next = TestCerts::make();  // the new CA and its client certificate
  ASSERT_TRUE(next.ok()) << next.error().message;
  const std::string dir = certs_->dir() + "/node";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  const RedisTlsFiles files{dir + "/ca.crt", dir + "/node.crt", dir + "/node.key"};
  auto put = [](const std::string& to, const std::vector<std::string>& from) {
    ASSERT_TRUE(TestCerts::concatenate(to, from)) << to;
  };
  put(files.ca_file, {certs_->ca()});
  put(files.cert_file, {certs_->client_cert()});
  put(files.key_file, {certs_->client_key()});
  auto tls = RedisTls::create(files);
  ASSERT_TRUE(tls.ok()) << tls.error().message;
  RedisCredentials login = login_;
  login.tls = *tls;
  auto live = RedisConnection::connect(address(), 1000ms, 2000ms, login);
  ASSERT_TRUE(live.ok()) << live.error().message;
  const std::string both = certs_->dir() + "/both-cas.crt";
  put(both, {certs_->ca(), (*next)->ca()});
  ASSERT_TRUE((*live)->command({"CONFIG", "SET", "tls-ca-cert-file", both}).ok());

  // The new client certificate: taken by new connections only after the reload.
  put(files.cert_file, {(*next)->client_cert()});
  put(files.key_file, {(*next)->client_key()});
  ASSERT_TRUE((*tls)->reload().ok());
  auto renewed = RedisConnection::connect(address(), 1000ms, 2000ms, login);
  ASSERT_TRUE(renewed.ok()) << renewed.error().message;
  // Redis no longer trusts the old CA's clients: the new connection showed the new certificate.
  put(both, {(*next)->ca()});
  ASSERT_TRUE((*renewed)->command({"CONFIG", "SET", "tls-ca-cert-file", both}).ok());
  auto again = RedisConnection::connect(address(), 1000ms, 2000ms, login);
  ASSERT_TRUE(again.ok()) << "the reloaded certificate is the new CA's: " << again.error().message;

  // A CA file that does not sign Redis's certificate: refused after the reload, and the
  // connection made before it goes on.
  put(files.ca_file, {(*next)->ca()});
  ASSERT_TRUE((*tls)->reload().ok());
  auto refused = RedisConnection::connect(address(), 1000ms, 2000ms, login);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("certificate verify failed"), std::string::npos) << refused.error().message;
  auto ping = (*live)->command({"PING"});
  EXPECT_TRUE(ping.ok()) << "a live connection keeps its context";

  // A bad file: the reload fails by name and the context in use stays (still the new CA's).
  put(files.ca_file, {certs_->ca()});
  put(files.key_file, {certs_->client_key()});  // not the key of node.crt
  auto bad = (*tls)->reload();
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find(files.key_file), std::string::npos) << bad.error().message;
  auto kept = RedisConnection::connect(address(), 1000ms, 2000ms, login);
  ASSERT_FALSE(kept.ok()) << "the failed reload replaced the context";
  EXPECT_NE(kept.error().message.find("certificate verify failed"), std::string::npos) << kept.error().message;
}

// What is refused, each with its reason, on a thread and in AsyncRedis.
TEST_F(RedisTlsTest, AnUntrustedOrMisnamedServerNoClientCertificateOrPlainTcpAreRefused) {
  auto expect_refused = [&](const RedisCredentials& login, const std::string& why) {
    auto c = RedisConnection::connect(address(), 1000ms, 2000ms, login);
    ASSERT_FALSE(c.ok()) << why;
    EXPECT_EQ(c.error().code, ErrorCode::kUnavailable);
    EXPECT_NE(c.error().message.find(why), std::string::npos) << c.error().message;
    EXPECT_EQ(c.error().message.find(login_.password), std::string::npos) << "the password is in an error";
  };
  auto other = TestCerts::make();
  ASSERT_TRUE(other.ok());
  RedisCredentials untrusted = login_;
  untrusted.tls = client_tls(**other);  // another CA: Redis's certificate is not signed by it
  expect_refused(untrusted, "certificate verify failed");

  // The certificate names 127.0.0.1; the node asked for "localhost" (the same server).
  {
    auto c = RedisConnection::connect(RedisAddress{"localhost", server_->port()}, 1000ms, 2000ms, login_);
    ASSERT_FALSE(c.ok()) << "a certificate for another name";
    EXPECT_NE(c.error().message.find("mismatch"), std::string::npos) << c.error().message;
  }

  RedisCredentials anonymous = login_;
  anonymous.tls = client_tls(*certs_, /*anonymous=*/true);
  {
    auto c = RedisConnection::connect(address(), 1000ms, 2000ms, anonymous);
    ASSERT_FALSE(c.ok()) << "Redis asks for a client certificate";
    EXPECT_EQ(c.error().code, ErrorCode::kUnavailable);
  }

  RedisCredentials plain = login_;
  plain.tls = nullptr;
  {
    auto c = RedisConnection::connect(address(), 1000ms, 2000ms, plain);
    ASSERT_FALSE(c.ok()) << "plain TCP to a TLS port";
  }

  boost::asio::io_context io;
  AsyncRedisOptions o;
  o.address = address();
  o.credentials = untrusted;
  auto async = AsyncRedis::create(io, o);
  std::optional<Result<Reply>> answer;
  async->command({"PING"}, [&](Result<Reply> r) { answer = std::move(r); });
  ASSERT_TRUE(run_until(io, [&] { return answer.has_value(); }));
  ASSERT_FALSE(answer->ok());
  EXPECT_NE(answer->error().message.find("TLS handshake"), std::string::npos) << answer->error().message;
}

}  // namespace
}  // namespace tern::store::redis
