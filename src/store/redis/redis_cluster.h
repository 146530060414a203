// RedisCluster: routes commands to the Redis node that serves their keys' hash slot, for a
// Redis Cluster (several masters, each serving a share of the 16384 slots) and, with the
// same interface, for one plain redis-server (every slot on that one node).
//
// Slots (Redis Cluster specification): slot = CRC16-XMODEM(tag) mod 16384, where the tag is
// the part of the key between the first '{' and the next '}' if that part is non-empty, else
// the whole key. Keys with one hash tag ("{c:g1}:log", "{c:g1}:f") share a slot, so one Lua
// script or pipeline may touch them together.
//
// Topology: `CLUSTER SLOTS` asked of any known node (the seeds first, then every master seen
// so far). A node that answers "cluster support disabled" is a plain redis-server: all slots
// on it. One RedisConnection per master, made on first use (or taken from the loop's shared
// connections, options.shared, for a client in a fiber).
//
// Redirections: `MOVED <slot> <host:port>` (the slot has a new owner: a finished migration or
// a failover) records the new owner, refreshes the topology and resends to it. `ASK <slot>
// <host:port>` (a migration in progress, this key already moved) sends `ASKING` and the
// command to that node once, without changing the map. At most `max_redirects` redirections
// per call, then `unavailable`.
//
// Failures: a node that cannot be connected to (nothing was sent) makes the client refresh
// the topology and try again, up to `max_attempts` times with a short growing pause
// (`retry_backoff`, doubling) — long enough to follow a redirect, short enough that a dead
// Redis fails a call at once. A connection kept from an earlier call that turns out broken
// when used (its node died or restarted meanwhile) is replaced and the commands are resent
// once; a connection that breaks otherwise fails the call with `unavailable`. So the callers'
// commands must be safe to send twice: RedisStore's are (reads, puts, and commit scripts whose
// second run repeats the same writes or, with dense appends, fails the seq check and the
// client's resend is answered by idempotency); RedisBus's publishes may then be delivered
// twice (sessions drop what they already have). After a refresh that
// reached no node, calls fail fast for `retry_backoff` (doubling up to `max_backoff`) instead
// of stalling on a dead address. CLUSTERDOWN / TRYAGAIN / LOADING replies are returned to
// the caller as error replies (RedisStore maps them to `unavailable`).
//
// Pipelines: run() sends all commands of one slot in one write and reads all replies (one
// round trip). A redirect answers per command: only the redirected commands are resent, after
// the others ran, so the commands of one pipeline must not depend on each other's order
// (blind puts, reads, one script each). run_many() sends the pipelines of several slots,
// grouped per node, all written before any reply is read (one round trip to each node, in
// parallel).
//
// Thread-safety: none, as RedisConnection: one RedisCluster is used by one thread or fiber at
// a time (RedisStore and RedisBus keep one per calling thread or fiber). Owns its
// connections and topology, or shares both with the other fibers of its loop
// (options.shared, options.topology): what one fiber learns (a refresh, a MOVED, a Redis
// that answers nobody) the loop's other fibers use at once.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "store/redis/redis_connection.h"

