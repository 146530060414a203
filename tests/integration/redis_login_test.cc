// Integration: ternd on a Redis that lets nobody in without a password (requirepass, or an ACL
// user with the default user off): every connection of the store and the bus logs in, the
// password never reaches the log, and a wrong one stops ternd at start with Redis's reason.
// And over TLS (rediss://) to a Redis that speaks nothing else and asks for a client
// certificate: the same, and a certificate that does not hold stops ternd at start.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "integration/redis_nodes.h"
#include "store/redis/redis_tls.h"
#include "store/redis/testing/redis_server.h"
#include "store/redis/testing/test_certs.h"
#include "support/server_test.h"

namespace tern::test {
namespace {

using store::redis::RedisCredentials;
using namespace std::chrono_literals;

// A file holding `secret` (and a newline, as editors leave it), removed with this object.
class SecretFile {
 public:
  explicit SecretFile(const std::string& secret) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tern-redis-pw-XXXXXX").string();
    const int fd = ::mkstemp(tmpl.data());
    if (fd >= 0) ::close(fd);
    path_ = tmpl;
    write(secret);
  }
  void write(const std::string& secret) const { std::ofstream(path_, std::ios::trunc) << secret << "\n"; }
  ~SecretFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A node with these flags; fails the test if it does not start.
void start_on(Node& n, const std::vector<std::string>& args) {
  n.server = std::make_unique<TestServer>(args);
  ASSERT_TRUE(n.server->start()) << n.server->error() << n.server->log_tail();
  n.api = std::make_unique<Api>(n.server->port());
}

std::vector<std::string> node_args(const std::string& url, const std::string& node, std::vector<std::string> more) {
  std::vector<std::string> v = {"--store", "redis", "--redis", url, "--node-id", node};
  v.insert(v.end(), more.begin(), more.end());
  return v;
}

// alice registered on node a, bob on node b, and their direct conversation; connect() puts
// alice's device on a and bob's on b, synced.
struct Across {
  Across(Node& a, Node& b)
      : alice(a.api->must_register("alice")),
        bob(b.api->must_register("bob")),
        conv(a.api->must_direct(alice.token, "bob")),
        da(alice),
        db(bob) {}
  void connect(Node& a, Node& b) {
    ASSERT_EQ(da.connect(a.server->port()), 101);
    ASSERT_TRUE(da.until_synced());
    ASSERT_EQ(db.connect(b.server->port()), 101);
    ASSERT_TRUE(db.until_synced());
  }
  Account alice, bob;
  std::string conv;
  Device da, db;
};

// alice on node a and bob on node b: messages cross both ways live (the store's commits, the
// bus's publishes and its subscription), and typing too.
void expect_live_across(Node& a, Node& b) {
  Across p(a, b);
  ASSERT_NO_FATAL_FAILURE(p.connect(a, b));
  const std::string& conv = p.conv;
  Device& da = p.da;
  Device& db = p.db;
  for (int i = 1; i <= 3; ++i) {
    const Seq s = da.must_send(conv, "m" + std::to_string(i), "across");
    auto m = db.read_until([&](const json::object& o) { return type_of(o) == "message" && seq_of(o) == s; }, ms(5000));
    ASSERT_TRUE(m) << "message " << s << " did not cross nodes live";
    const Seq back = db.must_send(conv, "r" + std::to_string(i), "back");
    ASSERT_TRUE(da.read_until([&](const json::object& o) { return type_of(o) == "message" && seq_of(o) == back; }, ms(5000)))
        << "message " << back << " did not cross back live";
  }
  ASSERT_TRUE(db.typing(conv, true));
  ASSERT_TRUE(da.read_until([](const json::object& o) { return type_of(o) == "typing"; }, ms(5000)))
      << "typing did not cross nodes";
}

// Two nodes, each logged in with the password from its file: a message and typing cross from
// one node to the other live (store, bus publishers and subscribers all logged in), and the
// nodes' logs say a password is used, never which.
TEST(RedisLogin, TwoNodesOnARedisWithAPasswordDeliverAcrossThemLive) {
  const std::string password = "requirepass-Xq7v";
  RedisServer redis({}, RedisCredentials{"", password, nullptr});
  ASSERT_TRUE(redis.start().ok());
  SecretFile file(password);
  Node a, b;
  for (auto [n, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}})
    ASSERT_NO_FATAL_FAILURE(start_on(*n, node_args(redis.url(), name, {"--redis-password-file", file.path()})));
  ASSERT_NO_FATAL_FAILURE(expect_live_across(a, b));
  for (Node* n : {&a, &b}) {
    EXPECT_TRUE(n->server->await_log("auth=password")) << n->server->log_tail();
    EXPECT_EQ(n->server->log_tail(1 << 20).find("redis_without_password"), std::string::npos);
    EXPECT_EQ(n->server->log_tail(1 << 20).find(password), std::string::npos) << "the password is in the log";
  }
}

// An ACL user named in the URL (percent-encoded password): the node logs in as that user.
TEST(RedisLogin, AnAclUserInTheUrlLogsTheNodeIn) {
  const RedisCredentials user{"tern-node", "acl:p@ss", nullptr};
  RedisServer redis({}, user);
  ASSERT_TRUE(redis.start().ok());
  const std::string url = "redis://tern-node:acl%3Ap%40ss@127.0.0.1:" + std::to_string(redis.port());
  Node a;
  ASSERT_NO_FATAL_FAILURE(start_on(a, node_args(url, "a", {})));
  Account alice = a.api->must_register("alice");
  Account bob = a.api->must_register("bob");
  const std::string conv = a.api->must_direct(alice.token, "bob");
  Device da(alice), db(bob);
  for (Device* d : {&da, &db}) {
    ASSERT_EQ(d->connect(a.server->port()), 101);
    ASSERT_TRUE(d->until_synced());
  }
  const Seq s = da.must_send(conv, "m1", "hello");
  ASSERT_TRUE(db.read_until([&](const json::object& o) { return type_of(o) == "message" && seq_of(o) == s; }, ms(5000)));
  EXPECT_TRUE(a.server->await_log("auth=user")) << a.server->log_tail();
  const std::string log = a.server->log_tail(1 << 20);
  EXPECT_EQ(log.find("acl:p@ss"), std::string::npos) << "the password is in the log";
  EXPECT_EQ(log.find("acl%3Ap%40ss"), std::string::npos) << "the URL's password is in the log";
}

// The rotation docs/scaling.md gives: an ACL user holds the old and the new password for a
// while, the node restarts with the new one, then the old one goes. The node serves before,
// after, and keeps what it stored; the old password no longer logs in.
TEST(RedisLogin, APasswordRotatedThroughAnAclUserWithTwoPasswordsKeepsTheNodeServing) {
  const RedisCredentials old_login{"tern", "old-pw-1", nullptr};
  RedisServer redis({}, old_login);
  ASSERT_TRUE(redis.start().ok());
  SecretFile file(old_login.password);
  Node a;
  ASSERT_NO_FATAL_FAILURE(start_on(a, node_args(redis.url(), "a", {"--redis-user", "tern", "--redis-password-file", file.path()})));
  Account alice = a.api->must_register("alice");
  Account bob = a.api->must_register("bob");
  const std::string conv = a.api->must_direct(alice.token, "bob");
  {
    Device da(alice);
    ASSERT_EQ(da.connect(a.server->port()), 101);
    ASSERT_TRUE(da.until_synced());
    EXPECT_EQ(da.must_send(conv, "before", "before"), 1u);
  }
  auto admin = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis.port()}, 1000ms,
                                                      2000ms, old_login);
  ASSERT_TRUE(admin.ok()) << admin.error().message;
  auto added = (*admin)->command({"ACL", "SETUSER", "tern", ">new-pw-2"});
  ASSERT_TRUE(added.ok());
  file.write("new-pw-2");
  ASSERT_EQ(a.server->terminate(), 0);
  ASSERT_TRUE(a.server->restart()) << a.server->error() << a.server->log_tail();
  a.api->set_port(a.server->port());
  auto removed = (*admin)->command({"ACL", "SETUSER", "tern", "<old-pw-1"});
  ASSERT_TRUE(removed.ok());
  Device da(alice), db(bob);
  for (Device* d : {&da, &db}) {
    ASSERT_EQ(d->connect(a.server->port()), 101);
    ASSERT_TRUE(d->until_synced());
  }
  EXPECT_EQ(da.must_send(conv, "after", "after"), 2u);
  auto log = a.api->backfill_all(bob.token, conv);
  EXPECT_TRUE(dense_range(message_seqs(log, conv), 1, 2));
  auto stale = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis.port()}, 1000ms,
                                                      2000ms, old_login);
  ASSERT_FALSE(stale.ok());
  EXPECT_NE(stale.error().message.find("WRONGPASS"), std::string::npos) << stale.error().message;
}

