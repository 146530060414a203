// Test support: a real Redis Cluster of 3 masters and 3 replicas (redis-server
// --cluster-enabled yes, AOF with `appendfsync always`) on free 127.0.0.1 ports, each node's
// data in its own directory under one temp directory, created with `redis-cli --cluster
// create --cluster-replicas 1`. start() returns once every node reports cluster_state:ok,
// sees all 16384 slots served and every master has its replica linked (bounded deadline);
// the destructor stops every node and removes the directory. Failure injection: SIGKILL a
// node, restart it, manual failover on a replica, slot migration steps. redis-server and
// redis-cli come from Debian (scripts/setup.sh); if either is missing start() fails (tests
// fail, never skip). Not thread-safe: one test thread drives it.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "store/redis/redis_connection.h"

namespace tern::store::redis::testing {

class TestCerts;

class RedisClusterServer {
 public:
  static constexpr int kNodes = 6;
  // cluster-node-timeout of the nodes: a dead master is failed over ~2-3x this later.
  static constexpr int kNodeTimeoutMs = 1000;

  RedisClusterServer();
  // Every node with this requirepass (and masterauth, for its replica); the helper's own
  // commands and redis-cli log in with it.
  explicit RedisClusterServer(std::string password);
  ~RedisClusterServer();
  // Before start(): every node speaks TLS only (client port, cluster bus, replication) with
  // `certs`'s server certificate and asks for a client certificate; the helper's commands
  // and redis-cli connect with `client` (and certs's client certificate); seeds() say rediss://.
  void serve_tls(const TestCerts& certs, std::shared_ptr<const RedisTls> client);
  RedisClusterServer(const RedisClusterServer&) = delete;
  RedisClusterServer& operator=(const RedisClusterServer&) = delete;

  Result<void> start();  // within 60 s

  const std::vector<uint16_t>& ports() const { return ports_; }
  // "redis://127.0.0.1:p1,redis://127.0.0.1:p2,..." (rediss:// with TLS): every node as a seed.
  std::string seeds() const;
  // Three seeds (the first three nodes), as ternd is given.
  std::string seeds3() const;

  // The port of the master that serves `slot`, as node `asked_port` sees it (0: any live node).
  Result<uint16_t> master_of(uint16_t slot, uint16_t asked_port = 0) const;
  // A live master other than `except_port`.
  Result<uint16_t> another_master(uint16_t except_port) const;
  // The port of a replica of the master on `master_port`.
  Result<uint16_t> replica_of(uint16_t master_port) const;
  // A node's CLUSTER MYID.
  Result<std::string> node_id(uint16_t port) const;
  // Runs a command on one node; returns its reply as text (an error reply as "ERR ...").
  Result<std::string> command(uint16_t port, const std::vector<std::string>& argv) const;
  // FLUSHALL on every node that answers ROLE as a master (a test starting from an empty
  // Cluster); fails naming the first master that did not answer OK.
  Result<void> flush_masters() const;

  void kill9(uint16_t port);               // SIGKILL and reap
  Result<void> restart(uint16_t port);     // same port and directory; waits until it answers
  // CLUSTER FAILOVER on the replica; returns once it is a master that every live node agrees on.
  Result<void> failover(uint16_t replica_port);
  // Waits until every live node reports cluster_state:ok and agrees that each slot has a live
  // master (after a kill: the replica was promoted).
  Result<void> await_healthy(std::chrono::milliseconds within);
  // Moves a whole slot (and its keys) from its master to `to_port`, as redis-cli --cluster
  // reshard does: SETSLOT IMPORTING/MIGRATING, MIGRATE the keys, SETSLOT NODE on every master.
  Result<void> move_slot(uint16_t slot, uint16_t to_port);
  // The first half of move_slot: the slot stays with its owner but is MIGRATING to `to_port`
  // (IMPORTING there); `keys` are migrated now. finish_migration completes it.
  Result<void> begin_migration(uint16_t slot, uint16_t to_port, const std::vector<std::string>& keys);
  Result<void> finish_migration(uint16_t slot, uint16_t to_port);

  const std::string& dir() const { return dir_; }

 private:
  Result<void> launch(size_t i);
  bool alive(uint16_t port) const;
  size_t index(uint16_t port) const;
  std::vector<std::string> migrate_command(uint16_t to_port) const;  // up to KEYS (with AUTH if needed)

  RedisCredentials login() const { return RedisCredentials{"", password_, client_tls_}; }  // the helper's own

  std::string password_;
  std::shared_ptr<const RedisTls> client_tls_;  // serve_tls()
  std::vector<std::string> tls_args_, cli_tls_args_;
  std::string dir_;
  std::vector<uint16_t> ports_;
  std::vector<pid_t> pids_;
};

}  // namespace tern::store::redis::testing
