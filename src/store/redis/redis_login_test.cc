// Logging in to a Redis that requires it (requirepass, or an ACL user with the default user
// off), on real redis-servers: the credentials a URL carries, a connection made on a thread
// and in a fiber, AsyncRedis, and the store on one server and on a Redis Cluster, where the
// nodes it learns of later need the same log-in (and, over TLS, the same TLS).
#include <hiredis/hiredis.h>

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/fiber.h"
#include "base/metrics.h"
#include "store/redis/async_redis.h"
#include "store/redis/redis_cluster.h"
#include "store/redis/redis_connection.h"
#include "store/redis/redis_store.h"
#include "store/redis/testing/redis_cluster_server.h"
#include "store/redis/testing/redis_server.h"
#include "store/redis/testing/run_until.h"
#include "store/redis/testing/test_certs.h"

namespace tern::store::redis {
namespace {

using namespace std::chrono_literals;
using testing::run_until;

const RedisCredentials kPassword{"", "pw-of-requirepass", nullptr};
const RedisCredentials kAclUser{"tern", "s3cr@t:pw", nullptr};

std::string text_of(const Reply& r) { return r ? std::string(r->str, r->len) : "?"; }

TEST(RedisLogin, AUrlCarriesAUserAndAPasswordPercentDecoded) {
  RedisCredentials c;
  auto a = parse_redis_url("redis://tern:s3cr%40t%3Apw@10.0.0.5:7000", &c);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->host, "10.0.0.5");
  EXPECT_EQ(a->port, 7000);
  EXPECT_EQ(c, kAclUser);
  // requirepass: no user; a raw '@' in the password is fine (the host starts after the last).
  RedisCredentials p;
  auto b = parse_redis_url("redis://:p@ss@127.0.0.1:6380/", &p);
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(b->host, "127.0.0.1");
  EXPECT_EQ(p, (RedisCredentials{"", "p@ss", nullptr}));
  // Without credentials the address is as before and nothing is filled in.
  RedisCredentials none;
  ASSERT_TRUE(parse_redis_url("redis://127.0.0.1:6379", &none).ok());
  EXPECT_TRUE(none.empty());
  // A user without a password, a bad escape, and credentials where none are taken.
  for (const char* bad : {"redis://tern@h:1", "redis://tern:@h:1", "redis://tern:pw%4@h:1", "redis://tern:pw%zz@h:1"}) {
    RedisCredentials ignored;
    auto r = parse_redis_url(bad, &ignored);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().message.find("pw"), std::string::npos) << "the error repeats the URL: " << r.error().message;
  }
  auto db = parse_redis_url("redis://127.0.0.1:6379/2");
  ASSERT_FALSE(db.ok());
  EXPECT_NE(db.error().message.find("database number"), std::string::npos) << db.error().message;
  auto refused = parse_redis_url("redis://tern:secret-pw@h:1");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message.find("secret-pw"), std::string::npos);
}

TEST(RedisLogin, SeedsGiveTheirCredentialsOnceOrAlike) {
  RedisCredentials c;
  auto one = parse_redis_urls("redis://:pw@h1:1,h2:2, redis://h3:3", &c);
  ASSERT_TRUE(one.ok()) << one.error().message;
  EXPECT_EQ(one->size(), 3u);
  EXPECT_EQ(c, (RedisCredentials{"", "pw", nullptr}));
  RedisCredentials same;
  EXPECT_TRUE(parse_redis_urls("redis://u:pw@h1:1,redis://u:pw@h2:2", &same).ok());
  RedisCredentials differ;
  auto r = parse_redis_urls("redis://u:pw@h1:1,redis://u:other@h2:2", &differ);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("different"), std::string::npos) << r.error().message;
}

TEST(RedisLogin, AConnectionOnAThreadLogsInAndAWrongPasswordIsRefusedWithRedisReason) {
  testing::RedisServer server({}, kAclUser);
  ASSERT_TRUE(server.start().ok());
  const RedisAddress at{"127.0.0.1", server.port()};
  auto in = RedisConnection::connect(at, 1000ms, 2000ms, kAclUser);
  ASSERT_TRUE(in.ok()) << in.error().message;
  auto pong = (*in)->command({"PING"});
  ASSERT_TRUE(pong.ok());
  EXPECT_EQ(text_of(*pong), "PONG");
  auto who = (*in)->command({"ACL", "WHOAMI"});
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(text_of(*who), "tern");

  auto wrong = RedisConnection::connect(at, 1000ms, 2000ms, RedisCredentials{"tern", "not-the-password", nullptr});
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(wrong.error().message.find("refused the AUTH"), std::string::npos) << wrong.error().message;
  EXPECT_NE(wrong.error().message.find("WRONGPASS"), std::string::npos) << wrong.error().message;
  EXPECT_EQ(wrong.error().message.find("not-the-password"), std::string::npos) << wrong.error().message;

  // No log-in: the connection is made, and Redis refuses its commands.
  auto anonymous = RedisConnection::connect(at, 1000ms, 2000ms);
  ASSERT_TRUE(anonymous.ok());
  auto refused = (*anonymous)->command({"PING"});
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ((*refused)->type, REDIS_REPLY_ERROR);
  EXPECT_NE(text_of(*refused).find("NOAUTH"), std::string::npos) << text_of(*refused);
}