namespace tern::store::redis {

inline constexpr uint16_t kSlots = 16384;

uint16_t crc16_xmodem(std::string_view data);
// The part of the key that decides its slot (the hash tag, or the whole key).
std::string_view hash_tag(std::string_view key);
uint16_t key_slot(std::string_view key);

// "redis://h1:p1,redis://h2:p2,h3:p3": one or more seed addresses (at most 64). Credentials
// (parse_redis_url) go to *credentials; seeds that give some must all give the same, so one
// may carry them for all. (A ',' in a password is written %2C.) *tls: whether the seeds say
// rediss:// (all or none).
Result<std::vector<RedisAddress>> parse_redis_urls(std::string_view urls, RedisCredentials* credentials = nullptr,
                                                   bool* tls = nullptr);

// The replicas a plain redis-server lists in its `INFO replication` text, one line each:
// "slave<N>:ip=<ip>,port=<port>,state=<state>,offset=<n>,lag=<n>" (lines end in "\r\n").
// Every state is kept (online, and wait_bgsave / send_bulk while a replica syncs: it keeps
// an AOF too); a line without a usable ip and port is left out.
std::vector<RedisAddress> replicas_in_info(std::string_view info);

// What a routing client knows of the cluster: the nodes seen and which master serves each
// slot. A client's own, or shared by the clients of one loop's fibers (options.topology;
// then only that loop's thread touches it). A fiber suspended in a call (a connect, a round
// trip, a pause) may find it changed by another when it resumes: a client reads it afresh
// after each suspension, and the nodes stay where they are (a deque, only appended to), so
// a node's index and address stay valid.
struct ClusterTopology {
  struct Node {
    RedisAddress address;
    std::shared_ptr<RedisConnection> conn;
  };
  ClusterTopology() { slot_node.fill(-1); }

  bool cluster = false;  // a Redis Cluster, or one plain redis-server
  bool known = false;    // a refresh succeeded once (a client sharing it need not read it again)
  std::deque<Node> nodes;                 // masters, seeds and replicas ever seen
  std::array<int16_t, kSlots> slot_node;  // node index per slot, -1: unserved
  // After a refresh that reached no node: calls fail fast until then (the backoff doubles).
  std::chrono::steady_clock::time_point refresh_after{};
  std::chrono::milliseconds backoff{0};
  // While one fiber reads the topology the loop's others wait for its result (a failover or
  // a loop's first reads would otherwise have every fiber ask CLUSTER SLOTS at once).
  bool refreshing = false;
  bool refreshed_ok = false;  // the last refresh's result
  FiberWaiters refresh_waiters;
};

struct RedisClusterOptions {
  std::vector<RedisAddress> seeds;
  std::chrono::milliseconds connect_timeout{200};
  std::chrono::milliseconds command_timeout{2000};
  std::chrono::milliseconds retry_backoff{20};
  std::chrono::milliseconds max_backoff{1000};
  int max_attempts = 4;   // connection attempts per call (each after a topology refresh)
  int max_redirects = 5;  // MOVED/ASK followed per call
  // Where the client takes its connections: null, its own (one per node); else these, shared
  // with the other clients of one loop's fibers (RedisStore's reads in fibers). Outlives
  // the client.
  LoopConnections* shared = nullptr;
  // The topology, null: the client's own; else shared with the other clients of one loop's
  // fibers (with `shared`, the same loop's connections). Outlives the client.
  ClusterTopology* topology = nullptr;
  RedisCredentials credentials{};  // every connection logs in with these (also to the nodes found later)
};

// One pipeline for one slot (run_many).
struct SlotCommands {
  uint16_t slot = 0;
  std::vector<std::vector<std::string_view>> commands;
};

class RedisCluster {
 public:
  // Reads the topology from the first seed that answers (not if a shared topology is known
  // already); fails with `unavailable` if none does.
  static Result<std::unique_ptr<RedisCluster>> open(RedisClusterOptions options);
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // The commands (all with keys of `slot`, or none) on the slot's master, one round trip.
  // Replies in order; Redis error replies other than a followed redirect are returned as such.
  Result<std::vector<Reply>> run(uint16_t slot, const std::vector<std::vector<std::string_view>>& commands);
  Result<Reply> run1(uint16_t slot, const std::vector<std::string_view>& argv);
  // Several slots' pipelines; result[i] holds the replies of batches[i]. Fails as a whole if
  // any node fails (what the other nodes applied stays applied).
  Result<std::vector<std::vector<Reply>>> run_many(const std::vector<SlotCommands>& batches);

  // Reads CLUSTER SLOTS again (normally done on demand).
  Result<void> refresh();

