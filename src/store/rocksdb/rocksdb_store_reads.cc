// RocksDbStore's reads (store/store.h's read contract): point reads and bounded prefix scans
// of the column families that open() made and commit() writes (rocksdb_store.cc), plus the
// expiry sweeps (purge_expired, the expiring messages and their erase).
#include "store/rocksdb/rocksdb_store.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <limits>
#include <map>
#include <string_view>

#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "store/rocksdb/encoding.h"
#include "store/rocksdb/rocksdb_access.h"

namespace tern::store {

using rocks::has_nul;
using namespace rocks_access;

Result<bool> RocksDbStore::user_exists(const std::string& user) {
  if (has_nul(user)) return false;
  std::string key;
  rocks::account_user_key(key, user);
  rocksdb::PinnableSlice v;
  return get_pinned(db_.get(), cf_[kAccounts], key, v);
}

Result<std::vector<uint32_t>> RocksDbStore::devices(const std::string& user) {
  std::vector<uint32_t> out;
  if (has_nul(user)) return out;
  std::string prefix;
  rocks::account_device_prefix(prefix, user);
  auto r = scan(db_.get(), cf_[kAccounts], "device", prefix, prefix, [&](std::string_view tail, std::string_view) {
    if (tail.size() != 4) return Step::kCorrupt;
    out.push_back(rocks::get_be32(tail.data()));
    return Step::kNext;
  });
  if (!r) return r.error();
  return out;
}

Result<std::optional<DeviceRef>> RocksDbStore::find_token(const std::string& token_hash) {
  rocksdb::PinnableSlice v;
  auto found = get_pinned(db_.get(), cf_[kTokens], token_hash, v);
  if (!found) return found.error();
  if (!*found) return std::optional<DeviceRef>{};
  auto device = rocks::decode_token_value(sv(v));
  if (!device) return corrupt_error("token");
  return std::optional<DeviceRef>(std::move(*device));
}

Result<int64_t> RocksDbStore::last_seen(const std::string& user) {
  if (has_nul(user)) return int64_t{0};
  std::string key;
  rocks::account_last_seen_key(key, user);
  rocksdb::PinnableSlice v;
  auto found = get_pinned(db_.get(), cf_[kAccounts], key, v);
  if (!found) return found.error();
  if (!*found) return int64_t{0};
  auto ts = rocks::decode_u64(sv(v));
  if (!ts) return corrupt_error("last_seen");
  return rocks::unbias_i64(*ts);
}

Result<std::optional<Conversation>> RocksDbStore::conversation(const std::string& id) {
  if (has_nul(id)) return std::optional<Conversation>{};
  rocksdb::PinnableSlice v;
  auto found = get_pinned(db_.get(), cf_[kConversations], id, v);
  if (!found) return found.error();
  if (!*found) return std::optional<Conversation>{};
  auto c = rocks::decode_conversation(sv(v));
  if (!c) return corrupt_error("conversation");
  return c;
}

Result<std::vector<UserConversation>> RocksDbStore::user_conversations(const std::string& user) {
  std::vector<UserConversation> out;
  if (has_nul(user)) return out;
  std::string prefix;
  rocks::user_index_prefix(prefix, user);
  auto r = scan(db_.get(), cf_[kUserIndex], "user index", prefix, prefix,
                [&](std::string_view tail, std::string_view value) {
                  auto row = rocks::decode_user_row(tail, value);
                  if (!row) return Step::kCorrupt;
                  out.push_back(std::move(*row));
                  return Step::kNext;
                });
  if (!r) return r.error();
  return out;
}

Result<std::optional<UserConversation>> RocksDbStore::user_conversation(const std::string& user,
                                                                      const std::string& conversation_id) {
  if (has_nul(user) || has_nul(conversation_id)) return std::optional<UserConversation>{};
  std::string key;
  rocks::user_index_key(key, user, conversation_id);
  rocksdb::PinnableSlice v;
  auto found = get_pinned(db_.get(), cf_[kUserIndex], key, v);
  if (!found) return found.error();
  if (!*found) return std::optional<UserConversation>{};
  auto row = rocks::decode_user_row(conversation_id, sv(v));
  if (!row) return corrupt_error("user index");
  return std::optional<UserConversation>{std::move(*row)};
}

Result<std::vector<StoredMessage>> RocksDbStore::read_messages(const std::string& conversation_id, Seq after_seq,
                                                               size_t limit) {
  std::vector<StoredMessage> out;
  if (limit == 0 || after_seq == std::numeric_limits<Seq>::max() || has_nul(conversation_id)) return out;
  out.reserve(std::min<size_t>(limit, 256));
  std::string prefix, start;
  rocks::message_prefix(prefix, conversation_id);
  rocks::message_key(start, conversation_id, after_seq + 1);
  auto r = scan(db_.get(), cf_[kMessages], "message", prefix, start,
                [&](std::string_view tail, std::string_view value) {
                  if (tail.size() != 8) return Step::kCorrupt;
                  out.push_back(StoredMessage{rocks::get_be64(tail.data()), std::string(value)});
                  return out.size() < limit ? Step::kNext : Step::kStop;
                });
  if (!r) return r.error();
  return out;
}

Result<Seq> RocksDbStore::head(const std::string& conversation_id) {
  if (has_nul(conversation_id)) return Seq{0};
  std::string prefix, last;
  rocks::message_prefix(prefix, conversation_id);
  rocks::message_key(last, conversation_id, std::numeric_limits<Seq>::max());
  const rocksdb::Slice lower(prefix);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lower;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf_[kMessages]));
  store_reads().inc();
  it->SeekForPrev(last);
  if (!it->Valid()) {
    if (!it->status().ok()) return rocks_error("iterate", it->status());
    return Seq{0};
  }
  std::string_view key = sv(it->key());
  if (key.size() < prefix.size() || key.substr(0, prefix.size()) != prefix) return Seq{0};
  if (key.size() != prefix.size() + 8) return corrupt_error("message");
  return rocks::get_be64(key.data() + prefix.size());
}