// A loop's shared connection is made in a fiber (non-blocking); it logs in before the
// fibers that waited for it use it.
TEST(RedisLogin, AConnectionMadeInAFiberLogsInBeforeTheLoopsFibersShareIt) {
  testing::RedisServer server({}, kPassword);
  ASSERT_TRUE(server.start().ok());
  boost::asio::io_context io;
  LoopConnections pool;
  testing::LoopFibers fibers(io);
  std::vector<std::string> answers;
  std::vector<std::string> errors;
  for (int i = 0; i < 3; ++i) {
    fibers.spawn([&, i] {
      auto c = pool.get(RedisAddress{"127.0.0.1", server.port()}, 1000ms, 2000ms, kPassword);
      if (!c) return errors.push_back(c.error().message);
      auto r = (*c)->command({"ECHO", "fiber" + std::to_string(i)});
      if (!r) return errors.push_back(r.error().message);
      answers.push_back(text_of(*r));
    });
  }
  ASSERT_TRUE(fibers.run());
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(std::set<std::string>(answers.begin(), answers.end()),
            (std::set<std::string>{"fiber0", "fiber1", "fiber2"}));
  EXPECT_EQ(pool.size(), 1u);

  // A wrong password fails the fiber's get() with Redis's reason.
  LoopConnections other;
  std::optional<std::string> failure;
  Fiber wrong(io, [&] {
    auto c = other.get(RedisAddress{"127.0.0.1", server.port()}, 1000ms, 2000ms, RedisCredentials{"", "nope", nullptr});
    failure = c ? std::string("connected") : c.error().message;
  });
  boost::asio::post(io, [&] { wrong.resume(); });
  ASSERT_TRUE(run_until(io, [&] { return wrong.done(); }));
  ASSERT_TRUE(failure.has_value());
  EXPECT_NE(failure->find("refused the AUTH"), std::string::npos) << *failure;
}

TEST(RedisLogin, AsyncRedisLogsInFirstAndARefusalFailsTheCommandsThatWaited) {
  testing::RedisServer server({}, kAclUser);
  ASSERT_TRUE(server.start().ok());
  boost::asio::io_context io;
  auto make = [&](RedisCredentials login) {
    AsyncRedisOptions o;
    o.address = RedisAddress{"127.0.0.1", server.port()};
    o.credentials = std::move(login);
    return AsyncRedis::create(io, o);
  };
  // Several commands issued before the connect: all answered, after the log-in.
  auto& counters = redis_connection_counters();
  const uint64_t connects_before = counters.connects.value(), failures_before = counters.connect_failures.value(),
                 broken_before = counters.broken.value();
  auto good = make(kAclUser);
  std::vector<std::string> got;
  for (const char* word : {"a", "b", "c"})
    good->command({"ECHO", word}, [&](Result<Reply> r) { got.push_back(r ? text_of(*r) : r.error().message); });
  good->command({"ACL", "WHOAMI"}, [&](Result<Reply> r) { got.push_back(r ? text_of(*r) : r.error().message); });
  ASSERT_TRUE(run_until(io, [&] { return got.size() == 4; }));
  EXPECT_EQ(got, (std::vector<std::string>{"a", "b", "c", "tern"}));
  EXPECT_TRUE(good->connected());
  EXPECT_EQ(counters.connects.value(), connects_before + 1);

  auto bad = make(RedisCredentials{"tern", "wrong", nullptr});
  std::vector<Result<Reply>> failed;
  for (int i = 0; i < 2; ++i) bad->command({"PING"}, [&](Result<Reply> r) { failed.push_back(std::move(r)); });
  ASSERT_TRUE(run_until(io, [&] { return failed.size() == 2; }));
  for (auto& r : failed) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
    EXPECT_NE(r.error().message.find("refused the AUTH"), std::string::npos) << r.error().message;
  }
  EXPECT_FALSE(bad->connected());
  // GET /metrics: the refused log-in is a failed connect, not a connection made and broken.
  EXPECT_EQ(counters.connects.value(), connects_before + 1);
  EXPECT_EQ(counters.connect_failures.value(), failures_before + 1);
  EXPECT_EQ(counters.broken.value(), broken_before);
}