// A wrong password (or none) is a start-up failure that names Redis's reason, not a node that
// runs and fails every request. A Redis that asks for none is used, with a warning.
TEST(RedisLogin, AWrongPasswordOrNoneStopsTerndAtStartWithRedisReason) {
  RedisServer redis({}, RedisCredentials{"", "the-right-one", nullptr});
  ASSERT_TRUE(redis.start().ok());
  SecretFile wrong("not-the-right-one");
  TestServer with_wrong(node_args(redis.url(), "a", {"--redis-password-file", wrong.path()}));
  ASSERT_FALSE(with_wrong.start(std::chrono::seconds(15)));
  EXPECT_NE(with_wrong.log_tail().find("refused the AUTH"), std::string::npos) << with_wrong.log_tail();
  EXPECT_NE(with_wrong.log_tail().find("WRONGPASS"), std::string::npos) << with_wrong.log_tail();
  EXPECT_EQ(with_wrong.log_tail().find("not-the-right-one"), std::string::npos) << "the password is in the log";

  TestServer without(node_args(redis.url(), "b", {}));
  ASSERT_FALSE(without.start(std::chrono::seconds(15)));
  EXPECT_NE(without.log_tail().find("NOAUTH"), std::string::npos) << without.log_tail();

  // A Redis without a password works, with a warning at start.
  RedisServer open_redis;
  ASSERT_TRUE(open_redis.start().ok());
  TestServer on_open(node_args(open_redis.url(), "d", {}));
  ASSERT_TRUE(on_open.start()) << on_open.error() << on_open.log_tail();
  EXPECT_TRUE(on_open.await_log("event=redis_without_password")) << on_open.log_tail();

  SecretFile empty("");
  TestServer with_empty(node_args(redis.url(), "c", {"--redis-password-file", empty.path()}));
  ASSERT_FALSE(with_empty.start(std::chrono::seconds(15)));
  EXPECT_NE(with_empty.log_tail().find("is empty"), std::string::npos) << with_empty.log_tail();
}