Result<Seq> RocksDbStore::cursor(const DeviceRef& device, const std::string& conversation_id) {
  if (has_nul(device.user) || has_nul(conversation_id)) return Seq{0};
  std::string key;
  rocks::device_key(key, device, conversation_id);
  rocksdb::PinnableSlice v;
  auto found = get_pinned(db_.get(), cf_[kCursors], key, v);
  if (!found) return found.error();
  if (!*found) return Seq{0};
  auto seq = rocks::decode_u64(sv(v));
  if (!seq) return corrupt_error("cursor");
  return *seq;
}

Result<std::vector<Seq>> RocksDbStore::cursors(const DeviceRef& device, const std::vector<std::string>& conversation_ids) {
  std::vector<Seq> out(conversation_ids.size(), 0);
  std::vector<std::string> keys;
  std::vector<size_t> at;  // keys[k] answers out[at[k]]
  for (size_t i = 0; i < conversation_ids.size(); ++i) {
    if (has_nul(device.user) || has_nul(conversation_ids[i])) continue;  // none stored: 0
    rocks::device_key(keys.emplace_back(), device, conversation_ids[i]);
    at.push_back(i);
  }
  if (keys.empty()) return out;
  store_reads().inc();
  std::vector<rocksdb::Slice> slices;
  slices.reserve(keys.size());
  for (const auto& k : keys) slices.push_back(slice(k));
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  db_->MultiGet(rocksdb::ReadOptions(), cf_[kCursors], slices.size(), slices.data(), values.data(), statuses.data());
  for (size_t k = 0; k < keys.size(); ++k) {
    if (statuses[k].IsNotFound()) continue;
    if (!statuses[k].ok()) return rocks_error("multiget", statuses[k]);
    auto seq = rocks::decode_u64(sv(values[k]));
    if (!seq) return corrupt_error("cursor");
    out[at[k]] = *seq;
  }
  return out;
}

Result<std::vector<std::pair<std::string, Seq>>> RocksDbStore::inbox(const DeviceRef& device) {
  std::vector<std::pair<std::string, Seq>> out;
  if (has_nul(device.user)) return out;
  std::string prefix;
  rocks::device_prefix(prefix, device);
  auto r = scan(db_.get(), cf_[kInbox], "inbox", prefix, prefix, [&](std::string_view tail, std::string_view value) {
    auto seq = rocks::decode_u64(value);
    if (!seq) return Step::kCorrupt;
    out.emplace_back(std::string(tail), *seq);
    return Step::kNext;
  });
  if (!r) return r.error();
  return out;
}

