#include "store/rocksdb/rocksdb_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <cassert>
#include <limits>
#include <map>
#include <string_view>
#include <type_traits>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "base/metrics.h"
#include "base/clock.h"
#include "store/rocksdb/encoding.h"
#include "store/rocksdb/expiry_filter.h"
#include "store/rocksdb/rocksdb_access.h"

namespace tern::store {

namespace {

using rocks::has_nul;
using namespace rocks_access;

bool compression_supported(rocksdb::CompressionType type) {
  static const std::vector<rocksdb::CompressionType> supported = rocksdb::GetSupportedCompressions();
  return std::find(supported.begin(), supported.end(), type) != supported.end();
}

rocksdb::ColumnFamilyOptions cf_options(RocksDbStore::Cf cf, const RocksDbOptions& opts,
                                        const std::shared_ptr<rocksdb::Cache>& cache) {
  using Store = RocksDbStore;
  // The log is append-and-scan; the expiry index is only ever scanned. Every other family
  // answers point lookups, many of them misses (unknown token, no cursor yet): bloom filters
  // turn those into no disk read.
  const bool scan_only = cf == Store::kMessages || cf == Store::kIdemExpiry || cf == Store::kMsgExpiry;

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.cache_index_and_filter_blocks = true;  // memory stays within the configured cache
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  table.format_version = 5;
  table.block_size = cf == Store::kMessages ? 16 * 1024 : 4 * 1024;
  if (!scan_only) table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));

  rocksdb::ColumnFamilyOptions o;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  const size_t mb = std::max<size_t>(opts.write_buffer_mb, 1) << 20;
  o.write_buffer_size = cf == Store::kMessages ? mb : std::max<size_t>(mb / 4, 1 << 20);
  o.max_write_buffer_number = 3;
  o.level_compaction_dynamic_level_bytes = true;
  if (compression_supported(rocksdb::kLZ4Compression)) o.compression = rocksdb::kLZ4Compression;
  if (compression_supported(rocksdb::kZSTD)) o.bottommost_compression = rocksdb::kZSTD;
  // Families that see many deletes (inbox clears, idempotency purges) get their SST files
  // compacted early, so scans don't wade through tombstones.
  if (cf == Store::kInbox || cf == Store::kIdempotency || cf == Store::kIdemExpiry) {
    o.table_properties_collector_factories.push_back(rocksdb::NewCompactOnDeletionCollectorFactory(10000, 5000));
  }
  if (cf == Store::kMessages) {
    // Expired messages become tombstones whenever their files are rewritten (issue 11).
    std::function<int64_t()> clock = opts.clock;
    if (!clock) clock = [] { return now_ms(); };
    o.compaction_filter_factory = rocks::make_expiry_filter_factory(std::move(clock));
  }
  return o;
}

// Every read call (a point read, a range scan or a seek counts one): what docs/fanout.md
// reports as store reads per sync.
template <class>
inline constexpr bool kAlwaysFalse = false;

}  // namespace

// Per-commit working state, reused across commits (guarded by write_mu_).
struct RocksDbStore::CommitScratch {
  // The batch's view of one read-modify-write key: loaded once from the DB, then updated in
  // place by each op of the batch that touches it, and written once at the end if changed.
  // This is what makes two ops on the same key in one batch compose.
  struct Slot {
    std::string value;
    bool present = false;
    bool dirty = false;
  };
  // Keyed by one Cf byte + the key. Node-based: Slot pointers stay valid as it grows.
  std::unordered_map<std::string, Slot> slots;
  std::vector<Slot*> op_slot;  // per op of the batch: its slot, or null for blind writes
  std::vector<std::pair<const std::string, Slot>*> to_fetch;
  std::vector<rocksdb::ColumnFamilyHandle*> fetch_cfs;
  std::vector<rocksdb::Slice> fetch_keys;
  std::vector<rocksdb::PinnableSlice> fetch_values;
  std::vector<rocksdb::Status> fetch_statuses;
  std::string key, key2, value;  // build buffers

