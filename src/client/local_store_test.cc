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

TEST(LocalStore, SqliteRefusesAnUnopenablePath) {
  auto s = SqliteStore::open("/nonexistent-dir/x/y.sqlite");
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace tern::client