// The store's commits and reads on one server that lets only the ACL user in.
TEST(RedisLogin, AStoreLogsInAsAnAclUserAndCommitsAndReads) {
  testing::RedisServer server({}, kAclUser);
  ASSERT_TRUE(server.start().ok());
  RedisStoreOptions o;
  o.address = RedisAddress{"127.0.0.1", server.port()};
  o.credentials = kAclUser;
  auto store = RedisStore::open(o);
  ASSERT_TRUE(store.ok()) << store.error().message;
  Batch b;
  b.add(PutUser{"alice", 1});
  b.add(PutDevice{{"alice", 1}, "h1"});
  ASSERT_TRUE((*store)->commit(b, true).ok());
  auto devices = (*store)->devices("alice");
  ASSERT_TRUE(devices.ok()) << devices.error().message;
  EXPECT_EQ(*devices, (std::vector<uint32_t>{1}));

  RedisStoreOptions wrong = o;
  wrong.credentials.password = "wrong";
  auto refused = RedisStore::open(wrong);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("refused the AUTH"), std::string::npos) << refused.error().message;
}

// A store given one seed of `cluster` with `login`: users spread over every master's slots
// are committed and read, and a command reaches all six nodes (an AOF rewrite after a purge
// goes to every node).
void expect_store_reaches_every_node(const testing::RedisClusterServer& cluster, const RedisCredentials& login) {
  RedisStoreOptions o;
  o.address = RedisAddress{"127.0.0.1", cluster.ports().front()};  // one seed
  o.credentials = login;
  auto store = RedisStore::open(o);
  ASSERT_TRUE(store.ok()) << store.error().message;
  std::set<uint16_t> masters;
  std::vector<std::string> users;
  for (int i = 0; i < 60; ++i) {
    users.push_back("user" + std::to_string(i));
    auto m = cluster.master_of(key_slot("{u:" + users.back() + "}"));
    ASSERT_TRUE(m.ok());
    masters.insert(*m);
  }
  EXPECT_EQ(masters.size(), 3u);  // the users' keys are on every master
  Batch b;
  for (const auto& u : users) b.add(PutDevice{{u, 1}, "h-" + u});
  auto committed = (*store)->commit(b, true);
  ASSERT_TRUE(committed.ok()) << committed.error().message;
  auto devices = (*store)->devices_of(users);
  ASSERT_TRUE(devices.ok()) << devices.error().message;
  ASSERT_EQ(devices->size(), users.size());
  for (const auto& d : *devices) EXPECT_EQ(d, (std::vector<uint32_t>{1}));
  RedisClusterOptions co;
  co.seeds = {o.address};
  co.credentials = o.credentials;
  auto client = RedisCluster::open(co);
  ASSERT_TRUE(client.ok()) << client.error().message;
  auto every = (*client)->on_every_node({"PING"});
  ASSERT_TRUE(every.ok()) << every.error().message;
  EXPECT_EQ(every->masters, 3u);
  EXPECT_EQ(every->replicas, 3u);
  EXPECT_TRUE(every->unreachable.empty()) << every->unreachable.front();
}

// On a Cluster the client learns the masters from CLUSTER SLOTS, beyond the one seed it is
// given: each of them needs the log-in too, and so do the replicas.
TEST(RedisLogin, AStoreOnAClusterThatRequiresAPasswordReachesEveryMaster) {
  testing::RedisClusterServer cluster("cluster-pw");
  auto started = cluster.start();
  ASSERT_TRUE(started.ok()) << started.error().message;
  expect_store_reaches_every_node(cluster, RedisCredentials{"", "cluster-pw", nullptr});
}

// The same on a Cluster that speaks TLS only (client ports, bus, replication): the nodes that
// CLUSTER SLOTS names are reached over TLS too, at the ports it gives (the TLS ones).
TEST(RedisLogin, AStoreOnAClusterOverTlsReachesEveryNode) {
  auto certs = testing::TestCerts::make();
  ASSERT_TRUE(certs.ok()) << certs.error().message;
  auto tls = RedisTls::create({(*certs)->ca(), (*certs)->client_cert(), (*certs)->client_key()});
  ASSERT_TRUE(tls.ok()) << tls.error().message;
  testing::RedisClusterServer cluster("cluster-pw");
  cluster.serve_tls(**certs, *tls);
  auto started = cluster.start();
  ASSERT_TRUE(started.ok()) << started.error().message;
  ASSERT_EQ(cluster.seeds().rfind("rediss://", 0), 0u);
  expect_store_reaches_every_node(cluster, RedisCredentials{"", "cluster-pw", *tls});
}

}  // namespace
}  // namespace tern::store::redis
