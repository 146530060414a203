// RedisStore: the store contract (store/store.h) on one redis-server, so that several ternd
// nodes share accounts, conversations and message logs (docs/scaling.md).
//
// Key design (hash tags keep what one atomic step touches in one slot):
//   {u:<user>}:a        hash   c → created_ts, s → last_seen
//   {u:<user>}:d        hash   device → token hash             (devices of a user)
//   {u:<user>}:ix       hash   conversation → user-index row (rocks::encode_user_row)
//   {t:<token hash>}    string encoded DeviceRef
//   {c:<conv>}:m        string encoded Conversation (meta + members)
//   {c:<conv>}:mu       set    the users listed in the meta (to drop index rows of removed users)
//   {c:<conv>}:log      zset   16-hex-digit seqs, all score 0: ZRANGEBYLEX pages the log in
//                              seq order (a double score would lose seqs above 2^53)
//   {c:<conv>}:f        hash   seq (hex) → stored frame
//   {c:<conv>}:r        hash   user → "delivered read"
//   {c:<conv>}:lk / :rd string / list  on a Cluster only: a channel change's lease (its commit's
//                              token, for 3 command timeouts) and redo record (the token, then
//                              the change's commit ops), redis_change_lease.h
//   {d:<user>/<dev>}:cur  hash conversation → cursor seq
//   {d:<user>/<dev>}:in   hash conversation → inbox mark
//   {d:<user>/<dev>}:idem hash client_msg_id → encoded IdempotencyRecord
//   idemexp             zset   expiry index of idempotency records (score expires_at)
//   {d:<user>/<dev>}:k    string encoded DeviceKeys (rocks::encode_device_keys)
//   {d:<user>/<dev>}:pk   zset   one-time prekeys, score 0, member 8 hex digits of the id ‖
//                              public key: lex order is id order; a take is checked in the
//                              commit script (TERNTAKE), so a key goes out once across nodes
//   {u:<user>}:me / :ms zset / hash  the user's uploads (media id, lex) / id → size
//   {u:<user>}:rec / :rv  zset / hash  user record names (lex) / name → value
//   {m:<media id>}:o    hash   owner → "size created_ts"
//   {m:<media id>}:r / :rx  zset / hash  messages naming the blob: conversation ‖ \0 ‖ seq hex
//                              (lex) / → expires_at (0 = never)
//   {m:<media id>}:l / :c  zset / string  the nodes' leases on the blob (holder, score expiry
//                              ms) / the holder collecting it (PX): services/media_leases.h
//   users               zset   every registered user (lex), for the admin listing
//   mpend               zset   uploads not yet collected: score created_ts, member id ‖ owner
//   msgexp / msgexpv    zset / hash  expiring messages: score expires_at, member conversation
//                              ‖ \0 ‖ seq hex / → the media ids it names (64 hex each)
//   reports / reportv   zset / hash  16-hex-digit report ids (lex) / → report
// Slots: one conversation's keys share a slot ({c:..}), as do one user's ({u:..}), one
// device's ({d:..}) and one blob's ({m:..}); the global indexes are one key each. Every read
// is one key or one bounded range of one index (ZRANGEBYLEX/ZRANGEBYSCORE with LIMIT); no
// KEYS, no SCAN.
// A key is "{" kind ":" id "}:" suffix with the suffix free of '}' and ':', so distinct ids
// never share a key even if an id holds '}' (it only changes which slot the key lands in).
//
// commit(): the whole Batch is one EVALSHA of the commit script (one round trip, one atomic
// step on the server: all or nothing, ops in order). The script builds the keys itself, which
// a single redis-server allows; on a Redis Cluster the batch is split by slot into one script
// per master in each of two phases (redis_cluster_commit.h, docs/scaling.md). Durability: the reply comes after Redis applied the
// script, and with `appendfsync always` after the AOF write was fsynced; with
// wait_replicas > 0 the commit also waits (WAIT) for that many replicas and fails with
// `unavailable` if they did not acknowledge within the command timeout.
//
// Errors: a connection that cannot be made or breaks (Redis down, timeout) fails the call
// with `unavailable` at once; after a failed connect the thread does not retry for
// `retry_backoff`, doubling with each failure up to ten times that, back to `retry_backoff`
// after a success (fails fast instead of stalling every caller on a dead address).
//
// Threading: every method may be called from any thread or fiber; each calling thread gets
// its own hiredis connection (created on first use, kept until the store dies); the fibers
// of one loop share one connection per Redis node, on which their requests are pipelined
// (LoopConnections, redis_connection.h), and one topology (ClusterTopology,
// redis_cluster.h). Reads are synchronous
// (the store contract is, because RocksDB's reads are): one Redis round trip (~50-100 µs on
// loopback, at most command_timeout when Redis hangs) on the calling thread. So in Redis mode
// the services make them on reader threads, never on an event loop (services/store_reads.h;
// docs/scaling.md "Threading"); an asynchronous contract
// driven by the loops (over AsyncRedis) is future work. commit() comes from the group
// committer's one writer thread.
//
// Ownership: the composition root owns the store.
#pragma once
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "store/redis/redis_cluster.h"
#include "store/redis/redis_connection.h"
#include "store/store.h"