  // The batch's writes, collected so they can be handed to RocksDB sorted by (family, key):
  // memtable skiplist inserts, the main CPU cost of a large commit, reuse their search path
  // between neighbouring keys (measured: ~10-15% less commit CPU on a send-shaped batch).
  // The sort is stable, so writes to one key keep their op order (last wins, as unsorted).
  struct Write {
    size_t key_off = 0, key_len = 0;  // in arena
    const char* ext = nullptr;        // value outside the arena (a frame, a slot), or null
    size_t val_off = 0, val_len = 0;  // value in arena when ext is null
    uint8_t cf = 0;
    bool del = false;
  };
  std::string arena;
  std::vector<Write> writes;

  std::string_view key_of(const Write& w) const { return {arena.data() + w.key_off, w.key_len}; }
  std::string_view value_of(const Write& w) const {
    return w.ext ? std::string_view(w.ext, w.val_len) : std::string_view(arena.data() + w.val_off, w.val_len);
  }
  Write& add(Cf cf, std::string_view k, bool del) {
    Write& w = writes.emplace_back();
    w.cf = cf;
    w.del = del;
    w.key_off = arena.size();
    w.key_len = k.size();
    arena.append(k);
    return w;
  }
  // Copies the value.
  void put(Cf cf, std::string_view k, std::string_view v) {
    Write& w = add(cf, k, false);
    w.val_off = arena.size();
    w.val_len = v.size();
    arena.append(v);
  }
  // References a value that outlives the commit (the caller's Batch, a slot).
  void put_ref(Cf cf, std::string_view k, std::string_view v) {
    Write& w = add(cf, k, false);
    w.ext = v.data();
    w.val_len = v.size();
  }
  void del(Cf cf, std::string_view k) { add(cf, k, true); }

  Slot* want(Cf cf, const std::string& k) {
    std::string mk;
    mk.reserve(k.size() + 1);
    mk.push_back(static_cast<char>(cf));
    mk.append(k);
    auto [it, inserted] = slots.try_emplace(std::move(mk));
    if (inserted) to_fetch.push_back(&*it);
    return &it->second;
  }

  void reset() {
    // A giant batch must not pin its bucket array forever.
    if (slots.bucket_count() > 65536) {
      slots = {};
    } else {
      slots.clear();
    }
    op_slot.clear();
    to_fetch.clear();
    writes.clear();
    arena.clear();
    if (arena.capacity() > (size_t{4} << 20)) arena.shrink_to_fit();
  }
};

RocksDbStore::RocksDbStore() : scratch_(std::make_unique<CommitScratch>()) {}

const char* RocksDbStore::cf_name(Cf cf) {
  switch (cf) {
    case kAccounts: return "accounts";
    case kTokens: return "tokens";
    case kConversations: return "conversations";
    case kUserIndex: return "user_index";
    case kMessages: return "messages";
    case kCursors: return "cursors";
    case kInbox: return "inbox";
    case kReceipts: return "receipts";
    case kIdempotency: return "idempotency";
    case kIdemExpiry: return "idempotency_expiry";
    case kDeviceKeys: return "device_keys";
    case kPrekeys: return "prekeys";
    case kMedia: return "media";
    case kMsgExpiry: return "message_expiry";
    case kReports: return "reports";
    case kCfCount: break;
  }
  return "?";
}

