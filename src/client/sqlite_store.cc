#include "client/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

namespace tern::client {
namespace {

Error db_error(sqlite3* db, std::string_view what) {
  return make_error(ErrorCode::kInternal, "sqlite " + std::string(what) + ": " + sqlite3_errmsg(db));
}

// One prepared statement, finalized on every path out of the caller.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK && s_; }
  sqlite3_stmt* get() { return s_; }
  void text(int i, std::string_view v) { sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  void integer(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }
  void null(int i) { sqlite3_bind_null(s_, i); }
  void blob(int i, std::string_view v) { sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  std::string col_blob(int i) {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(s_, i));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_, i))) : std::string();
  }
  std::optional<int64_t> col_opt(int i) {
    if (sqlite3_column_type(s_, i) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int64(s_, i);
  }
  std::string col_text(int i) {
    const auto* p = sqlite3_column_text(s_, i);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(s_, i))) : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

}  // namespace

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path, size_t max_entries) {
  // Create the file with 0600 ourselves: SQLite would use the umask (often 0644).
  if (int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600); fd >= 0) ::close(fd);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    Error e = db ? db_error(db, "open") : make_error(ErrorCode::kInternal, "sqlite open failed");
    sqlite3_close(db);
    return e;
  }
  sqlite3_busy_timeout(db, 2000);
  std::unique_ptr<SqliteStore> store(new SqliteStore(db, max_entries));
  const char* schema =
      "PRAGMA journal_mode=WAL;"
      "PRAGMA synchronous=NORMAL;"
      "CREATE TABLE IF NOT EXISTS outbox("
      " ord INTEGER PRIMARY KEY AUTOINCREMENT,"
      " client_msg_id TEXT NOT NULL UNIQUE,"
      " conversation_id TEXT NOT NULL,"
      " body_b64 TEXT NOT NULL,"
      " reply_to INTEGER,"
      " ttl INTEGER,"
      " created_ms INTEGER NOT NULL);"
      "CREATE TABLE IF NOT EXISTS cursors(conversation_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
      "CREATE TABLE IF NOT EXISTS messages(conversation_id TEXT NOT NULL, seq INTEGER NOT NULL,"
      " sender TEXT NOT NULL, sender_device INTEGER NOT NULL, ts INTEGER NOT NULL, body BLOB NOT NULL,"
      " reply_to INTEGER, expires_at INTEGER, system_json TEXT, PRIMARY KEY(conversation_id, seq));"
      "CREATE TABLE IF NOT EXISTS identity_changes(user TEXT PRIMARY KEY);"
      "CREATE TABLE IF NOT EXISTS settings(name TEXT PRIMARY KEY, value TEXT NOT NULL);";
  if (auto r = store->exec(schema); !r) return r.error();
  // Media ids (issue 11), space-separated; a column added to files made before it existed.
  if (!store->exec("SELECT media FROM outbox LIMIT 0;"))
    if (auto r = store->exec("ALTER TABLE outbox ADD COLUMN media TEXT;"); !r) return r.error();
  return store;
}

SqliteStore::~SqliteStore() { sqlite3_close(db_); }

Result<void> SqliteStore::exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown";
    sqlite3_free(err);
    return make_error(ErrorCode::kInternal, "sqlite: " + msg);
  }
  return {};
}

size_t SqliteStore::size_locked() const {
  Stmt s(db_, "SELECT COUNT(*) FROM outbox");
  if (!s.ok() || sqlite3_step(s.get()) != SQLITE_ROW) return 0;
  return static_cast<size_t>(sqlite3_column_int64(s.get(), 0));
}

size_t SqliteStore::size() const {
  std::lock_guard lock(mu_);
  return size_locked();
}

Result<void> SqliteStore::add(const OutboxEntry& e) {
  std::lock_guard lock(mu_);
  if (size_locked() >= max_entries_) return make_error(ErrorCode::kOverloaded, "outbox full");
  Stmt s(db_,
         "INSERT INTO outbox(client_msg_id, conversation_id, body_b64, reply_to, ttl, created_ms, media)"
         " VALUES(?,?,?,?,?,?,?)");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, e.client_msg_id);
  s.text(2, e.conversation_id);
  s.text(3, e.body_b64);
  if (e.reply_to) s.integer(4, static_cast<int64_t>(*e.reply_to)); else s.null(4);
  if (e.ttl_seconds) s.integer(5, *e.ttl_seconds); else s.null(5);
  s.integer(6, e.created_ms);
  std::string media;
  for (const auto& id : e.media) media += (media.empty() ? "" : " ") + id;
  if (media.empty()) s.null(7); else s.text(7, media);
  const int rc = sqlite3_step(s.get());
  if (rc == SQLITE_CONSTRAINT) return make_error(ErrorCode::kExists, "client_msg_id already pending");
  if (rc != SQLITE_DONE) return db_error(db_, "insert");
  return {};
}

