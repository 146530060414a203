// LocalStore in a SQLite file, so that a client process restart loses no unacknowledged
// send and repeats no message to the application. WAL journal with synchronous=NORMAL:
// a write survives the process being killed (it is in the OS), not necessarily a power
// loss; no call waits on an fsync except at WAL checkpoints, which keeps the calls made on
// the SDK's io thread short. Several processes may open the same file (busy timeout 2 s).
// Thread-safe (one connection guarded by a mutex).
#pragma once
#include <memory>
#include <optional>
#include <vector>
#include <string>

#include "client/local_store.h"
#include "client/types.h"

struct sqlite3;

namespace tern::client {

class SqliteStore final : public LocalStore {
 public:
  // Creates the file (mode 0600) and its tables if needed.
  static Result<std::unique_ptr<SqliteStore>> open(const std::string& path, size_t max_entries = 10'000);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Result<void> add(const OutboxEntry& entry) override;
  Result<void> remove(std::string_view client_msg_id) override;
  Result<std::vector<OutboxEntry>> pending() const override;
  size_t size() const override;
  Result<void> save_cursor(std::string_view conversation_id, Seq seq) override;
  Result<std::map<std::string, Seq>> cursors() const override;

  // The device's own history with end-to-end encryption (docs/crypto.md): every message as
  // handed to the application, decrypted (a later ratchet step cannot open an old ciphertext
  // again, so this table is the only readable copy). Protected by the file's mode 0600.
  // Saving the same (conversation, seq) again replaces it.
  Result<void> save_message(const Message& m);
  Result<std::optional<Message>> message(std::string_view conversation_id, Seq seq) const;
  // Messages with seq > after, increasing, at most `limit`.
  Result<std::vector<Message>> messages(std::string_view conversation_id, Seq after, size_t limit) const;
  Result<void> remove_message(std::string_view conversation_id, Seq seq);
  // Deletes the messages whose expires_at is at or before now_ms (disappearing messages that
  // expired while no client ran).
  Result<void> remove_expired(int64_t now_ms);
  // History for a newly linked device (history_transfer.h): the `limit` encrypted
  // conversations ("d-", "g-") with the latest messages here, most recent first; and a
  // conversation's last `limit` messages that are readable (a body or a system message) and
  // not expired at now_ms, increasing.
  Result<std::vector<std::string>> recent_conversations(size_t limit) const;
  Result<std::vector<Message>> last_messages(std::string_view conversation_id, size_t limit, int64_t now_ms) const;
  // Small named values of the client (e.g. that history was asked for); nullopt when unset.
  Result<std::optional<std::string>> setting(std::string_view name) const;
  Result<void> set_setting(std::string_view name, std::string_view value);
  // Contacts whose identity key changed and who were not verified since (`tern verify`).
  Result<void> note_identity_change(std::string_view user);
  Result<void> clear_identity_change(std::string_view user);
  Result<std::vector<std::string>> identity_changes() const;

 private:
  SqliteStore(sqlite3* db, size_t max_entries) : db_(db), max_entries_(max_entries) {}
  Result<void> exec(const char* sql) const;
  size_t size_locked() const;
  Result<void> change_user_row(const char* sql, std::string_view user);  // one statement, ?1 = user

  sqlite3* db_;
  const size_t max_entries_;
  mutable std::mutex mu_;
};

}  // namespace tern::client
