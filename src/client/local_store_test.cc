#include "client/local_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "client/sqlite_store.h"

namespace tern::client {
namespace {

OutboxEntry entry(std::string id, std::string conv = "c1") {
  return OutboxEntry{std::move(id), std::move(conv), "aGk=", std::nullopt, std::nullopt, 1, {}};
}

std::string temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "tern-client-XXXXXX").string();
  char* p = mkdtemp(tmpl.data());
  EXPECT_NE(p, nullptr);
  return tmpl;
}

// The same contract for both implementations.
void exercise(LocalStore& s, size_t max) {
  ASSERT_TRUE(s.add(entry("a")).ok());
  OutboxEntry b = entry("b", "c2");
  b.reply_to = 7;
  b.ttl_seconds = 60;
  ASSERT_TRUE(s.add(b).ok());
  ASSERT_TRUE(s.add(entry("c")).ok());
  auto dup = s.add(entry("b"));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, ErrorCode::kExists);
  EXPECT_EQ(s.size(), 3u);
  ASSERT_TRUE(s.remove("a").ok());
  ASSERT_TRUE(s.remove("absent").ok());
  auto p = s.pending();
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[0].client_msg_id, "b");
  EXPECT_EQ((*p)[0].conversation_id, "c2");
  EXPECT_EQ((*p)[0].reply_to, 7u);
  EXPECT_EQ((*p)[0].ttl_seconds, 60);
  EXPECT_EQ((*p)[1].client_msg_id, "c");
  EXPECT_FALSE((*p)[1].reply_to.has_value());
  for (size_t i = s.size(); i < max; ++i) ASSERT_TRUE(s.add(entry("f" + std::to_string(i))).ok());
  auto full = s.add(entry("overflow"));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, ErrorCode::kOverloaded);

  ASSERT_TRUE(s.save_cursor("c1", 5).ok());
  ASSERT_TRUE(s.save_cursor("c1", 3).ok());  // never backwards
  ASSERT_TRUE(s.save_cursor("c2", 9).ok());
  auto cur = s.cursors();
  ASSERT_TRUE(cur.ok());
  EXPECT_EQ(cur->at("c1"), 5u);
  EXPECT_EQ(cur->at("c2"), 9u);
}

TEST(LocalStore, Memory) {
  MemoryStore s(8);
  exercise(s, 8);
}

TEST(LocalStore, SqliteContractAndPersistenceAcrossReopen) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/outbox.sqlite";
  {
    auto s = SqliteStore::open(path, 8);
    ASSERT_TRUE(s.ok()) << s.error().message;
    exercise(**s, 8);
  }
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  {
    // A new process, as far as the store can tell: everything pending is still there.
    auto s = SqliteStore::open(path, 8);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ((*s)->size(), 8u);
    auto p = (*s)->pending();
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->front().client_msg_id, "b");
    EXPECT_EQ(p->front().reply_to, 7u);
    EXPECT_EQ((*s)->cursors()->at("c1"), 5u);
    ASSERT_TRUE((*s)->remove("b").ok());
  }
  {
    auto s = SqliteStore::open(path, 8);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ((*s)->size(), 7u);
    EXPECT_EQ((*s)->pending()->front().client_msg_id, "c");
  }
  std::filesystem::remove_all(dir);
}

// The end-to-end history and identity-change rows (docs/crypto.md): binary bodies kept exact,
// pages in seq order, replaced on a second save, expired ones removed, kept across reopen.
TEST(LocalStore, SqliteHistoryAndIdentityChanges) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/state.sqlite";
  {
    auto s = SqliteStore::open(path);
    ASSERT_TRUE(s.ok());
    for (Seq seq : {3u, 1u, 2u}) {
      Message m;
      m.conversation_id = "d-1";
      m.seq = seq;
      m.sender = "bob";
      m.sender_device = 2;
      m.ts = 1000 + static_cast<int64_t>(seq);
      m.body = std::string("b\0dy", 4) + std::to_string(seq);
      if (seq == 2) m.expires_at = 5'000;
      if (seq == 3) m.reply_to = 1;
      ASSERT_TRUE((*s)->save_message(m).ok());
    }
    Message other;
    other.conversation_id = "g-2";
    other.seq = 1;
    other.system_json = R"({"action":"add"})";
    ASSERT_TRUE((*s)->save_message(other).ok());
    ASSERT_TRUE((*s)->note_identity_change("bob").ok());
    ASSERT_TRUE((*s)->note_identity_change("bob").ok());
    ASSERT_TRUE((*s)->note_identity_change("amy").ok());
  }
  auto s = SqliteStore::open(path);
  ASSERT_TRUE(s.ok());
  auto page = (*s)->messages("d-1", 1, 10);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].seq, 2u);
  EXPECT_EQ((*page)[0].body, std::string("b\0dy2", 5));
  EXPECT_EQ((*page)[0].expires_at, 5'000);
  EXPECT_EQ((*page)[1].reply_to, 1u);
  EXPECT_EQ((*page)[1].sender_device, 2u);
  EXPECT_EQ((*s)->message("g-2", 1)->value().system_json, R"({"action":"add"})");
  EXPECT_FALSE((*s)->message("g-2", 2)->has_value());
  ASSERT_TRUE((*s)->remove_expired(4'999).ok());
  EXPECT_EQ((*s)->messages("d-1", 0, 10)->size(), 3u);
  ASSERT_TRUE((*s)->remove_expired(5'000).ok());
  EXPECT_EQ((*s)->messages("d-1", 0, 10)->size(), 2u);
  ASSERT_TRUE((*s)->remove_message("d-1", 1).ok());
  EXPECT_EQ((*s)->messages("d-1", 0, 1)->front().seq, 3u);
  EXPECT_EQ(*(*s)->identity_changes(), (std::vector<std::string>{"amy", "bob"}));
  ASSERT_TRUE((*s)->clear_identity_change("bob").ok());
  EXPECT_EQ(*(*s)->identity_changes(), std::vector<std::string>{"amy"});
  std::filesystem::remove_all(dir);
}

TEST(LocalStore, SqliteRefusesAnUnopenablePath) {
  auto s = SqliteStore::open("/nonexistent-dir/x/y.sqlite");
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace tern::client
