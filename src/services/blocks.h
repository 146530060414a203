// Blocks: who blocks whom. A user blocks another with PUT /v1/blocks/{user}; from then on
// (docs/protocol.md §"Blocking"):
//   - the blocked user's sends into their direct conversation with the blocker are sequenced
//     as usual (the sender gets `sent`, its other devices the message: seqs stay dense for
//     everyone) but the stored frame carries "withheld_from":<blocker>: the blocker's devices
//     get no inbox mark and no live delivery, and if they ever read that seq (replay of a
//     later message, backfill) they see a tombstone ("body":"","withheld":true). The blocked
//     user is never told: no error, and no delivered/read receipt (the blocker's devices
//     never ack it while blocked);
//   - the blocker cannot send into that direct conversation (`forbidden`, told only to the
//     blocker) until it unblocks;
//   - neither sees the other's typing there, and the blocked user gets no presence of the
//     blocker; groups are unaffected.
//
// The lists live in the store (user records "block/<user>") and in a bounded LRU cache here
// (`cache_users` users; a miss reads the user's list, at most kMaxPerUser rows: a point
// range read, like the idempotency read on the send path, done on the caller's thread).
// Changes are committed through the group committer, then the cache is updated.
//
// Thread-safe (one mutex around the cache). Owned by TernService.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/lru_map.h"
#include "base/result.h"
#include "services/group_committer.h"
#include "store/store.h"

namespace tern::services {

class Blocks {
 public:
  static constexpr size_t kMaxPerUser = 1000;
  using Done = std::function<void(Result<void>)>;  // runs on the committer's completion thread

  Blocks(store::Store& store, GroupCommitter& committer, size_t cache_users)
      : store_(store), committer_(committer), cache_(cache_users) {}

  // Does `blocker` block `other`? A store error reads as "no" (logged by the caller's metrics).
  bool blocks(const std::string& blocker, const std::string& other);
  // Is `user`'s list in the cache (blocks() answers without a store read)?
  bool cached(const std::string& user) {
    std::lock_guard lock(mu_);
    return cache_.find(user) != nullptr;
  }
  // blocks(blocker, other) from the cache alone; nullopt when blocker's list is not cached.
  std::optional<bool> cached_blocks(const std::string& blocker, const std::string& other) {
    std::lock_guard lock(mu_);
    const List* l = cache_.find(blocker);
    if (!l) return std::nullopt;
    return (*l)->count(other) != 0;
  }
  // Either of the two blocks the other.
  bool either(const std::string& a, const std::string& b) { return blocks(a, b) || blocks(b, a); }
  Result<std::vector<std::string>> list(const std::string& user);

  // Another node changed `user`'s list (Bus::set_user_changed_sink), or events that said so
  // may have been missed (every user): the list is read again at its next use. A read in
  // flight meanwhile answers its caller but is not kept.
  void forget(const std::string& user);
  void forget_all();

  void block(const std::string& user, const std::string& other, Done done);
  void unblock(const std::string& user, const std::string& other, Done done);

 private:
  using List = std::shared_ptr<const std::set<std::string>>;
  Result<List> load(const std::string& user);
  void change(const std::string& user, const std::string& other, bool add, Done done);

  store::Store& store_;
  GroupCommitter& committer_;
  std::mutex mu_;
  LruMap<std::string, List> cache_;
  uint64_t generation_ = 0;  // (mu_) forgets so far
};

}  // namespace tern::services