Result<void> SqliteStore::remove(std::string_view client_msg_id) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "DELETE FROM outbox WHERE client_msg_id = ?");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, client_msg_id);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return db_error(db_, "delete");
  return {};
}

Result<std::vector<OutboxEntry>> SqliteStore::pending() const {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "SELECT client_msg_id, conversation_id, body_b64, reply_to, ttl, created_ms, media FROM outbox ORDER BY ord");
  if (!s.ok()) return db_error(db_, "prepare");
  std::vector<OutboxEntry> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    OutboxEntry e;
    e.client_msg_id = s.col_text(0);
    e.conversation_id = s.col_text(1);
    e.body_b64 = s.col_text(2);
    if (sqlite3_column_type(s.get(), 3) != SQLITE_NULL) e.reply_to = static_cast<Seq>(sqlite3_column_int64(s.get(), 3));
    if (sqlite3_column_type(s.get(), 4) != SQLITE_NULL) e.ttl_seconds = sqlite3_column_int64(s.get(), 4);
    e.created_ms = sqlite3_column_int64(s.get(), 5);
    if (sqlite3_column_type(s.get(), 6) != SQLITE_NULL) {
      const std::string all = s.col_text(6);
      std::string_view ids = all;
      while (!ids.empty()) {
        const size_t sp = ids.find(' ');
        e.media.emplace_back(ids.substr(0, sp));
        ids.remove_prefix(sp == std::string_view::npos ? ids.size() : sp + 1);
      }
    }
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return db_error(db_, "select");
  return out;
}

Result<void> SqliteStore::save_cursor(std::string_view conversation_id, Seq seq) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "INSERT INTO cursors(conversation_id, seq) VALUES(?1, ?2)"
         " ON CONFLICT(conversation_id) DO UPDATE SET seq = MAX(seq, excluded.seq)");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, conversation_id);
  s.integer(2, static_cast<int64_t>(seq));
  if (sqlite3_step(s.get()) != SQLITE_DONE) return db_error(db_, "upsert cursor");
  return {};
}

Result<std::map<std::string, Seq>> SqliteStore::cursors() const {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT conversation_id, seq FROM cursors");
  if (!s.ok()) return db_error(db_, "prepare");
  std::map<std::string, Seq> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW)
    out[s.col_text(0)] = static_cast<Seq>(sqlite3_column_int64(s.get(), 1));
  if (rc != SQLITE_DONE) return db_error(db_, "select cursors");
  return out;
}

namespace {
#define TERN_MESSAGE_COLUMNS \
  "SELECT conversation_id, seq, sender, sender_device, ts, body, reply_to, expires_at, system_json FROM messages"
Message message_row(Stmt& s) {
  Message m;
  m.conversation_id = s.col_text(0);
  m.seq = static_cast<Seq>(sqlite3_column_int64(s.get(), 1));
  m.sender = s.col_text(2);
  m.sender_device = static_cast<uint32_t>(sqlite3_column_int64(s.get(), 3));
  m.ts = sqlite3_column_int64(s.get(), 4);
  m.body = s.col_blob(5);
  if (auto r = s.col_opt(6)) m.reply_to = static_cast<Seq>(*r);
  m.expires_at = s.col_opt(7);
  if (sqlite3_column_type(s.get(), 8) != SQLITE_NULL) m.system_json = s.col_text(8);
  return m;
}
}  // namespace

Result<void> SqliteStore::save_message(const Message& m) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "INSERT OR REPLACE INTO messages(conversation_id, seq, sender, sender_device, ts, body, reply_to, expires_at,"
         " system_json) VALUES(?,?,?,?,?,?,?,?,?)");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, m.conversation_id);
  s.integer(2, static_cast<int64_t>(m.seq));
  s.text(3, m.sender);
  s.integer(4, m.sender_device);
  s.integer(5, m.ts);
  s.blob(6, m.body);
  if (m.reply_to) s.integer(7, static_cast<int64_t>(*m.reply_to)); else s.null(7);
  if (m.expires_at) s.integer(8, *m.expires_at); else s.null(8);
  if (m.system_json) s.text(9, *m.system_json); else s.null(9);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return db_error(db_, "insert message");
  return {};
}