// A redis-server that speaks TLS only with `certs`' server certificate and asks for a client
// certificate signed by their CA (and `password`, if any); fails the test if it does not start.
std::unique_ptr<RedisServer> tls_redis(const store::redis::testing::TestCerts& certs, const std::string& password = "") {
  auto client = store::redis::RedisTls::create({certs.ca(), certs.client_cert(), certs.client_key()});
  EXPECT_TRUE(client.ok()) << client.error().message;
  if (!client) return nullptr;
  auto redis = std::make_unique<RedisServer>(std::vector<std::string>{}, RedisCredentials{"", password, *client});
  redis->serve_tls(certs);
  auto started = redis->start();
  EXPECT_TRUE(started.ok()) << started.error().message;
  return started.ok() ? std::move(redis) : nullptr;
}

// TLS: a redis-server that speaks TLS only (its port takes nothing else) and asks for a
// client certificate, with a password on top. Two nodes on rediss:// with the CA, their
// certificate and the password file deliver across each other live; the log says TLS is on.
TEST(RedisTls, TwoNodesOverTlsWithAClientCertificateDeliverAcrossThemLive) {
  auto certs = store::redis::testing::TestCerts::make();
  ASSERT_TRUE(certs.ok()) << certs.error().message;
  const std::string password = "over-tls-Pw9";
  auto redis_server = tls_redis(**certs, password);
  ASSERT_TRUE(redis_server);
  const RedisServer& redis = *redis_server;
  ASSERT_EQ(redis.url().rfind("rediss://", 0), 0u);
  SecretFile file(password);
  const std::vector<std::string> tls = {"--redis-password-file", file.path(), "--redis-tls-ca", (*certs)->ca(),
                                        "--redis-tls-cert", (*certs)->client_cert(), "--redis-tls-key", (*certs)->client_key()};
  Node a, b;
  for (auto [n, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}})
    ASSERT_NO_FATAL_FAILURE(start_on(*n, node_args(redis.url(), name, tls)));
  ASSERT_NO_FATAL_FAILURE(expect_live_across(a, b));
  for (Node* n : {&a, &b}) {
    EXPECT_TRUE(n->server->await_log("tls=on")) << n->server->log_tail();
    EXPECT_EQ(n->server->log_tail(1 << 20).find(password), std::string::npos) << "the password is in the log";
  }
  // The test certificates expire in 2 days: exported, and warned of (less than 14 days left).
  Account carol = a.api->must_register("carol");
  const double expiry = metric(a, carol, "tern_redis_tls_client_cert_expiry_timestamp_seconds");
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_GT(expiry, now + 86400);
  EXPECT_LE(expiry, now + 2 * 86400 + 60);
  EXPECT_TRUE(a.server->await_log("event=redis_tls_cert_expires_soon cert=" + (*certs)->client_cert() + " days_left="))
      << a.server->log_tail();
}