Result<std::optional<IdempotencyRecord>> RocksDbStore::idempotency(const DeviceRef& device,
                                                                   const std::string& client_msg_id,
                                                                   int64_t now_ms) {
  if (has_nul(device.user)) return std::optional<IdempotencyRecord>{};
  std::string key;
  rocks::device_key(key, device, client_msg_id);
  rocksdb::PinnableSlice v;
  auto found = get_pinned(db_.get(), cf_[kIdempotency], key, v);
  if (!found) return found.error();
  if (!*found) return std::optional<IdempotencyRecord>{};
  auto record = rocks::decode_idempotency(sv(v));
  if (!record) return corrupt_error("idempotency");
  if (now_ms > record->expires_at) return std::optional<IdempotencyRecord>{};
  return record;
}

Result<std::vector<ReceiptState>> RocksDbStore::receipts(const std::string& conversation_id) {
  std::vector<ReceiptState> out;
  if (has_nul(conversation_id)) return out;
  std::string prefix;
  rocks::receipt_prefix(prefix, conversation_id);
  auto r = scan(db_.get(), cf_[kReceipts], "receipt", prefix, prefix,
                [&](std::string_view tail, std::string_view value) {
                  auto pair = rocks::decode_u64_pair(value);
                  if (!pair) return Step::kCorrupt;
                  out.push_back(ReceiptState{std::string(tail), pair->first, pair->second});
                  return Step::kNext;
                });
  if (!r) return r.error();
  return out;
}

Result<size_t> RocksDbStore::purge_expired(int64_t now_ms) {
  // The expiry index sorts by expires_at: everything below now_ms's key expired before it.
  std::string upper;
  rocks::expiry_prefix(upper, now_ms);
  const rocksdb::Slice upper_slice(upper);
  constexpr size_t kChunk = 1024;  // index rows per locked step; bounds the stall of commits
  size_t purged = 0;
  std::string start;  // "" seeks to the first row
  for (;;) {
    std::lock_guard lock(write_mu_);  // a commit can't refresh a record between check and delete
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf_[kIdemExpiry]));
    rocksdb::WriteBatch wb;
    rocksdb::Status wst;
    size_t rows = 0, chunk_purged = 0;
    bool more = false;
    for (it->Seek(start); it->Valid(); it->Next()) {
      if (rows == kChunk) {
        more = true;
        start = it->key().ToString();
        break;
      }
      ++rows;
      std::string_view key = sv(it->key());
      if (key.size() >= 8) {
        std::string_view primary = key.substr(8);
        rocksdb::PinnableSlice v;
        auto found = get_pinned(db_.get(), cf_[kIdempotency], primary, v);
        if (!found) return found.error();
        if (*found) {
          // The index row may be stale (the record was re-put with a later expiry): only an
          // expired (or undecodable) record goes.
          auto record = rocks::decode_idempotency(sv(v));
          if (!record || record->expires_at < now_ms) {
            if (wst.ok()) wst = wb.Delete(cf_[kIdempotency], slice(primary));
            ++chunk_purged;
          }
        }
      }
      if (wst.ok()) wst = wb.Delete(cf_[kIdemExpiry], slice(key));
    }
    if (!it->status().ok()) return rocks_error("iterate", it->status());
    if (!wst.ok()) return rocks_error("batch", wst);
    if (wb.Count() > 0) {
      // Not synced: a purge lost in a crash is simply redone by the next one.
      rocksdb::Status st = db_->Write(rocksdb::WriteOptions(), &wb);
      if (!st.ok()) return rocks_error("write", st);
    }
    purged += chunk_purged;
    if (!more) break;
  }
  return purged;
}

Result<std::optional<DeviceKeys>> RocksDbStore::device_keys(const DeviceRef& device) {
  if (has_nul(device.user)) return std::optional<DeviceKeys>{};
  std::string key;
  rocks::device_prefix(key, device);
  rocksdb::PinnableSlice v;
  auto found = get_pinned(db_.get(), cf_[kDeviceKeys], key, v);
  if (!found) return found.error();
  if (!*found) return std::optional<DeviceKeys>{};
  auto keys = rocks::decode_device_keys(sv(v));
  if (!keys) return corrupt_error("device keys");
  return keys;
}

Result<std::vector<OneTimePrekey>> RocksDbStore::one_time_prekeys(const DeviceRef& device, size_t limit) {
  std::vector<OneTimePrekey> out;
  if (limit == 0 || has_nul(device.user)) return out;
  std::string prefix;
  rocks::device_prefix(prefix, device);
  auto r = scan(db_.get(), cf_[kPrekeys], "prekey", prefix, prefix, [&](std::string_view tail, std::string_view value) {
    if (tail.size() != 4) return Step::kCorrupt;
    out.push_back(OneTimePrekey{rocks::get_be32(tail.data()), std::string(value)});
    return out.size() < limit ? Step::kNext : Step::kStop;
  });
  if (!r) return r.error();
  return out;
}

