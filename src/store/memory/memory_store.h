// MemoryStore: the store contract (store/store.h) held in memory. A fake for unit tests of
// the services (no disk, deterministic, with fault injection); it passes the same contract
// suite as the RocksDB backend, so a service test on it tests against the contract. Nothing
// survives the process; reopen() in the contract suite shares the state between instances.
//
// Thread-safety: every method may be called from any thread (one mutex). Owned by the test.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include "store/store.h"

namespace tern::store {

// Not final: a test may derive to hold commit() at a gate (services/sequencer_nodes_test.cc).
class MemoryStore : public Store {
 public:
  struct State;  // the data; shareable so that a "reopened" store sees what was committed

  MemoryStore();
  explicit MemoryStore(std::shared_ptr<State> state);
  ~MemoryStore() override;
  std::shared_ptr<State> state() const { return state_; }

  // Fault injection: while set, every commit fails with `internal` and writes nothing.
  void fail_commits(bool fail);
  // While set, read_messages() and cursor() fail with `unavailable` (a backend that went away).
  void fail_reads(bool fail);
  // Like RedisStore with dense appends (several nodes on one store: give each "node" its own
  // MemoryStore on a shared State): a commit with an AppendMessage that is not its
  // conversation's next seq writes nothing, fails with `unavailable` and names those
  // conversations in behind().
  void dense_appends(bool on) { dense_ = on; }
  Behind behind() const override { return behind_; }
  size_t commits() const;  // successful commits so far
  size_t reads() const;    // read calls so far (a service test can assert a path reads nothing)

  Result<void> commit(const Batch& batch, bool sync) override;
  Result<void> flush() override { return {}; }
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
  // Replaces each message's stored frame with its tombstone (proto::render_expired).
  Result<void> erase_expired(const std::vector<ExpiringMessage>& messages) override;
  Result<std::optional<std::string>> user_record(const std::string& user, const std::string& name) override;
  Result<std::vector<std::pair<std::string, std::string>>> user_records(const std::string& user,
                                                                       const std::string& prefix,
                                                                       size_t limit) override;
  Result<std::vector<std::string>> users(const std::string& after, size_t limit) override;
  Result<std::vector<std::pair<uint64_t, std::string>>> reports(uint64_t after_id, size_t limit) override;
  Result<uint64_t> last_report_id() override;
  // Media marks as a store shared by nodes keeps them (RedisStore), once keep_media_marks()
  // was called on the State's first store (MemoryStores on one State are then two "nodes");
  // nullopt before, as the embedded stores. Expiry by the steady clock.
  void keep_media_marks();
  Result<std::optional<bool>> mark_media(const std::string& id, MediaMark kind, const std::string& holder,
                                         int64_t ttl_ms) override;
  Result<void> unmark_media(const std::string& id, MediaMark kind, const std::string& holder) override;

 private:
  std::shared_ptr<State> state_;
  bool dense_ = false;
  Behind behind_;  // of the last commit (the committing thread only)
};

}  // namespace tern::store
