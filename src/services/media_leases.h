// MediaLeases: closes the race between a send that names a blob and the sweep that collects
// blobs nothing refers to. A send holds a lease on its media ids from its access check until
// its commit finished (the message row that refers to them is then in the store); the sweep
// marks a blob as being collected before it reads the blob's references and removes it. A
// blob under a lease is skipped by the sweep (looked at again next sweep), and a send that
// names a blob being collected is refused as not found, so a stored message never names a
// blob the sweep removed at the same moment.
//
// Thread-safety: every method from any thread (one mutex; held for a few set operations).
// Leases keep the shared state alive, so a lease may outlive its MediaLeases.
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/result.h"

namespace tern::services {

class MediaLeases {
 public:
  // Released when the last copy is destroyed.
  using Lease = std::shared_ptr<void>;

  MediaLeases();

  // A lease on every id, or kNotFound (nothing leased) when one is being collected.
  Result<Lease> acquire(const std::vector<std::string>& ids);
  // The sweep: false when the blob is leased (skip it); true and marked as being collected
  // otherwise, until end_collect().
  bool begin_collect(const std::string& id);
  void end_collect(const std::string& id);

  size_t leased(const std::string& id) const;  // tests

 private:
  struct State {
    mutable std::mutex mu;
    std::unordered_map<std::string, size_t> leased;  // id → sends holding it
    std::unordered_set<std::string> collecting;
  };
  std::shared_ptr<State> state_;
};

}  // namespace tern::services