namespace tern {
class Fiber;  // base/fiber.h
}  // namespace tern

namespace tern::store::redis {

struct RedisStoreOptions {
  RedisAddress address;
  // Seeds of a Redis Cluster (or of one redis-server); when set, used instead of `address`.
  // On a cluster every key is routed by its slot and commit() is split by slot
  // (redis_cluster_commit.h).
  std::vector<RedisAddress> seeds;
  RedisCredentials credentials{};  // every connection logs in with these (the deployment's requirepass or ACL user)
  std::chrono::milliseconds connect_timeout{200};
  std::chrono::milliseconds command_timeout{2000};
  std::chrono::milliseconds retry_backoff{100};
  int wait_replicas = 0;  // > 0: WAIT for this many replicas before commit() returns
  // ternd sets this: a commit whose AppendMessage is not its conversation's next seq (head + 1)
  // writes nothing and fails with `unavailable` (see redis_scripts.h). The contract suite
  // appends arbitrary seqs, so the plain contract leaves it off.
  bool dense_appends = false;
  // erase_expired() asks Redis to rewrite its AOF (BGREWRITEAOF) so that the erased bytes
  // leave the disk too, at most once per aof_rewrite_interval (a rewrite copies the whole
  // data set; Redis runs at most one at a time and queues a request made during another).
  bool rewrite_aof_on_erase = true;
  std::chrono::milliseconds aof_rewrite_interval{60000};
};

class RedisStore final : public Store {
 public:
  // Connects once (to fail early on a wrong address) and loads the scripts.
  static Result<std::unique_ptr<RedisStore>> open(RedisStoreOptions options);
  ~RedisStore() override;

