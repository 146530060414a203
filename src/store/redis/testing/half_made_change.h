// Test support: a channel change on a Redis Cluster that stopped half way, as a node that
// died between its commit's phases leaves it (redis_change_lease.h): the change lease taken
// with its redo record, the subscription row written (phase 0), the record not (phase 1).
// Used by the lease's own tests and by the integration tests of ternd on a Cluster.
// No state; call from one thread per RedisCluster.
#pragma once
#include <chrono>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/ids.h"
#include "store/redis/redis_cluster.h"
#include "store/store.h"

namespace tern::store::redis::testing {

// The commit ops of `user`'s join of channel `to.id`, counted from the record `from` (the
// record's check 'e', the record 'C', the subscription row 'h' joined at `joined`): what the
// change's redo record holds.
std::vector<std::string> join_ops(const Conversation& from, const Conversation& to, const std::string& user,
                                  Seq joined = 1);

// `user`'s join of the channel whose stored record is `from`, counted to `to`, stopped after
// its phase 0: its lease (of `life`) and redo record taken, its subscription row written.
// Returns once the lease expired (within `life` + 5 s), the redo record left.
Result<void> stop_a_join_half_way(RedisCluster& cluster, const Conversation& from, const Conversation& to,
                                  const std::string& user, std::chrono::milliseconds life, Seq joined = 1);

// The same for the channel `channel_id` as stored (one subscriber more).
Result<void> stop_a_join_half_way(RedisCluster& cluster, const std::string& channel_id, const std::string& user,
                                  std::chrono::milliseconds life, Seq joined = 1);

}  // namespace tern::store::redis::testing
