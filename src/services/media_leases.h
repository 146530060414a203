// MediaLeases: closes the race between a send that names a blob and the sweep that collects
// blobs nothing refers to. A send holds a lease on its media ids from its access check until
// its commit finished (the message row that refers to them is then in the store); the sweep
// marks a blob as being collected before it reads the blob's references and removes it. A
// blob under a lease is skipped by the sweep (looked at again next sweep), and a send that
// names a blob being collected is refused as not found, so a stored message never names a
// blob the sweep removed at the same moment.
//
// With several nodes on one store (Redis), a send on one node and the sweep on another race
// the same way, so both marks are also taken in the store, where every node sees them
// (store.h mark_media), after this node's own: a blob leased on any node is skipped by every
// sweep, and a blob any node collects is refused to every send. A shared mark expires
// kSharedTtlMs after it was taken, so a node that dies holding one holds nothing for longer.
// With a store that keeps no marks (the embedded stores: one node), only this node's count.
//
// Thread-safety: every method from any thread (one mutex; held for a few set operations, never
// across a store call). acquire() and begin_collect() call the store: in Redis mode never on
// an event loop. A lease may be dropped anywhere: its shared marks are dropped through `post`.
// Leases keep the shared state alive, so a lease may outlive its MediaLeases.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/result.h"
#include "store/store.h"

namespace tern::services {

class MediaLeases {
 public:
  // Released when the last copy is destroyed.
  using Lease = std::shared_ptr<void>;
  // Runs the function later on a thread that may call the store; false if it will not run
  // (stopping): the shared mark then expires on its own.
  using Post = std::function<bool(std::function<void()>)>;

  // How long a shared mark lives if its holder never drops it (the node died): far longer
  // than a send takes from its access check to its commit (a few Redis round trips, each
  // bounded by --redis-timeout-ms) and than one blob's collection (two reads, one commit).
  static constexpr int64_t kSharedTtlMs = 60'000;

  // `shared`: the store every node sees (null: this node's marks alone decide); it outlives
  // every lease. `post`: where a dropped lease's shared marks are given back (a lease may be
  // dropped on an event loop, which must not wait for Redis), until this is destroyed;
  // empty: by the thread that drops the lease.
  explicit MediaLeases(store::Store* shared = nullptr, Post post = {});
  ~MediaLeases();  // leases still held give their shared marks back themselves from then on
  MediaLeases(const MediaLeases&) = delete;
  MediaLeases& operator=(const MediaLeases&) = delete;

  // A lease on every id; kNotFound (nothing leased) when one is being collected, here or on
  // another node; the store's error (`unavailable`) when it cannot say.
  Result<Lease> acquire(const std::vector<std::string>& ids);
  // The sweep: false when the blob is leased here or on another node, or the store cannot
  // say (skip it); true and marked as being collected otherwise, until end_collect().
  bool begin_collect(const std::string& id);
  void end_collect(const std::string& id);

  size_t leased(const std::string& id) const;  // this node's leases (tests)

 private:
  struct State {
    mutable std::mutex mu;
    std::unordered_map<std::string, size_t> leased;  // id → sends holding it
    std::unordered_set<std::string> collecting;
    Post post;                 // cleared by ~MediaLeases
    bool unmark_here = false;  // no post was given: shared marks are dropped by the releasing thread
  };
  // Gives back a lease on `ids`: this node's count of each, and the shared marks `holder`
  // took on the first `shared_taken` of them.
  static void release(State& state, store::Store* shared, const std::vector<std::string>& ids,
                      const std::string& holder, size_t shared_taken);
  std::string next_holder();

  std::shared_ptr<State> state_;
  store::Store* const shared_;
  const std::string holder_prefix_;  // random per MediaLeases: holders of two nodes never collide
  std::atomic<uint64_t> next_{0};
};

}  // namespace tern::services