  // True for a Redis Cluster, false for one plain redis-server.
  bool is_cluster() const { return t_.cluster; }
  // The master that serves the slot now (as far as this client knows), "host:port".
  std::string owner(uint16_t slot) const;
  // The index of the node that serves the slot now (as far as this client knows; -1: none).
  // Two slots with the same index are on one master: one script may touch both
  // (redis_cluster_commit.h merges a commit's per-slot scripts by it).
  int node_of(uint16_t slot) const { return slot < kSlots ? t_.slot_node[slot] : -1; }
  // Every master known (for commands that must reach all of them).
  std::vector<RedisAddress> masters() const;
  // The command (no key) on every node, one after the other (e.g. BGREWRITEAOF: every node,
  // replicas included, keeps its own AOF): first each master that serves a slot now (the
  // topology read again first), then each replica that a master's CLUSTER NODES lists
  // (CLUSTER SLOTS leaves out a replica whose replication offset is still unknown). On a
  // plain redis-server: that server, then each replica its `INFO replication` lists
  // (replicas_in_info: the replicas connected to it now, started with `replicaof`; a
  // replica's own replicas are not looked for). Fails if a master (or the plain server)
  // cannot be reached, as before; a replica that cannot be reached (or a CLUSTER NODES /
  // INFO that fails) is reported in `unreachable` and the other nodes still get the
  // command. A node's error reply is not a failure (it is that node's answer).
  struct EveryNode {
    size_t masters = 0, replicas = 0;      // nodes that answered
    std::vector<std::string> unreachable;  // replicas not reached: "host:port: why"
  };
  Result<EveryNode> on_every_node(const std::vector<std::string_view>& argv);
  // The connection to the master of `slot` (connecting if needed), e.g. for a subscriber that
  // must hold its own channel on its shard. Valid until the next call on this object.
  Result<RedisConnection*> connection_for(uint16_t slot);

  // How many MOVED / ASK / topology refreshes this client has seen (tests, metrics).
  struct Counters {
    uint64_t moved = 0, ask = 0, refreshes = 0;
  };
  const Counters& counters() const { return counters_; }

 private:
  using Node = ClusterTopology::Node;
  explicit RedisCluster(RedisClusterOptions options);
  int node_index(const RedisAddress& address);  // adds the node if new
  // The node's connection (fresh: made now). The caller holds it for its call: in a shared
  // topology another fiber may drop the node's while this one is suspended on it.
  Result<std::shared_ptr<RedisConnection>> connect(int node, bool* fresh = nullptr);
  // Forgets the node's connection if it is still `conn` (a broken one; another fiber may have
  // made the node a new one meanwhile).
  void drop(int node, const RedisConnection* conn);
  Result<void> refresh_now();  // reads CLUSTER SLOTS (refresh(): unless another fiber does)
  Result<void> refresh_from(const RedisAddress& address);
  // Refreshes unless one just failed (then fails fast until the backoff passed).
  Result<void> refresh_or_backoff();
  // The node of the slot, refreshing once if no node serves it.
  Result<int> route(uint16_t slot);
  // The command on each replica in `replicas` that is not one of `masters` (promoted
  // meanwhile), counted in `out` (answered, or unreachable with why).
  void on_replicas(const std::vector<RedisAddress>& replicas, const std::vector<int>& masters,
                   const std::vector<std::string_view>& argv, EveryNode& out);
  // Sends (slot, indices of commands) to node; on return, replies[i] set for the sent ones.
  Result<void> send_with_redirects(uint16_t slot, const std::vector<std::vector<std::string_view>>& commands,
                                   std::vector<size_t> todo, std::vector<Reply>& replies);

  const RedisClusterOptions options_;
  std::unique_ptr<ClusterTopology> own_;  // null when options_.topology is shared
  ClusterTopology& t_;                    // *own_ or *options_.topology
  Counters counters_;
};

}  // namespace tern::store::redis