  Result<void> commit(const Batch& batch, bool sync) override;
  Behind behind() const override { return behind_; }
  // Dense appends (ternd): the commit script refuses a send whose client_msg_id already has
  // an unexpired record (redis_scripts.h: op 'i' on one redis-server; on a Cluster op 'j' in
  // the send's conversation and op 'p' for an id used in another, redis_cluster_commit.h), so
  // the sender skips its idempotency read before a first attempt.
  bool commit_checks_idempotency() const override { return options_.dense_appends; }
  bool finishes_changes_later() const override { return cluster_; }  // the change lease's redo record
  Result<void> flush() override;
  Result<bool> user_exists(const std::string& user) override;
  Result<std::vector<uint32_t>> devices(const std::string& user) override;
  Result<std::vector<std::vector<uint32_t>>> devices_of(const std::vector<std::string>& users) override;
  Result<std::optional<DeviceRef>> find_token(const std::string& token_hash) override;
  Result<int64_t> last_seen(const std::string& user) override;
  Result<std::optional<Conversation>> conversation(const std::string& id) override;
  Result<std::vector<std::optional<Conversation>>> conversations_of(const std::vector<std::string>& ids) override;
  Result<std::vector<UserConversation>> user_conversations(const std::string& user) override;
  Result<std::optional<UserConversation>> user_conversation(const std::string& user,
                                                            const std::string& conversation_id) override;
  Result<std::vector<StoredMessage>> read_messages(const std::string& conversation_id, Seq after_seq,
                                                   size_t limit) override;
  Result<Seq> head(const std::string& conversation_id) override;
  Result<Seq> cursor(const DeviceRef& device, const std::string& conversation_id) override;
  Result<std::vector<Seq>> cursors(const DeviceRef& device, const std::vector<std::string>& conversation_ids) override;
  Result<std::vector<std::pair<std::string, Seq>>> inbox(const DeviceRef& device) override;
  Result<std::optional<IdempotencyRecord>> idempotency(const DeviceRef& device, const std::string& client_msg_id,
                                                       int64_t now_ms) override;
  // On a Cluster: the record in the conversation's slot (one read; the commit's check looks
  // there too), else where the device's pointer says. On one redis-server: idempotency().
  Result<std::optional<IdempotencyRecord>> send_idempotency(const DeviceRef& device, const std::string& client_msg_id,
                                                            const std::string& conversation_id,
                                                            int64_t now_ms) override;
  Result<std::vector<ReceiptState>> receipts(const std::string& conversation_id) override;
  Result<std::vector<std::vector<ReceiptState>>> receipts_of(const std::vector<std::string>& conversation_ids) override;
  Result<size_t> purge_expired(int64_t now_ms) override;
  Result<std::optional<DeviceKeys>> device_keys(const DeviceRef& device) override;
  Result<std::vector<std::optional<DeviceKeys>>> device_keys_of(const std::vector<DeviceRef>& devices) override;
  Result<std::vector<OneTimePrekey>> one_time_prekeys(const DeviceRef& device, size_t limit) override;
  Result<std::vector<MediaOwner>> media_owners(const std::string& id) override;
  Result<std::vector<std::pair<std::string, uint64_t>>> user_media(const std::string& user, size_t limit) override;
  Result<std::vector<MediaRef>> media_refs(const std::string& id, size_t limit) override;
  Result<std::vector<PendingMedia>> pending_media(int64_t before_ms, size_t limit) override;
  Result<std::vector<ExpiringMessage>> expiring_messages(int64_t now_ms, size_t limit) override;
  // Overwrites each frame with its tombstone (HSET): the old bytes leave Redis's memory at
  // once, but stay in the AOF until Redis rewrites it; with rewrite_aof_on_erase this asks
  // every node, replicas included, for a rewrite (BGREWRITEAOF) afterwards
  // (RedisCluster::on_every_node; docs/scaling.md, "Disappearing messages").
  Result<void> erase_expired(const std::vector<ExpiringMessage>& messages) override;
  Result<std::optional<std::string>> user_record(const std::string& user, const std::string& name) override;
  Result<std::vector<std::pair<std::string, std::string>>> user_records(const std::string& user,
                                                                       const std::string& prefix,
                                                                       size_t limit) override;
  Result<std::vector<std::string>> users(const std::string& after, size_t limit) override;
  Result<std::vector<std::pair<uint64_t, std::string>>> reports(uint64_t after_id, size_t limit) override;
  Result<uint64_t> last_report_id() override;
  // One script (kTakeTokens) on the bucket's key `{rl:<key>}`, by Redis's clock.
  Result<std::optional<bool>> take_tokens(const std::string& key, double rate_per_sec, double burst, double n) override;
  // One script (kMediaMark) on the blob's `{m:<id>}:l` and `:c`, by Redis's clock.
  Result<std::optional<bool>> mark_media(const std::string& id, MediaMark kind, const std::string& holder,
                                         int64_t ttl_ms) override;
  Result<void> unmark_media(const std::string& id, MediaMark kind, const std::string& holder) override;
  // One script (kNextReportId) on `{reports}n`, the counter beside the reports' index.
  Result<std::optional<uint64_t>> next_report_id() override;
  // One script (kLinkCode) on the user's `{u:<user>}:lc`, by Redis's clock.
  Result<std::optional<int64_t>> add_link_code(const std::string& user, const std::string& code_hash, int64_t ttl_ms,
                                               size_t max_per_user) override;
  Result<std::optional<bool>> take_link_code(const std::string& user, const std::string& code_hash) override;