Result<std::optional<Message>> SqliteStore::message(std::string_view conversation_id, Seq seq) const {
  std::lock_guard lock(mu_);
  Stmt s(db_, TERN_MESSAGE_COLUMNS " WHERE conversation_id = ? AND seq = ?");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, conversation_id);
  s.integer(2, static_cast<int64_t>(seq));
  const int rc = sqlite3_step(s.get());
  if (rc == SQLITE_DONE) return std::optional<Message>();
  if (rc != SQLITE_ROW) return db_error(db_, "select message");
  return std::optional<Message>(message_row(s));
}

Result<std::vector<Message>> SqliteStore::messages(std::string_view conversation_id, Seq after, size_t limit) const {
  std::lock_guard lock(mu_);
  Stmt s(db_, TERN_MESSAGE_COLUMNS " WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, conversation_id);
  s.integer(2, static_cast<int64_t>(after));
  s.integer(3, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
  std::vector<Message> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(message_row(s));
  if (rc != SQLITE_DONE) return db_error(db_, "select messages");
  return out;
}

Result<void> SqliteStore::remove_message(std::string_view conversation_id, Seq seq) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "DELETE FROM messages WHERE conversation_id = ? AND seq = ?");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, conversation_id);
  s.integer(2, static_cast<int64_t>(seq));
  if (sqlite3_step(s.get()) != SQLITE_DONE) return db_error(db_, "delete message");
  return {};
}

Result<void> SqliteStore::remove_expired(int64_t now_ms) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "DELETE FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?");
  if (!s.ok()) return db_error(db_, "prepare");
  s.integer(1, now_ms);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return db_error(db_, "delete expired");
  return {};
}

Result<void> SqliteStore::change_user_row(const char* sql, std::string_view user) {
  std::lock_guard lock(mu_);
  Stmt s(db_, sql);
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, user);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return db_error(db_, "identity change");
  return {};
}

Result<void> SqliteStore::note_identity_change(std::string_view user) {
  return change_user_row("INSERT OR IGNORE INTO identity_changes(user) VALUES(?)", user);
}

Result<void> SqliteStore::clear_identity_change(std::string_view user) {
  return change_user_row("DELETE FROM identity_changes WHERE user = ?", user);
}

Result<std::vector<std::string>> SqliteStore::identity_changes() const {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT user FROM identity_changes ORDER BY user");
  if (!s.ok()) return db_error(db_, "prepare");
  std::vector<std::string> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(s.col_text(0));
  if (rc != SQLITE_DONE) return db_error(db_, "select identity changes");
  return out;
}

Result<std::vector<std::string>> SqliteStore::recent_conversations(size_t limit) const {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "SELECT conversation_id FROM messages WHERE conversation_id LIKE 'd-%' OR conversation_id LIKE 'g-%'"
         " GROUP BY conversation_id ORDER BY MAX(ts) DESC, conversation_id LIMIT ?");
  if (!s.ok()) return db_error(db_, "prepare");
  s.integer(1, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
  std::vector<std::string> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(s.col_text(0));
  if (rc != SQLITE_DONE) return db_error(db_, "select recent conversations");
  return out;
}

Result<std::vector<Message>> SqliteStore::last_messages(std::string_view conversation_id, size_t limit,
                                                        int64_t now_ms) const {
  std::lock_guard lock(mu_);
  Stmt s(db_, TERN_MESSAGE_COLUMNS
         " WHERE conversation_id = ? AND (length(body) > 0 OR system_json IS NOT NULL)"
         " AND (expires_at IS NULL OR expires_at > ?) ORDER BY seq DESC LIMIT ?");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, conversation_id);
  s.integer(2, now_ms);
  s.integer(3, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
  std::vector<Message> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(message_row(s));
  if (rc != SQLITE_DONE) return db_error(db_, "select last messages");
  std::reverse(out.begin(), out.end());
  return out;
}

Result<std::optional<std::string>> SqliteStore::setting(std::string_view name) const {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT value FROM settings WHERE name = ?");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, name);
  const int rc = sqlite3_step(s.get());
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return db_error(db_, "select setting");
  return std::optional<std::string>(s.col_text(0));
}

Result<void> SqliteStore::set_setting(std::string_view name, std::string_view value) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "INSERT OR REPLACE INTO settings(name, value) VALUES(?, ?)");
  if (!s.ok()) return db_error(db_, "prepare");
  s.text(1, name);
  s.text(2, value);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return db_error(db_, "save setting");
  return {};
}

}  // namespace tern::client
