// The change leases of one commit on a Redis Cluster (docs/scaling.md, "Channels across
// nodes"). A channel's join, leave, admin or timer change is computed from the stored record
// (PutConversation::expected). On one redis-server the commit script checks that record and
// writes the change in one step. On a Cluster the change's rows in other slots (a subscriber's
// index row) are written in phase 0, before the conversation's phase-1 script checks the
// record: a change that lost there would leave its rows, and its retry would find the user
// subscribed and count nothing. So before phase 0 the commit takes the conversation's lease
// ({c:<id>}:lk, scripts::kLeaseChange), in the same step as it checks the record. A change of
// another commit then fails before it writes anything, as one from an old record does. The
// phase-1 script checks that the lease is still its own or expired (op 'l') and deletes it.
//
// A commit can also stop between the lease and phase 1 (its node dies): its rows may be
// written and its record not. So with the lease it writes a redo record ({c:<id>}:rd: its
// token and the change's commit ops), which phase 1 deletes. The next change of the
// conversation that finds a redo record without its lease, the meta still the one that change
// counted from, takes the lease and makes that change first (commit_on_cluster), then is
// refused itself (`exists`: it counted from the record before) and made again by its caller.
// A change that takes a seq (a timer change: its message and record are written together in
// phase 1, nothing of it in phase 0) writes no redo record.
//
// A node that dies holding a lease holds up the conversation's changes until the lease's life
// ends: the other nodes' changes are refused meanwhile (`exists`), and made again until then
// (Sequencer::change_channel); the first after it makes the dead node's change first.
//
// Ownership: one per commit, on the commit's thread, over the caller's RedisCluster.
#pragma once
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "store/redis/redis_cluster.h"

namespace tern::store::redis {

class ChangeLeases {
 public:
  // A lease lives this many command timeouts: longer than a commit's own round trips normally
  // take, short enough that a node dying in a commit holds the channel's changes up only
  // briefly. The server retries a refused change past it (ServiceOptions::channel_change_retry_ms).
  static constexpr int kLifeInTimeouts = 3;

  ChangeLeases(RedisCluster& cluster, std::chrono::milliseconds life) : cluster_(cluster), life_(life) {}

  // Takes conversation `id`'s lease if its stored meta is `expected`, writing `redo` (the
  // change's commit ops, its 'e' first; empty: none) as its redo record. Returns the ops of a
  // change that stopped between its lease and phase 1 and must be made first (the lease is
  // then this commit's, and the redo record that change's), else none. `exists` if the meta
  // is another, or another commit holds the lease; `unavailable` if Redis did not answer.
  Result<std::vector<std::string>> take(std::string_view id, std::string_view expected,
                                        const std::vector<std::string_view>& redo);

  // This commit's token if it holds `id`'s lease, else empty.
  std::string_view token_for(std::string_view id) const;
  // The token of the redo record that `id`'s phase-1 script deletes: this commit's, or that
  // of the change take() returned. Empty if the lease is not this commit's.
  std::string_view redo_token_for(std::string_view id) const;

  // Gives back the leases taken and the redo records this commit wrote (a commit that
  // failed); one the phase-1 script already deleted, or another commit took after it
  // expired, is left alone. Best effort: a lease not given back expires. `drop_others`: the
  // redo records of the changes take() returned go too (they could not be made).
  void release(bool drop_others = false);

 private:
  struct Held {
    std::string id;
    std::string redo_token;
  };
  RedisCluster& cluster_;
  const std::chrono::milliseconds life_;
  std::string token_;       // made at the first take
  std::vector<Held> held_;  // conversations whose lease this commit holds
};

}  // namespace tern::store::redis