Result<std::unique_ptr<RocksDbStore>> RocksDbStore::open(const std::string& dir, const RocksDbOptions& opts) {
  std::unique_ptr<RocksDbStore> store(new RocksDbStore());
  (void)reads_counter();  // listed in /metrics from the start, at 0
  store->cache_ = rocksdb::NewLRUCache(std::max<size_t>(opts.block_cache_mb, 1) << 20);

  const size_t wb = std::max<size_t>(opts.write_buffer_mb, 1) << 20;
  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = opts.create_if_missing;
  db_opts.create_missing_column_families = true;
  // Every commit reaches the WAL file (the OS) before Write() returns: a crashed process
  // loses nothing even without sync; sync adds the fsync that survives power loss.
  db_opts.manual_wal_flush = false;
  db_opts.max_background_jobs = 4;
  db_opts.bytes_per_sync = 1 << 20;
  db_opts.wal_bytes_per_sync = 1 << 20;
  // All memtables together stay within a few write buffers...
  db_opts.db_write_buffer_size = 4 * wb;
  // ...and rarely-written families (accounts, conversations) get flushed once the WAL grows,
  // instead of pinning old WAL files forever.
  db_opts.max_total_wal_size = 8 * wb;
  db_opts.keep_log_file_num = 4;
  db_opts.max_log_file_size = 16 << 20;
  // An obsolete WAL file is deleted, never recycled or archived: erase_expired() relies on
  // it (a recycled file would keep old records until overwritten). These are the defaults,
  // stated so that nobody turns them on without seeing why.
  db_opts.recycle_log_file_num = 0;
  db_opts.WAL_ttl_seconds = 0;
  db_opts.WAL_size_limit_MB = 0;

  // RocksDB refuses to open unless every existing family is named: keep unknown ones (from a
  // newer version, say) open but unused.
  std::vector<std::string> existing;
  if (!rocksdb::DB::ListColumnFamilies(db_opts, dir, &existing).ok()) existing.clear();

  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  descs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (uint8_t i = 0; i < kCfCount; ++i) {
    auto cf = static_cast<Cf>(i);
    descs.emplace_back(cf_name(cf), cf_options(cf, opts, store->cache_));
  }
  for (const std::string& name : existing) {
    bool known = std::any_of(descs.begin(), descs.end(), [&](const auto& d) { return d.name == name; });
    if (!known) descs.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }

  rocksdb::DB* raw = nullptr;
  rocksdb::Status st = rocksdb::DB::Open(db_opts, dir, descs, &store->handles_, &raw);
  if (!st.ok()) {
    assert(raw == nullptr);
    return rocks_error("open", st);
  }
  store->db_.reset(raw);
  assert(store->handles_.size() == descs.size());
  for (uint8_t i = 0; i < kCfCount; ++i) store->cf_[i] = store->handles_[1 + i];
  return store;
}

RocksDbStore::~RocksDbStore() {
  if (!db_) return;
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    rocksdb::Status st = db_->DestroyColumnFamilyHandle(h);
    if (!st.ok()) spdlog::warn("store=rocksdb event=destroy_cf_handle_failed status=\"{}\"", st.ToString());
  }
  handles_.clear();
  rocksdb::Status st = db_->Close();
  if (!st.ok()) spdlog::warn("store=rocksdb event=close_failed status=\"{}\"", st.ToString());
  db_.reset();
}