  // Not part of the contract: a value all nodes must agree on (the secret that keys direct
  // conversation ids): stores `proposed` under `key` unless a value is there (SET NX) and
  // returns the stored one, so the first node to start decides for all.
  Result<std::string> shared_value(const std::string& key, const std::string& proposed);

 private:
  struct Slot {
    std::unique_ptr<RedisCluster> cluster;  // this thread's routing client
    std::chrono::steady_clock::time_point retry_after{};
    ReconnectBackoff backoff{std::chrono::milliseconds(100), std::chrono::milliseconds(1000)};
  };
  explicit RedisStore(RedisStoreOptions options) : options_(std::move(options)) {}
  // This thread's (or fiber's) cluster client (reading the topology if needed), or
  // `unavailable`.
  Result<RedisCluster*> connection();
  // Runs the commands on the node that serves the first command's key (its slot); a
  // pipeline's commands share a slot.
  Result<std::vector<Reply>> run(const std::vector<std::vector<std::string_view>>& commands);
  // `verb key_of(x)` for each x, in one pipeline (run()); each reply through `parse`.
  template <typename T, typename In, typename KeyOf, typename Parse>
  Result<std::vector<T>> read_each(std::string_view verb, const std::vector<In>& in, KeyOf key_of, Parse parse);
  Result<Reply> run1(const std::vector<std::string_view>& argv);
  // A string reply (GET, HGET): its bytes, nullopt for nil. An error reply is an Error.
  Result<std::optional<std::string>> fetch_string(const std::vector<std::string_view>& argv);
  // An array reply (HGETALL, HKEYS, ZRANGE); nil reads as empty.
  Result<Reply> fetch_array(const std::vector<std::string_view>& argv);
  // One ordered, bounded read through the kRange script: (member, score, value) triples.
  struct RangeRow {
    std::string member, score, value;
  };
  Result<std::vector<RangeRow>> range(const std::string& index, const std::string& values, bool by_score,
                                      const std::string& min, const std::string& max, size_t limit);
  // EVALSHA of a script, loading it again (EVAL) if Redis forgot it (a restart).
  Result<Reply> eval(std::string_view script, const std::string& sha, const std::vector<std::string_view>& keys,
                     const std::vector<std::string_view>& args);
  // kMediaMark on the blob's keys with op (L, C, l, c): its integer answer.
  // (These and the other shared marks, token buckets, link codes and report ids:
  // redis_store_marks.cc.)
  Result<long long> media_mark_script(const std::string& id, std::string_view op, const std::string& holder,
                                      int64_t ttl_ms);

  const RedisStoreOptions options_;
  Behind behind_;  // of the last commit() (its thread only)
  bool cluster_ = false;  // the address is a Redis Cluster (learnt in open())
  // This store's token in the commit script's seq reservations (dense appends): random per
  // process, so two nodes never share one.
  const std::string node_token_ = random_token();
  static std::string random_token();
  // SHA1s Redis gave the scripts (SCRIPT LOAD)
  std::string commit_sha_, read_sha_, purge_sha_, range_sha_, tokens_sha_, media_mark_sha_, link_code_sha_,
      report_id_sha_;
  std::mutex rewrite_mu_;
  std::chrono::steady_clock::time_point last_rewrite_{};  // guarded by rewrite_mu_
  std::mutex mu_;  // guards the maps (each Slot is used only by its thread or fiber)
  std::unordered_map<std::thread::id, std::unique_ptr<Slot>> slots_;
  // What the fibers of one loop share (by the loop's io_context): one connection per Redis
  // node, on which a loop's reads are pipelined (redis_connection.h), and the topology (which
  // node serves which slot, redis_cluster.h). Declared before the fibers' clients, which
  // borrow them.
  struct LoopShare {
    LoopConnections connections;
    ClusterTopology topology;
  };
  std::unordered_map<const void*, std::unique_ptr<LoopShare>> loop_shares_;
  // A fiber's (StoreReads on the loops): its own routing client (a RedisCluster is used by
  // one caller at a time), whose connections and topology are its loop's. Fibers live as
  // long as the server, so this map stays small.
  std::unordered_map<const Fiber*, std::unique_ptr<Slot>> fiber_slots_;
};

}  // namespace tern::store::redis