// Rotating the node's certificate without a restart (docs/scaling.md "TLS to Redis"): Redis
// trusts the old and the new CA's clients for a while; the node's files get the new
// certificate and ternd gets SIGHUP; Redis then trusts the new CA only and drops every
// connection. The nodes reconnect with the new certificate and deliver across each other
// live. A bad file on a later SIGHUP is logged by name and the node goes on serving.
TEST(RedisTls, ASighupRotatesTheNodesCertificateForTheConnectionsItMakesNext) {
  auto certs = store::redis::testing::TestCerts::make();
  auto next = store::redis::testing::TestCerts::make();
  ASSERT_TRUE(certs.ok() && next.ok());
  auto old_client = store::redis::RedisTls::create({(*certs)->ca(), (*certs)->client_cert(), (*certs)->client_key()});
  ASSERT_TRUE(old_client.ok());
  auto redis_server = tls_redis(**certs);
  ASSERT_TRUE(redis_server);
  const RedisServer& redis = *redis_server;
  const std::string dir = (*certs)->dir() + "/node";
  ASSERT_TRUE(std::filesystem::create_directory(dir));
  auto put = [](const std::string& to, const std::vector<std::string>& from) {
    ASSERT_TRUE(store::redis::testing::TestCerts::concatenate(to, from)) << to;
  };
  const std::string ca = dir + "/redis-ca.crt", cert = dir + "/node.crt", key = dir + "/node.key";
  put(ca, {(*certs)->ca()});
  put(cert, {(*certs)->client_cert()});
  put(key, {(*certs)->client_key()});
  const std::vector<std::string> tls = {"--redis-tls-ca", ca, "--redis-tls-cert", cert, "--redis-tls-key", key};
  Node a, b;
  for (auto [n, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}})
    ASSERT_NO_FATAL_FAILURE(start_on(*n, node_args(redis.url(), name, tls)));
  Across p(a, b);
  ASSERT_NO_FATAL_FAILURE(p.connect(a, b));
  auto crosses = [&](const std::string& id) {
    const Seq s = send_retrying(p.da, p.conv, id);
    ASSERT_NE(s, 0u) << id << " never got sent";
    ASSERT_TRUE(p.db.read_until([&](const json::object& o) { return type_of(o) == "message" && seq_of(o) == s; }, ms(5000)))
        << id << " did not cross nodes live";
  };
  ASSERT_NO_FATAL_FAILURE(crosses("before"));

  auto admin = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis.port()}, 1000ms,
                                                      2000ms, RedisCredentials{"", "", *old_client});
  ASSERT_TRUE(admin.ok()) << admin.error().message;
  const std::string trusted = dir + "/trusted-clients.crt";
  put(trusted, {(*certs)->ca(), (*next)->ca()});
  ASSERT_TRUE((*admin)->command({"CONFIG", "SET", "tls-ca-cert-file", trusted}).ok());
  put(cert, {(*next)->client_cert()});
  put(key, {(*next)->client_key()});
  for (Node* n : {&a, &b}) {
    ASSERT_EQ(::kill(n->server->pid(), SIGHUP), 0);
    ASSERT_TRUE(n->server->await_log("event=redis_tls_reloaded")) << n->server->log_tail();
  }
  put(trusted, {(*next)->ca()});  // the old certificate no longer logs in
  ASSERT_TRUE((*admin)->command({"CONFIG", "SET", "tls-ca-cert-file", trusted}).ok());
  const size_t subscribed_a = a.server->log_count("event=bus_subscribed");
  const size_t subscribed_b = b.server->log_count("event=bus_subscribed");
  ASSERT_TRUE((*admin)->command({"CLIENT", "KILL", "TYPE", "pubsub"}).ok());
  ASSERT_TRUE((*admin)->command({"CLIENT", "KILL", "TYPE", "normal"}).ok());  // SKIPME yes: not the admin's
  EXPECT_TRUE(a.server->await_log("event=bus_subscribed", 15s, subscribed_a + 1)) << a.server->log_tail();
  ASSERT_TRUE(b.server->await_log("event=bus_subscribed", 15s, subscribed_b + 1))
      << "node b's subscriber did not reconnect with the new certificate\n" << b.server->log_tail();
  ASSERT_NO_FATAL_FAILURE(crosses("after"));

  put(key, {(*certs)->client_key()});  // not the key of the certificate
  ASSERT_EQ(::kill(a.server->pid(), SIGHUP), 0);
  ASSERT_TRUE(a.server->await_log("event=redis_tls_reload_failed")) << a.server->log_tail();
  EXPECT_NE(a.server->log_tail(1 << 20).find("error=\"redis TLS: client key " + key), std::string::npos)
      << a.server->log_tail();
  ASSERT_NO_FATAL_FAILURE(crosses("after a bad file"));
}

