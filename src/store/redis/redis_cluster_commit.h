// The parts of RedisStore that differ on a Redis Cluster, where one Lua script may touch the
// keys of one hash slot only (docs/scaling.md, "A commit on a Redis Cluster").
//
// commit_on_cluster() takes the commit script's flat op list (as RedisStore::commit builds it
// for one redis-server, redis_scripts.h kCommit), splits it by slot and runs it in two phases.
// A phase's groups of the slots one master serves run as one script (a script without a
// shebang may touch any slot of its node; op 'L' first reads one key of each further slot, so
// a slot that moved since the map was read fails the script before it writes: then those
// slots run one script each, following MOVED/ASK), all masters at once (RedisCluster::run_many):
//   0. blind, idempotent puts outside the conversations: inbox marks (which only move
//      forward: op 'm'), idempotency pointers (device → conversation), the expiry index,
//      user-index rows of the current members and deletions of removed members' rows
//      (against the member set read before), cursors, last-seen, tokens (a replaced token's
//      key is deleted here, before the device row names the new one), and the conversations'
//      receipts;
//   1. per conversation, atomically (in its master's script): the dense seq check, the log
//      appends, the idempotency records and the conversation meta, with its expected-record
//      check (op 'e', PutConversation::expected; also checked once before phase 0, taking the
//      conversation's change lease, redis_change_lease.h, so that a refused change writes no
//      row there and no other change lands between the phases; op 'l' checks the lease in
//      phase 1 and gives it back with the change's redo record, which the next change makes
//      first if this commit stops between its lease and phase 1); also the device rows of
//      PutDevice (after their
//      tokens). A script that finds a conversation behind writes
//      nothing and runs again without it.
// When phase 1 lives on one master X (one conversation, or several on X: the common case),
// X's phase-0 ops run in X's phase-1 script instead, ahead of the appends and atomic with
// them: one script, AOF write and fsync fewer on X. Phase 0 on the other masters still runs
// first. (A folded script that meets a moved slot wrote nothing; the commit then runs its
// phases apart on the new map.)
// The call succeeds only if every phase succeeded; any failure is `unavailable` (or the
// script's error) and the caller answers no `sent`. What a crash between phases leaves is
// harmless, and why, is in docs/scaling.md.
//
// Idempotency on a cluster: the record lives in the conversation's slot ({c:<conv>}:idem,
// field "<len>:<device key><client_msg_id>"), written in the same script as the append, so it
// exists iff the message does; a pointer {d:<device>}:idp client_msg_id → conversation,
// written in phase 0, tells a lookup by device where to look (two reads). With dense appends
// (ternd) the commit itself refuses a client_msg_id that has a record, so the sender makes no
// read before a first attempt: phase 1 checks the record in the send's conversation ('j', in
// the script of that conversation's master, before the record's write), and the pointer's write ('p')
// finds a pointer that names another conversation (its script then writes nothing);
// commit_on_cluster() reads that conversation's record and, if it holds one, refuses the send
// too, else moves the pointer, and runs the script again (an id counts per device,
// docs/protocol.md §7.3). A refused send's conversation is named behind, unreserved; the
// retry reads the record with send_idempotency_on_cluster (the conversation's slot, then the
// pointer). Each is indexed by expiry in its own slot (slot_index_key); purge_on_cluster() drops them.
//
// Thread-safety: free functions on the caller's RedisCluster (one per thread).
#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "store/redis/redis_cluster.h"
#include "store/store.h"

namespace tern::store::redis {

struct ClusterScript {
  std::string_view text;  // for EVAL when a node does not know the SHA (NOSCRIPT)
  std::string_view sha;
};

// args[0] is the dense-appends flag, then the ops. wait_replicas > 0: each script is followed
// by WAIT on its node.
// Dense appends whose conversation's script found them behind (another node appended
// first) fail that slot's script only: commit_on_cluster() then fails with behind_error()
// and fills `behind` (those conversations; rest_applied: every other script succeeded).
Result<void> commit_on_cluster(RedisCluster& cluster, const ClusterScript& script,
                               const std::vector<std::string_view>& args, int wait_replicas,
                               std::chrono::milliseconds timeout, Store::Behind& behind);

// The commit script's answer when dense appends were behind: {'TERNSEQ', (conversation id,
// head)...}. True (and those conversations appended to `out`) for such a reply.
bool behind_reply(const redisReply* r, Store::Behind& out);
Error behind_error();

Result<std::optional<IdempotencyRecord>> idempotency_on_cluster(RedisCluster& cluster, const DeviceRef& device,
                                                                const std::string& client_msg_id, int64_t now_ms);

// The record of a send into `conversation_id`: in the conversation's slot (one read, where the
// commit's check 'j' looks), else where the device's pointer says it used the id.
Result<std::optional<IdempotencyRecord>> send_idempotency_on_cluster(RedisCluster& cluster, const DeviceRef& device,
                                                                     const std::string& client_msg_id,
                                                                     const std::string& conversation_id, int64_t now_ms);

// The idempotency expiry index of one hash slot: "idemexp{<tag>}", its tag chosen so that the
// key lives in `slot` (the same on every node). An entry ("<len>:<hash key><field>", scored by
// expiry) is written by the script that writes the pointer or record it indexes, in that slot:
// no script of its own, no master of its own in a commit. (Nodes before these indexes wrote
// to one global `idemexp`, which the purge still drains.)
std::string_view slot_index_key(uint16_t slot);

// Drops expired idempotency records and pointers: each slot's index (and the global one), read
// in chunks, all slots at once.
Result<size_t> purge_on_cluster(RedisCluster& cluster, int64_t now_ms);

// An error reply as RedisStore reports it (transient ones are `unavailable`).
Error redis_reply_error(std::string_view message);

}  // namespace tern::store::redis
