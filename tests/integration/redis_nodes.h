// Test support for the Redis integration suites (integration_test_redis): ternd nodes on
// one real redis-server started by the test, the RedisTest fixture (nodes a, b and c) and its
// helpers. One test thread drives a fixture.
#pragma once
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>

#include "bus/redis/node_ring.h"
#include "store/redis/redis_connection.h"
#include "store/redis/testing/redis_server.h"
#include "support/server_test.h"

namespace tern::test {

using store::redis::testing::RedisServer;

// How long Redis stays down in RedisDown.* (the "classic question" is 30 s).
inline constexpr std::chrono::seconds kRedisDown{30};

inline std::vector<std::string> redis_args(const RedisServer& redis, std::string node) {
  return {"--store", "redis", "--redis", redis.url(), "--node-id", std::move(node), "--send-rate", "100000",
          "--send-burst", "100000"};
}

struct Node {
  std::unique_ptr<TestServer> server;
  std::unique_ptr<Api> api;
};

// A ternd node on the Redis; fails the test if it does not start. `env`: TestServer::set_env.
inline void start_node(Node& n, const RedisServer& redis, const std::string& name, std::vector<std::string> extra = {},
                       std::vector<std::string> env = {}) {
  auto args = redis_args(redis, name);
  args.insert(args.end(), extra.begin(), extra.end());
  n.server = std::make_unique<TestServer>(args);
  n.server->set_env(std::move(env));
  ASSERT_TRUE(n.server->start()) << n.server->error() << n.server->log_tail();
  n.api = std::make_unique<Api>(n.server->port());
}

// Sends until `sent`, resending the same client_msg_id after an `unavailable` error (at
// most `tries` times). Returns the seq, 0 if it never got `sent`.
inline std::atomic<int> g_resends{0};
inline Seq send_retrying(Device& d, const std::string& conv, const std::string& id, int tries = 50) {
  for (int i = 0; i < tries; ++i) {
    auto a = d.send_wait(conv, id, id);
    if (!a) return 0;
    if (type_of(*a) == "sent") return seq_of(*a);
    ++g_resends;
    std::cerr << "[redis] resend after: " << dump(*a) << "\n";
    if (jstr(*a, "code") != "unavailable") {
      ADD_FAILURE() << "unexpected answer " << dump(*a);
      return 0;
    }
  }
  return 0;
}

// The value of an unlabelled metric of node n, read with `who`'s token (-1 if absent).
inline double metric(Node& n, const Account& who, std::string_view name) {
  auto r = http_request(n.server->port(), "GET", "/metrics", std::nullopt, who.token);
  EXPECT_EQ(r.status, 200);
  const std::string needle = "\n" + std::string(name) + " ";
  const auto at = r.body.find(needle);
  EXPECT_NE(at, std::string::npos) << name;
  return at == std::string::npos ? -1.0 : std::stod(r.body.substr(at + needle.size()));
}

// Whether `user`'s device `device` has an entry in the connection registry ({r:<user>}) within
// `timeout`. The counter thread writes it after the device is synced, so a test that kills a
// node to leave entries behind awaits them first (else it may kill the node before they exist).
inline bool registry_entry_written(const RedisServer& redis, const std::string& user, int device,
                                   std::chrono::milliseconds timeout) {
  auto c = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis.port()}, ms(1000), ms(2000));
  if (!c.ok()) return false;
  const std::string key = "{r:" + user + "}", field = std::to_string(device);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    auto r = (*c)->command({"HEXISTS", key, field});
    if (!r.ok()) return false;
    if ((*r)->type == REDIS_REPLY_INTEGER && (*r)->integer == 1) return true;
    std::this_thread::sleep_for(ms(5));
  } while (std::chrono::steady_clock::now() < deadline);
  return false;
}

// A frame test: `user`'s presence, online or not.
inline std::function<bool(const json::object&)> presence_of(const std::string& user, bool online) {
  return [user, online](const json::object& f) {
    return type_of(f) == "presence" && jstr(f, "user") == user && jbool(f, "online", !online) == online;
  };
}

// The log of `group` read through node n: dense from 1, each client_msg_id of `seqs` stored
// once, at the seq it was acknowledged with (each message's body is its client_msg_id).
inline void expect_log_matches(Node& n, const Account& reader, const std::string& group, const std::map<std::string, Seq>& seqs) {
  Seq head = 0;
  auto log = n.api->backfill_all(reader.token, group, 0, &head);
  auto ms = message_seqs(log, group);
  ASSERT_FALSE(ms.empty());
  EXPECT_TRUE(contiguous(ms));
  EXPECT_EQ(ms.front(), 1u);
  std::map<std::string, Seq> in_log;
  for (const auto& f : log) {
    const std::string id = unb64(jstr(f, "body"));
    if (!seqs.count(id)) continue;  // the system message of the creation
    EXPECT_FALSE(in_log.count(id)) << id << " stored twice";
    in_log[id] = seq_of(f);
  }
  EXPECT_EQ(in_log, seqs);
}

class RedisTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(redis_.start().ok()) << "redis-server (scripts/setup.sh) must be installed"; }
  void TearDown() override {
    if (HasFailure())
      for (auto* n : {&a_, &b_, &c_})
        if (n->server) std::cerr << n->server->log_tail(4000) << "\n";
  }
  // alice and bob registered on node n, their direct conversation, both connected to n.
  struct Pair {
    Account alice, bob;
    std::string conv;
    std::unique_ptr<Device> da, db;
  };
  void connected_pair(Node& n, Pair& p) {
    p.alice = n.api->must_register("alice");
    p.bob = n.api->must_register("bob");
    p.conv = n.api->must_direct(p.alice.token, "bob");
    p.da = std::make_unique<Device>(p.alice);
    p.db = std::make_unique<Device>(p.bob);
    for (Device* d : {p.da.get(), p.db.get()}) {
      ASSERT_EQ(d->connect(n.server->port()), 101);
      ASSERT_TRUE(d->until_synced());
    }
  }

  // Nodes a and b on the Redis; alice and bob registered through a, their direct conversation.
  void two_nodes_with_a_direct(Account& alice, Account& bob, std::string& conv, std::vector<std::string> extra = {}) {
    ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", extra));
    ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", extra));
    alice = a_.api->must_register("alice");
    bob = a_.api->must_register("bob");
    conv = a_.api->must_direct(alice.token, "bob");
  }

  // Nodes a and b, alice and bob with a direct conversation (alice created it: bob may see her
  // presence); bob connected to b as `db`, subscribed to alice, her answer (offline) read.
  void bob_on_b_watching_alice(Account& alice, Account& bob, Device& db) {
    std::string conv;
    ASSERT_NO_FATAL_FAILURE(two_nodes_with_a_direct(alice, bob, conv));
    ASSERT_NO_FATAL_FAILURE(await_both_live(alice, bob));
    db.account = bob;
    ASSERT_EQ(db.connect(b_.server->port()), 101);
    ASSERT_TRUE(db.until_synced());
    ASSERT_TRUE(db.presence_subscribe({"alice"}));
    std::vector<json::object> seen;
    ASSERT_TRUE(db.read_until(presence_of("alice", false), ms(5000), &seen)) << dump_frames(seen);
  }

  // bob_on_b_watching_alice, then alice connected to a as `da` and bob told she is online.
  void bob_on_b_sees_alice_online_on_a(Account& alice, Account& bob, Device& db, Device& da) {
    ASSERT_NO_FATAL_FAILURE(bob_on_b_watching_alice(alice, bob, db));
    da.account = alice;
    ASSERT_EQ(da.connect(a_.server->port()), 101);
    ASSERT_TRUE(da.until_synced());
    ASSERT_TRUE(db.read_until(presence_of("alice", true), ms(5000)));
  }

  // Nodes a and b (with `extra` options), alice registered through a and bob through b, each
  // node seeing both live; `group`: a group of bob's with alice that node a sequences, as node
  // b's ring sees it (ternd's hashing), so that bob's sends through b are forwarded to a.
  // `env_a`: node a's environment (TestServer::set_env).
  void group_sequenced_on_a(Account& alice, Account& bob, std::string& group, std::vector<std::string> extra = {},
                            std::vector<std::string> env_a = {}) {
    ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", extra, std::move(env_a)));
    ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", extra));
    alice = a_.api->must_register("alice");
    bob = b_.api->must_register("bob");
    ASSERT_NO_FATAL_FAILURE(await_both_live(alice, bob));
    bus::NodeRing ring("b", std::chrono::seconds(5));
    ring.set_live({"a", "b"});
    for (int i = 0; i < 30 && group.empty(); ++i) {
      std::string g = b_.api->must_group(bob.token, "g" + std::to_string(i), {"alice"});
      if (ring.owner(g) == "a") group = g;
    }
    ASSERT_FALSE(group.empty()) << "node a owns none of 30 groups";
  }

  // Waits (bounded) until nodes a and b each see both on the bus, so that they agree on every
  // conversation's owner; `on_a` / `on_b` read their metrics.
  void await_both_live(const Account& on_a, const Account& on_b) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while ((metric(a_, on_a, "tern_bus_live_nodes") != 2 || metric(b_, on_b, "tern_bus_live_nodes") != 2) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(ms(50));
    ASSERT_EQ(metric(a_, on_a, "tern_bus_live_nodes"), 2);
    ASSERT_EQ(metric(b_, on_b, "tern_bus_live_nodes"), 2);
  }
  // `each` sends by `a_who` through node a and by `b_who` through node b into `conv`, both at
  // once (ids "a<i>" and "b<i>", each body its id); their acknowledged seqs by id.
  std::map<std::string, Seq> send_from_both(const Account& a_who, const Account& b_who, const std::string& conv,
                                            int each) {
    std::map<std::string, Seq> seqs;
    std::mutex mu;
    auto sender = [&](const Account& who, uint16_t port, const std::string& prefix) {
      Device d(who);
      if (d.connect(port) != 101 || !d.until_synced()) {
        ADD_FAILURE() << prefix << ": could not connect";
        return;
      }
      for (int i = 0; i < each; ++i) {
        const std::string id = prefix + std::to_string(i);
        const Seq s = send_retrying(d, conv, id);
        std::lock_guard lk(mu);
        seqs[id] = s;
      }
    };
    std::thread ta(sender, a_who, a_.server->port(), "a");
    std::thread tb(sender, b_who, b_.server->port(), "b");
    ta.join();
    tb.join();
    return seqs;
  }

  RedisServer redis_;
  Node a_, b_, c_;
};

}  // namespace tern::test