Result<void> RocksDbStore::commit(const Batch& batch, bool sync) {
  if (batch.empty()) return {};
  std::lock_guard lock(write_mu_);
  CommitScratch& s = *scratch_;
  s.reset();
  s.op_slot.reserve(batch.ops.size());

  // Pass 1: validate every op and register the keys read-modify-write ops need, so one
  // MultiGet fetches them all. Nothing is written if any op is invalid.
  size_t var_bytes = 0;    // variable-length ids and values, beyond a fixed estimate per op
  size_t frame_bytes = 0;  // message frames: in the WriteBatch, referenced (not copied) before
  for (const Op& op : batch.ops) {
    CommitScratch::Slot* slot = nullptr;
    bool bad = std::visit(
        [&](const auto& o) -> bool {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, PutUser> || std::is_same_v<T, SetLastSeen>) {
            return has_nul(o.user);
          } else if constexpr (std::is_same_v<T, PutDevice>) {
            if (has_nul(o.device.user)) return true;
            rocks::account_device_key(s.key, o.device.user, o.device.device);
            slot = s.want(kAccounts, s.key);
            var_bytes += 2 * o.token_hash.size();
            return false;
          } else if constexpr (std::is_same_v<T, PutConversation>) {
            const Conversation& c = o.conversation;
            if (has_nul(c.id)) return true;
            for (const Member& m : c.members) {
              if (has_nul(m.user)) return true;
              var_bytes += 32 + m.user.size() + c.id.size();
            }
            slot = s.want(kConversations, c.id);
            return false;
          } else if constexpr (std::is_same_v<T, AppendMessage>) {
            var_bytes += o.conversation_id.size() + o.media.size() * (160 + o.conversation_id.size());
            frame_bytes += o.frame.size();
            return has_nul(o.conversation_id);
          } else if constexpr (std::is_same_v<T, PutMedia> || std::is_same_v<T, DeleteMedia> ||
                               std::is_same_v<T, DropPendingMedia>) {
            var_bytes += 4 * (o.id.size() + o.owner.size()) + 64;
            return has_nul(o.owner) || has_nul(o.id);
          } else if constexpr (std::is_same_v<T, MessageExpired>) {
            var_bytes += (o.media.size() + 1) * (96 + o.conversation_id.size());
            return has_nul(o.conversation_id);
          } else if constexpr (std::is_same_v<T, PutIdempotency>) {
            var_bytes += 2 * (o.device.user.size() + o.client_msg_id.size()) + o.record.conversation_id.size();
            return has_nul(o.device.user);
          } else if constexpr (std::is_same_v<T, SetCursor> || std::is_same_v<T, InboxMark> ||
                               std::is_same_v<T, InboxDelete>) {
            var_bytes += o.device.user.size() + o.conversation_id.size();
            return has_nul(o.device.user) || has_nul(o.conversation_id);
          } else if constexpr (std::is_same_v<T, SetReceipt>) {
            var_bytes += o.user.size() + o.conversation_id.size();
            return has_nul(o.user) || has_nul(o.conversation_id);
          } else if constexpr (std::is_same_v<T, PutSubscription>) {
            var_bytes += o.user.size() + o.row.conversation_id.size() + 17;
            return has_nul(o.user) || has_nul(o.row.conversation_id);
          } else if constexpr (std::is_same_v<T, DeleteSubscription>) {
            var_bytes += o.user.size() + o.conversation_id.size();
            return has_nul(o.user) || has_nul(o.conversation_id);
          } else if constexpr (std::is_same_v<T, PutDeviceKeys> || std::is_same_v<T, PutOneTimePrekey> ||
                               std::is_same_v<T, DeleteOneTimePrekey>) {
            var_bytes += 2 * o.device.user.size() + 256;
            return has_nul(o.device.user);
          } else if constexpr (std::is_same_v<T, PutUserRecord> || std::is_same_v<T, DeleteUserRecord>) {
            var_bytes += 2 * o.user.size() + o.name.size();
            return has_nul(o.user);
          } else if constexpr (std::is_same_v<T, PutReport>) {
            return false;
          } else {
            static_assert(kAlwaysFalse<T>, "every Op needs a case");
          }
        },
        op);
    if (bad) return nul_error();
    s.op_slot.push_back(slot);
  }

  if (!s.to_fetch.empty()) {
    const size_t n = s.to_fetch.size();
    s.fetch_cfs.clear();
    s.fetch_keys.clear();
    for (auto* entry : s.to_fetch) {
      const std::string& mk = entry->first;
      s.fetch_cfs.push_back(cf_[static_cast<uint8_t>(mk[0])]);
      s.fetch_keys.emplace_back(mk.data() + 1, mk.size() - 1);
    }
    s.fetch_values.clear();
    s.fetch_values.resize(n);
    s.fetch_statuses.assign(n, rocksdb::Status());
    db_->MultiGet(rocksdb::ReadOptions(), n, s.fetch_cfs.data(), s.fetch_keys.data(), s.fetch_values.data(),
                  s.fetch_statuses.data());
    for (size_t i = 0; i < n; ++i) {
      const rocksdb::Status& st = s.fetch_statuses[i];
      CommitScratch::Slot& slot = s.to_fetch[i]->second;
      if (st.ok()) {
        slot.present = true;
        slot.value.assign(s.fetch_values[i].data(), s.fetch_values[i].size());
      } else if (!st.IsNotFound()) {
        return rocks_error("multiget", st);
      }
    }
    s.fetch_values.clear();  // unpin cache blocks now, not at the next commit
  }
  for (size_t i = 0; i < batch.ops.size(); ++i)
    if (const auto* d = std::get_if<PutDevice>(&batch.ops[i]); d && d->must_be_new && s.op_slot[i]->present)
      return make_error(ErrorCode::kExists, "device already exists");
  // PutConversation::expected, against the record as the batch's earlier ops leave it (the
  // slot holds the stored one until pass 2). A single node's channel changes are serialized on
  // its loop, so this only refuses what a caller computed from an old record.
  std::unordered_map<const CommitScratch::Slot*, const Conversation*> written;
  for (size_t i = 0; i < batch.ops.size(); ++i) {
    const auto* put = std::get_if<PutConversation>(&batch.ops[i]);
    if (!put) continue;
    const CommitScratch::Slot* slot = s.op_slot[i];
    if (put->expected) {
      std::optional<Conversation> stored;
      if (auto it = written.find(slot); it != written.end()) stored = *it->second;
      else if (slot->present) stored = rocks::decode_conversation(slot->value);
      if (!stored || !(*stored == *put->expected))
        return make_error(ErrorCode::kExists, "the conversation changed meanwhile");
    }
    written[slot] = &put->conversation;
  }

  // Pass 2: translate the ops, in order, into writes. Blind writes are recorded directly;
  // read-modify-write ops update their slot. A stored value that fails to decode counts as
  // absent and gets overwritten: refusing would wedge every later batch touching that key.
  s.writes.reserve(2 * batch.ops.size() + s.slots.size());
  s.arena.reserve(64 * batch.ops.size() + var_bytes);
  auto put = [&](Cf cf, std::string_view k, std::string_view v) { s.put(cf, k, v); };
  auto del = [&](Cf cf, std::string_view k) { s.del(cf, k); };
  for (size_t i = 0; i < batch.ops.size(); ++i) {
    CommitScratch::Slot* slot = s.op_slot[i];
    std::visit(
        [&](const auto& o) {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, PutUser>) {
            rocks::account_user_key(s.key, o.user);
            put(kAccounts, s.key, rocks::encode_u64(rocks::bias_i64(o.created_ts)));
          } else if constexpr (std::is_same_v<T, SetLastSeen>) {
            rocks::account_last_seen_key(s.key, o.user);
            put(kAccounts, s.key, rocks::encode_u64(rocks::bias_i64(o.ts)));
          } else if constexpr (std::is_same_v<T, PutDevice>) {
            // The device row remembers its token hash so a new token revokes the old one.
            if (slot->present && slot->value != o.token_hash && !slot->value.empty()) del(kTokens, slot->value);
            if (!o.token_hash.empty()) put(kTokens, o.token_hash, rocks::encode_token_value(o.device));
            slot->value = o.token_hash;
            slot->present = true;
            slot->dirty = true;
          } else if constexpr (std::is_same_v<T, PutConversation>) {
            const Conversation& c = o.conversation;
            // Members dropped from the list entirely lose their index row; former members
            // still listed (left_seq != 0) keep theirs.
            if (slot->present) {
              if (auto old = rocks::decode_conversation(slot->value)) {
                for (const Member& om : old->members) {
                  bool kept = std::any_of(c.members.begin(), c.members.end(),
                                          [&](const Member& m) { return m.user == om.user; });
                  if (!kept) {
                    rocks::user_index_key(s.key, om.user, c.id);
                    del(kUserIndex, s.key);
                  }
                }
              }
            }
            for (const Member& m : c.members) {
              rocks::user_index_key(s.key, m.user, c.id);
              put(kUserIndex, s.key,
                  rocks::encode_user_row(UserConversation{c.id, m.joined_seq, m.left_seq, c.fanout_on_read}));
            }
            rocks::encode_conversation(slot->value, c);
            slot->present = true;
            slot->dirty = true;
          } else if constexpr (std::is_same_v<T, AppendMessage>) {
            rocks::message_key(s.key, o.conversation_id, o.seq);
            s.put_ref(kMessages, s.key, o.frame);
            const std::string expiry = o.expires_at ? rocks::encode_u64(rocks::bias_i64(o.expires_at)) : rocks::encode_u64(0);
            std::string ids;
            for (const std::string& id : o.media) {
              rocks::media_ref_key(s.key, id, o.conversation_id, o.seq);
              put(kMedia, s.key, expiry);
              ids += id;
            }
            if (o.expires_at) {
              rocks::msg_expiry_key(s.key, o.expires_at, o.conversation_id, o.seq);
              put(kMsgExpiry, s.key, ids);
            }
          } else if constexpr (std::is_same_v<T, PutMedia>) {
            const std::string v = rocks::encode_u64_pair(o.size, rocks::bias_i64(o.created_ts));
            rocks::media_owner_key(s.key, o.owner, o.id);
            put(kMedia, s.key, v);
            rocks::media_id_key(s.key, o.id, o.owner);
            put(kMedia, s.key, v);
            rocks::media_pending_key(s.key, o.created_ts, o.id, o.owner);
            put(kMedia, s.key, {});
          } else if constexpr (std::is_same_v<T, DeleteMedia>) {
            rocks::media_owner_key(s.key, o.owner, o.id);
            del(kMedia, s.key);
            rocks::media_id_key(s.key, o.id, o.owner);
            del(kMedia, s.key);
          } else if constexpr (std::is_same_v<T, DropPendingMedia>) {
            rocks::media_pending_key(s.key, o.created_ts, o.id, o.owner);
            del(kMedia, s.key);
          } else if constexpr (std::is_same_v<T, MessageExpired>) {
            rocks::msg_expiry_key(s.key, o.expires_at, o.conversation_id, o.seq);
            del(kMsgExpiry, s.key);
            for (const std::string& id : o.media) {
              rocks::media_ref_key(s.key, id, o.conversation_id, o.seq);
              del(kMedia, s.key);
            }
          } else if constexpr (std::is_same_v<T, PutIdempotency>) {
            rocks::device_key(s.key, o.device, o.client_msg_id);
            rocks::encode_idempotency(s.value, o.record);
            put(kIdempotency, s.key, s.value);
            // Overwrites leave a stale index row behind; purge_expired checks the record.
            rocks::expiry_key(s.key2, o.record.expires_at, s.key);
            put(kIdemExpiry, s.key2, {});
          } else if constexpr (std::is_same_v<T, SetCursor>) {
            rocks::device_key(s.key, o.device, o.conversation_id);
            put(kCursors, s.key, rocks::encode_u64(o.seq));
          } else if constexpr (std::is_same_v<T, InboxMark>) {
            rocks::device_key(s.key, o.device, o.conversation_id);
            put(kInbox, s.key, rocks::encode_u64(o.seq));
          } else if constexpr (std::is_same_v<T, InboxDelete>) {
            rocks::device_key(s.key, o.device, o.conversation_id);
            del(kInbox, s.key);
          } else if constexpr (std::is_same_v<T, SetReceipt>) {
            rocks::receipt_key(s.key, o.conversation_id, o.user);
            put(kReceipts, s.key, rocks::encode_u64_pair(o.delivered, o.read));
          } else if constexpr (std::is_same_v<T, PutSubscription>) {
            rocks::user_index_key(s.key, o.user, o.row.conversation_id);
            put(kUserIndex, s.key, rocks::encode_user_row(o.row));
          } else if constexpr (std::is_same_v<T, DeleteSubscription>) {
            rocks::user_index_key(s.key, o.user, o.conversation_id);
            del(kUserIndex, s.key);
          } else if constexpr (std::is_same_v<T, PutDeviceKeys>) {
            rocks::device_prefix(s.key, o.device);
            rocks::encode_device_keys(s.value, o.keys);
            put(kDeviceKeys, s.key, s.value);
          } else if constexpr (std::is_same_v<T, PutOneTimePrekey>) {
            rocks::device_prefix(s.key, o.device);
            rocks::put_be32(s.key, o.key.id);
            put(kPrekeys, s.key, o.key.public_key);
          } else if constexpr (std::is_same_v<T, DeleteOneTimePrekey>) {
            rocks::device_prefix(s.key, o.device);
            rocks::put_be32(s.key, o.id);
            del(kPrekeys, s.key);
          } else if constexpr (std::is_same_v<T, PutUserRecord>) {
            rocks::account_record_key(s.key, o.user, o.name);
            s.put_ref(kAccounts, s.key, o.value);
          } else if constexpr (std::is_same_v<T, DeleteUserRecord>) {
            rocks::account_record_key(s.key, o.user, o.name);
            del(kAccounts, s.key);
          } else if constexpr (std::is_same_v<T, PutReport>) {
            s.put_ref(kReports, rocks::encode_u64(o.id), o.value);
          } else {
            static_assert(kAlwaysFalse<T>, "every Op needs a case");
          }
        },
        batch.ops[i]);
  }

  // Pass 3: the final state of every changed read-modify-write key, once.
  for (auto& [mk, slot] : s.slots) {
    if (!slot.dirty) continue;
    auto cf = static_cast<Cf>(static_cast<uint8_t>(mk[0]));
    std::string_view k(mk.data() + 1, mk.size() - 1);
    if (slot.present) {
      s.put_ref(cf, k, slot.value);
    } else {
      del(cf, k);
    }
  }
  if (s.writes.empty()) return {};

  std::stable_sort(s.writes.begin(), s.writes.end(), [&](const CommitScratch::Write& a, const CommitScratch::Write& b) {
    if (a.cf != b.cf) return a.cf < b.cf;
    return s.key_of(a) < s.key_of(b);  // bytewise, like RocksDB's default comparator
  });
  rocksdb::WriteBatch wb(64 + 48 * s.writes.size() + s.arena.size() + frame_bytes);
  rocksdb::Status wst;
  for (const CommitScratch::Write& w : s.writes) {
    wst = w.del ? wb.Delete(cf_[w.cf], slice(s.key_of(w))) : wb.Put(cf_[w.cf], slice(s.key_of(w)), slice(s.value_of(w)));
    if (!wst.ok()) return rocks_error("batch", wst);
  }

  rocksdb::WriteOptions wo;
  wo.sync = sync;
  rocksdb::Status st = db_->Write(wo, &wb);
  if (!st.ok()) return rocks_error("write", st);
  return {};
}

Result<void> RocksDbStore::flush() {
  rocksdb::Status st = db_->FlushWAL(/*sync=*/true);
  if (!st.ok()) return rocks_error("flush wal", st);
  rocksdb::FlushOptions fo;
  fo.wait = true;
  st = db_->Flush(fo, std::vector<rocksdb::ColumnFamilyHandle*>(cf_.begin(), cf_.end()));
  if (!st.ok()) return rocks_error("flush", st);
  return {};
}

}  // namespace tern::store
