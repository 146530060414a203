// What a device keeps locally: the outbox of sends not yet acknowledged by `sent`, and the
// per-conversation cursor (the highest seq handed to the application). The Client re-sends
// the outbox after every reconnect and starts each conversation's dedup from its cursor.
//
// LocalStore is the interface; MemoryStore keeps both in memory (a process restart loses
// unsent messages), SqliteStore (sqlite_store.h) in a file (a restart loses nothing).
// Thread-safe: every method may be called from any thread (send() adds on the caller's
// thread so the message is stored before send() returns).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/ids.h"
#include "base/result.h"

namespace tern::client {

struct OutboxEntry {
  std::string client_msg_id;
  std::string conversation_id;
  std::string body_b64;
  std::optional<Seq> reply_to;
  std::optional<int64_t> ttl_seconds;
  int64_t created_ms = 0;
  std::vector<std::string> media;  // media ids named in clear metadata (issue 11)
};

class LocalStore {
 public:
  virtual ~LocalStore() = default;
  // Appends; kExists if the client_msg_id is already pending, kOverloaded when the outbox
  // holds max_entries already (overflow policy: refuse the new send, keep the old ones).
  virtual Result<void> add(const OutboxEntry& entry) = 0;
  // Removes an acknowledged (or permanently refused) send; removing an absent id is fine.
  virtual Result<void> remove(std::string_view client_msg_id) = 0;
  // Pending sends in the order they were added.
  virtual Result<std::vector<OutboxEntry>> pending() const = 0;
  virtual size_t size() const = 0;

  // Cursors only move forward: a lower seq than the stored one is ignored.
  virtual Result<void> save_cursor(std::string_view conversation_id, Seq seq) = 0;
  virtual Result<std::map<std::string, Seq>> cursors() const = 0;
};

class MemoryStore final : public LocalStore {
 public:
  explicit MemoryStore(size_t max_entries = 10'000) : max_entries_(max_entries) {}
  Result<void> add(const OutboxEntry& entry) override;
  Result<void> remove(std::string_view client_msg_id) override;
  Result<std::vector<OutboxEntry>> pending() const override;
  size_t size() const override;
  Result<void> save_cursor(std::string_view conversation_id, Seq seq) override;
  Result<std::map<std::string, Seq>> cursors() const override;

 private:
  const size_t max_entries_;
  mutable std::mutex mu_;
  std::vector<OutboxEntry> entries_;  // insertion order; removal is linear, bounded by max
  std::map<std::string, Seq> cursors_;
};

}  // namespace tern::client