// ---- media and message expiry (issue 11) ----

Result<std::vector<MediaOwner>> RocksDbStore::media_owners(const std::string& id) {
  std::vector<MediaOwner> out;
  if (has_nul(id)) return out;
  std::string prefix;
  rocks::media_id_prefix(prefix, id);
  constexpr size_t kMaxOwners = 1024;  // the same ciphertext uploaded by that many users: enough
  auto r = scan(db_.get(), cf_[kMedia], "media", prefix, prefix, [&](std::string_view tail, std::string_view value) {
    auto pair = rocks::decode_u64_pair(value);
    if (!pair) return Step::kCorrupt;
    out.push_back(MediaOwner{std::string(tail), pair->first, rocks::unbias_i64(pair->second)});
    return out.size() < kMaxOwners ? Step::kNext : Step::kStop;
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<std::pair<std::string, uint64_t>>> RocksDbStore::user_media(const std::string& user, size_t limit) {
  std::vector<std::pair<std::string, uint64_t>> out;
  if (has_nul(user) || limit == 0) return out;
  std::string prefix;
  rocks::media_owner_prefix(prefix, user);
  auto r = scan(db_.get(), cf_[kMedia], "media", prefix, prefix, [&](std::string_view tail, std::string_view value) {
    auto pair = rocks::decode_u64_pair(value);
    if (!pair) return Step::kCorrupt;
    out.emplace_back(std::string(tail), pair->first);
    return out.size() < limit ? Step::kNext : Step::kStop;
  });
  if (!r) return r.error();
  return out;
}

Result<std::optional<std::string>> RocksDbStore::user_record(const std::string& user, const std::string& name) {
  if (has_nul(user)) return std::optional<std::string>{};
  std::string key;
  rocks::account_record_key(key, user, name);
  rocksdb::PinnableSlice v;
  auto found = get_pinned(db_.get(), cf_[kAccounts], key, v);
  if (!found) return found.error();
  if (!*found) return std::optional<std::string>{};
  return std::optional<std::string>(std::string(sv(v)));
}

Result<std::vector<std::pair<std::string, std::string>>> RocksDbStore::user_records(const std::string& user,
                                                                                   const std::string& prefix,
                                                                                   size_t limit) {
  std::vector<std::pair<std::string, std::string>> out;
  if (has_nul(user) || limit == 0) return out;
  std::string key;
  rocks::account_record_key(key, user, prefix);
  auto r = scan(db_.get(), cf_[kAccounts], "user record", key, key, [&](std::string_view tail, std::string_view value) {
    out.emplace_back(prefix + std::string(tail), std::string(value));
    return out.size() < limit ? Step::kNext : Step::kStop;
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<MediaRef>> RocksDbStore::media_refs(const std::string& id, size_t limit) {
  std::vector<MediaRef> out;
  if (has_nul(id) || limit == 0) return out;
  std::string prefix;
  rocks::media_ref_prefix(prefix, id);
  auto r = scan(db_.get(), cf_[kMedia], "media ref", prefix, prefix, [&](std::string_view tail, std::string_view value) {
    auto expiry = rocks::decode_u64(value);
    if (!expiry || tail.size() < 10 || tail[tail.size() - 9] != '\0') return Step::kCorrupt;
    MediaRef ref;
    ref.conversation_id.assign(tail.substr(0, tail.size() - 9));
    ref.seq = rocks::get_be64(tail.data() + tail.size() - 8);
    ref.expires_at = *expiry ? rocks::unbias_i64(*expiry) : 0;
    out.push_back(std::move(ref));
    return out.size() < limit ? Step::kNext : Step::kStop;
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<std::string>> RocksDbStore::users(const std::string& after, size_t limit) {
  std::vector<std::string> out;
  if (limit == 0 || has_nul(after)) return out;
  // Every key of a user sorts after "user \0"; start past all of `after`'s keys.
  std::string start = after;
  if (!start.empty()) start.push_back('\1');
  auto r = scan(db_.get(), cf_[kAccounts], "account", "", start, [&](std::string_view key, std::string_view) {
    if (auto u = rocks::user_of_user_key(key)) out.emplace_back(*u);
    return out.size() < limit ? Step::kNext : Step::kStop;
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<PendingMedia>> RocksDbStore::pending_media(int64_t before_ms, size_t limit) {
  std::vector<PendingMedia> out;
  if (limit == 0) return out;
  std::string upper;
  rocks::media_pending_key(upper, before_ms, {}, {});
  const std::string prefix = "p";
  auto r = scan(db_.get(), cf_[kMedia], "pending media", prefix, prefix, [&](std::string_view tail, std::string_view) {
    if (std::string_view(prefix + std::string(tail)) >= upper) return Step::kStop;
    if (tail.size() < 8 + 64 + 1) return Step::kCorrupt;
    out.push_back(PendingMedia{std::string(tail.substr(8, 64)), std::string(tail.substr(72)),
                               rocks::unbias_i64(rocks::get_be64(tail.data()))});
    return out.size() < limit ? Step::kNext : Step::kStop;
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<std::pair<uint64_t, std::string>>> RocksDbStore::reports(uint64_t after_id, size_t limit) {
  std::vector<std::pair<uint64_t, std::string>> out;
  if (limit == 0 || after_id == std::numeric_limits<uint64_t>::max()) return out;
  auto r = scan(db_.get(), cf_[kReports], "report", "", rocks::encode_u64(after_id + 1),
                [&](std::string_view key, std::string_view value) {
                  if (key.size() != 8) return Step::kCorrupt;
                  out.emplace_back(rocks::get_be64(key.data()), std::string(value));
                  return out.size() < limit ? Step::kNext : Step::kStop;
                });
  if (!r) return r.error();
  return out;
}

Result<std::vector<ExpiringMessage>> RocksDbStore::expiring_messages(int64_t now_ms, size_t limit) {
  std::vector<ExpiringMessage> out;
  if (limit == 0) return out;
  // Every row below the key of (now_ms + 1) expired at or before now_ms.
  std::string upper;
  rocks::expiry_prefix(upper, now_ms + 1);
  const rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf_[kMsgExpiry]));
  for (it->SeekToFirst(); it->Valid() && out.size() < limit; it->Next()) {
    ExpiringMessage m;
    if (!rocks::parse_msg_expiry_key(sv(it->key()), m.expires_at, m.conversation_id, m.seq))
      return corrupt_error("message expiry");
    const std::string_view ids = sv(it->value());
    if (ids.size() % 64 != 0) return corrupt_error("message expiry");
    for (size_t i = 0; i < ids.size(); i += 64) m.media.emplace_back(ids.substr(i, 64));
    out.push_back(std::move(m));
  }
  if (!it->status().ok()) return rocks_error("iterate", it->status());
  return out;
}

Result<void> RocksDbStore::erase_expired(const std::vector<ExpiringMessage>& messages) {
  if (messages.empty()) return {};
  // 1. Every memtable to an SST file (the filter turns expired values into tombstones on the
  //    way): afterwards no WAL file is needed by any family, and RocksDB deletes them.
  if (auto r = flush(); !r) return r.error();
  // 2. Each conversation's expired seqs as one key range, compacted to the bottom level
  //    through the filter; the files that held the old values are deleted afterwards.
  std::map<std::string, std::pair<Seq, Seq>> ranges;
  for (const auto& m : messages) {
    auto [it, inserted] = ranges.try_emplace(m.conversation_id, m.seq, m.seq);
    if (!inserted) {
      it->second.first = std::min(it->second.first, m.seq);
      it->second.second = std::max(it->second.second, m.seq);
    }
  }
  rocksdb::CompactRangeOptions cro;
  cro.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  cro.exclusive_manual_compaction = false;
  std::string begin, end;
  for (const auto& [conv, span] : ranges) {
    if (has_nul(conv)) continue;
    rocks::message_key(begin, conv, span.first);
    rocks::message_key(end, conv, span.second + 1);
    const rocksdb::Slice b(begin), e(end);
    rocksdb::Status st = db_->CompactRange(cro, cf_[kMessages], &b, &e);
    if (!st.ok()) return rocks_error("compact range", st);
  }
  return {};
}

Result<uint64_t> RocksDbStore::last_report_id() {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf_[kReports]));
  it->SeekToLast();
  if (!it->Valid()) {
    if (!it->status().ok()) return rocks_error("iterate", it->status());
    return uint64_t{0};
  }
  if (it->key().size() != 8) return corrupt_error("report");
  return rocks::get_be64(it->key().data());
}

}  // namespace tern::store