// A TLS set-up that does not hold stops ternd at start, saying why: Redis's certificate
// signed by another CA than --redis-tls-ca; no client certificate (Redis asks for one); TLS
// files with a redis:// address (the password would go in clear).
TEST(RedisTls, ATlsSetUpThatDoesNotHoldStopsTerndAtStart) {
  auto certs = store::redis::testing::TestCerts::make();
  auto other = store::redis::testing::TestCerts::make();
  ASSERT_TRUE(certs.ok() && other.ok());
  auto redis_server = tls_redis(**certs);
  ASSERT_TRUE(redis_server);
  const RedisServer& redis = *redis_server;

  TestServer untrusted(node_args(redis.url(), "a", {"--redis-tls-ca", (*other)->ca(), "--redis-tls-cert",
                                                    (*certs)->client_cert(), "--redis-tls-key", (*certs)->client_key()}));
  ASSERT_FALSE(untrusted.start(std::chrono::seconds(15)));
  EXPECT_NE(untrusted.log_tail().find("certificate verify failed"), std::string::npos) << untrusted.log_tail();

  TestServer anonymous(node_args(redis.url(), "b", {"--redis-tls-ca", (*certs)->ca()}));
  ASSERT_FALSE(anonymous.start(std::chrono::seconds(15)));
  // Redis's alert ("certificate required") comes after the handshake: the node's first read
  // meets it, or its first write meets the closed connection first.
  EXPECT_NE(anonymous.log_tail().find("event=start_failed error=\"redis: "), std::string::npos) << anonymous.log_tail();

  const std::string plain_url = "redis://127.0.0.1:" + std::to_string(redis.port());
  TestServer plain(node_args(plain_url, "c", {"--redis-tls-ca", (*certs)->ca()}));
  ASSERT_FALSE(plain.start(std::chrono::seconds(15)));
  EXPECT_NE(plain.log_tail().find("need a rediss:// address"), std::string::npos) << plain.log_tail();
}

}  // namespace
}  // namespace tern::test
