// RocksDbStore: the embedded backend of the store contract (store/store.h), one RocksDB
// database with a column family per table (layout in store/rocksdb/encoding.h).
//
// Ownership: the server's composition root owns it (unique_ptr); the destructor closes the
// database cleanly and must not race any other call.
// Thread-safety: every method may be called from any thread. commit() and purge_expired()
// take an internal writer mutex: the contract's single writer thread never waits on it,
// and it keeps the two read-modify-write ops (PutConversation, PutDevice) exact even if two
// threads did write.
//
// Cost model, for callers on the hot path:
//   commit        one WriteBatch, one WAL append (+ one fsync with sync). Every op of the
//                 message path is a blind put or delete and reads nothing; PutConversation
//                 and PutDevice cost one batched MultiGet for all their keys together.
//   point reads   user_exists, find_token, last_seen, conversation, cursor, idempotency,
//                 device_keys: one Get each (bloom-filtered); conversation() also decodes all members.
//   head          one seek-for-prev.
//   range reads   devices, user_conversations, inbox, receipts, read_messages,
//                 one_time_prekeys: one bounded
//                 iterator over exactly the rows returned.
//   purge_expired walks the expiry index up to now_ms in chunks, releasing the writer
//                 mutex between chunks so commits are not stalled behind a large purge.
#pragma once
#include <array>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/store.h"

namespace rocksdb {
class Cache;
class ColumnFamilyHandle;
class DB;
}  // namespace rocksdb

namespace tern::store {

struct RocksDbOptions {
  bool create_if_missing = true;
  size_t block_cache_mb = 128;  // one LRU cache shared by every column family
  size_t write_buffer_mb = 32;  // memtable size of the message log; smaller tables get a quarter
  // The wall clock (ms) the message log's expiry filter compares expires_at with; null = the
  // system clock. Injectable for tests.
  std::function<int64_t()> clock;
};

class RocksDbStore final : public Store {
 public:
  // Opens (or creates) the database in `dir`. Fails with kInternal (never throws or aborts)
  // when the path is unusable, locked by another process, or not a RocksDB database.
  static Result<std::unique_ptr<RocksDbStore>> open(const std::string& dir, const RocksDbOptions& opts = {});

  ~RocksDbStore() override;
  RocksDbStore(const RocksDbStore&) = delete;
  RocksDbStore& operator=(const RocksDbStore&) = delete;

  // Ids containing '\0' are rejected with kInvalidArgument (wire-v1 ids never hold one, and
  // keys rely on it); the whole batch is refused then, nothing is written.
  Result<void> commit(const Batch& batch, bool sync) override;
  Result<void> flush() override;

  Result<bool> user_exists(const std::string& user) override;
  Result<std::vector<uint32_t>> devices(const std::string& user) override;
  Result<std::optional<DeviceRef>> find_token(const std::string& token_hash) override;
  Result<int64_t> last_seen(const std::string& user) override;

  Result<std::optional<Conversation>> conversation(const std::string& id) override;
  Result<std::vector<UserConversation>> user_conversations(const std::string& user) override;
  Result<std::optional<UserConversation>> user_conversation(const std::string& user,
                                                            const std::string& conversation_id) override;

  Result<std::vector<StoredMessage>> read_messages(const std::string& conversation_id, Seq after_seq,
                                                   size_t limit) override;
  Result<Seq> head(const std::string& conversation_id) override;

  Result<Seq> cursor(const DeviceRef& device, const std::string& conversation_id) override;
  // One MultiGet: one read call, the block lookups batched.
  Result<std::vector<Seq>> cursors(const DeviceRef& device, const std::vector<std::string>& conversation_ids) override;
  Result<std::vector<std::pair<std::string, Seq>>> inbox(const DeviceRef& device) override;
  Result<std::optional<IdempotencyRecord>> idempotency(const DeviceRef& device, const std::string& client_msg_id,
                                                       int64_t now_ms) override;
  Result<std::vector<ReceiptState>> receipts(const std::string& conversation_id) override;

  Result<size_t> purge_expired(int64_t now_ms) override;

  Result<std::optional<DeviceKeys>> device_keys(const DeviceRef& device) override;
  Result<std::vector<OneTimePrekey>> one_time_prekeys(const DeviceRef& device, size_t limit) override;
  Result<std::vector<MediaOwner>> media_owners(const std::string& id) override;
  Result<std::vector<std::pair<std::string, uint64_t>>> user_media(const std::string& user, size_t limit) override;
  Result<std::vector<MediaRef>> media_refs(const std::string& id, size_t limit) override;
  Result<std::vector<PendingMedia>> pending_media(int64_t before_ms, size_t limit) override;
  Result<std::vector<ExpiringMessage>> expiring_messages(int64_t now_ms, size_t limit) override;
  // Flushes every column family (so no WAL file still holds the old values: RocksDB deletes
  // WAL files no family needs, and WAL recycling is off), then compacts the messages' key
  // ranges down to the bottom level through the expiry filter (expiry_filter.h), which
  // rewrites them as tombstones; the replaced SST files are deleted by RocksDB. Costs one
  // flush of every memtable and one compaction of the files overlapping those ranges.
  Result<void> erase_expired(const std::vector<ExpiringMessage>& messages) override;
  Result<std::optional<std::string>> user_record(const std::string& user, const std::string& name) override;
  Result<std::vector<std::pair<std::string, std::string>>> user_records(const std::string& user,
                                                                       const std::string& prefix,
                                                                       size_t limit) override;
  Result<std::vector<std::string>> users(const std::string& after, size_t limit) override;
  Result<std::vector<std::pair<uint64_t, std::string>>> reports(uint64_t after_id, size_t limit) override;
  Result<uint64_t> last_report_id() override;

  // Column families, in the order they are opened; the names are part of the on-disk format.
  enum Cf : uint8_t {
    kAccounts,
    kTokens,
    kConversations,
    kUserIndex,
    kMessages,
    kCursors,
    kInbox,
    kReceipts,
    kIdempotency,
    kIdemExpiry,
    kDeviceKeys,
    kPrekeys,
    kMedia,
    kMsgExpiry,
    kReports,
    kCfCount
  };
  static const char* cf_name(Cf cf);

 private:
  struct CommitScratch;

  RocksDbStore();

  std::shared_ptr<rocksdb::Cache> cache_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // every opened family, incl. default and unknown ones
  std::array<rocksdb::ColumnFamilyHandle*, kCfCount> cf_{};

  std::mutex write_mu_;
  std::unique_ptr<CommitScratch> scratch_;  // guarded by write_mu_; reused so commits don't reallocate
};

}  // namespace tern::store
