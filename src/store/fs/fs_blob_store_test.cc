#include "store/fs/fs_blob_store.h"

#include <dirent.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace tern::store {
namespace {

namespace fs = std::filesystem;

class FsBlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tern-blob-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    auto s = FsBlobStore::open_at(root_.string());
    ASSERT_TRUE(s.ok());
    store_ = std::move(*s);
  }
  void TearDown() override { fs::remove_all(root_); }

  size_t files_under(const fs::path& p) {
    size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(p))
      if (e.is_regular_file()) ++n;
    return n;
  }

  static std::string sha256_hex(std::string_view s) {
    unsigned char d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, reinterpret_cast<const unsigned char*>(s.data()), s.size());
    std::string out;
    for (unsigned char c : d) {
      static constexpr char kDigits[] = "0123456789abcdef";
      out += kDigits[c >> 4];
      out += kDigits[c & 15];
    }
    return out;
  }

  fs::path root_;
  std::unique_ptr<FsBlobStore> store_;
};

TEST_F(FsBlobStoreTest, CommitPublishesUnderContentHash) {
  auto w = store_->create();
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->write("hello ").ok());
  ASSERT_TRUE((*w)->write("world").ok());
  EXPECT_EQ((*w)->size(), 11u);
  // Not visible before commit: only the temporary exists.
  EXPECT_EQ(files_under(root_ / "blobs"), 0u);
  EXPECT_EQ(files_under(root_ / "tmp"), 1u);
  auto info = (*w)->commit();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->id, sha256_hex("hello world"));
  EXPECT_EQ(info->size, 11u);
  EXPECT_TRUE(valid_media_id(info->id));
  EXPECT_EQ(files_under(root_ / "tmp"), 0u);

  auto st = store_->stat(info->id);
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(st->has_value());
  EXPECT_EQ((*st)->size, 11u);

  auto r = store_->open(info->id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->size(), 11u);
  char buf[16] = {};
  auto n = (*r)->read(6, buf, sizeof buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "world");
  n = (*r)->read(11, buf, sizeof buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

TEST_F(FsBlobStoreTest, AbandonedWriterLeavesNothing) {
  {
    auto w = store_->create();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->write(std::string(100000, 'x')).ok());
  }
  EXPECT_EQ(files_under(root_), 0u);
}

TEST_F(FsBlobStoreTest, SameContentTwiceIsOneBlob) {
  std::string id;
  for (int i = 0; i < 2; ++i) {
    auto w = store_->create();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->write("same").ok());
    auto info = (*w)->commit();
    ASSERT_TRUE(info.ok());
    id = info->id;
  }
  EXPECT_EQ(files_under(root_), 1u);
  auto l = store_->list("", 10);
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ((*l)[0].id, id);
}

TEST_F(FsBlobStoreTest, RemoveAndUnknownIds) {
  auto w = store_->create();
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->write("bye").ok());
  auto info = (*w)->commit();
  ASSERT_TRUE(info.ok());
  auto r = store_->open(info->id);  // an open reader survives the removal
  ASSERT_TRUE(r.ok());
  auto removed = store_->remove(info->id);
  ASSERT_TRUE(removed.ok());
  EXPECT_TRUE(*removed);
  removed = store_->remove(info->id);
  ASSERT_TRUE(removed.ok());
  EXPECT_FALSE(*removed);
  char buf[3];
  auto n = (*r)->read(0, buf, 3);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "bye");
  EXPECT_EQ(store_->open(info->id).error().code, ErrorCode::kNotFound);
  // Ids that are not content hashes never reach the filesystem.
  EXPECT_EQ(store_->open("../../etc/passwd").error().code, ErrorCode::kNotFound);
  auto st = store_->stat("zz");
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->has_value());
}

TEST_F(FsBlobStoreTest, ListPagesInIdOrder) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    auto w = store_->create();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->write("blob " + std::to_string(i)).ok());
    auto info = (*w)->commit();
    ASSERT_TRUE(info.ok());
    ids.push_back(info->id);
  }
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> seen;
  std::string after;
  for (int page = 0; page < 10; ++page) {
    auto l = store_->list(after, 3);
    ASSERT_TRUE(l.ok());
    if (l->empty()) break;
    for (const auto& b : *l) seen.push_back(b.id);
    after = l->back().id;
  }
  EXPECT_EQ(seen, ids);
}

TEST_F(FsBlobStoreTest, StaleTemporariesAreRemoved) {
  auto w = store_->create();
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->write("partial").ok());
  // A live writer's temporary is newer than the cut-off: kept.
  auto n = store_->remove_stale_temporaries(0);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  n = store_->remove_stale_temporaries(INT64_MAX);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(files_under(root_), 0u);
}

// Two nodes sharing one root (ternd --media-dir): each removes only its own temporaries, and a
// blob published through one is read through the other.
TEST_F(FsBlobStoreTest, NodesSharingARootKeepTheirTemporariesApart) {
  auto a = FsBlobStore::open_at(root_.string(), "node-a");
  auto b = FsBlobStore::open_at(root_.string(), "node-b");
  ASSERT_TRUE(a.ok() && b.ok());
  auto wa = (*a)->create();
  auto wb = (*b)->create();
  ASSERT_TRUE(wa.ok() && wb.ok());
  ASSERT_TRUE((*wa)->write("a's upload in progress").ok());
  ASSERT_TRUE((*wb)->write("b's upload").ok());
  EXPECT_EQ(files_under(root_ / "tmp" / "node-a"), 1u);
  EXPECT_EQ(files_under(root_ / "tmp" / "node-b"), 1u);
  // Node b restarts and clears everything of its own; a's upload is untouched.
  auto n = (*b)->remove_stale_temporaries(INT64_MAX);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(files_under(root_ / "tmp" / "node-a"), 1u);
  auto info = (*wa)->commit();
  ASSERT_TRUE(info.ok());
  auto seen = (*b)->stat(info->id);
  ASSERT_TRUE(seen.ok());
  ASSERT_TRUE(seen->has_value());
  EXPECT_EQ((*seen)->size, std::string("a's upload in progress").size());
}

TEST_F(FsBlobStoreTest, ANodeNameThatIsNotAPlainDirectoryNameIsRefused) {
  const std::vector<std::string> bad_names{"..", "a/b", std::string(65, 'x'), "tab\t"};
  for (const std::string& bad : bad_names) {
    auto s = FsBlobStore::open_at(root_.string(), bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);
  }
}

// ---- partials (resumable uploads) ----

constexpr const char* kUid = "0123456789abcdef0123456789abcdef";
constexpr const char* kUid2 = "fedcba9876543210fedcba9876543210";

// Two nodes on one root: an upload begun through one is continued and published through the
// other, whole and under its content id, and is gone afterwards.
TEST_F(FsBlobStoreTest, APartialBegunThroughOneNodeIsFinishedThroughAnother) {
  auto a = FsBlobStore::open_at(root_.string(), "node-a");
  auto b = FsBlobStore::open_at(root_.string(), "node-b");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->create_partial(kUid, "alice", 11).ok());
  {
    auto w = (*a)->open_partial(kUid, "alice");
    ASSERT_TRUE(w.ok());
    EXPECT_EQ((*w)->size(), 0u);
    EXPECT_EQ((*w)->announced(), 11u);
    ASSERT_TRUE((*w)->write("hello ").ok());
  }  // the connection dropped: the bytes stay
  auto st = (*b)->stat_partial(kUid, "alice");
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(st->has_value());
  EXPECT_EQ((*st)->offset, 6u);
  EXPECT_EQ((*st)->announced, 11u);
  auto w = (*b)->open_partial(kUid, "alice");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->size(), 6u);
  ASSERT_TRUE((*w)->write("world").ok());
  auto info = (*w)->commit();
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->id, sha256_hex("hello world"));
  EXPECT_EQ(info->size, 11u);
  auto r = (*a)->open(info->id);
  ASSERT_TRUE(r.ok());
  std::string back(11, '\0');
  ASSERT_TRUE((*r)->read(0, back.data(), back.size()).ok());
  EXPECT_EQ(back, "hello world");
  auto gone = (*a)->stat_partial(kUid, "alice");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
  auto again = (*a)->open_partial(kUid, "alice");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(files_under(root_ / "uploads"), 0u);
  // Restarting clears temporaries, never partials.
  ASSERT_TRUE((*a)->create_partial(kUid2, "alice", 5).ok());
  ASSERT_TRUE((*a)->remove_stale_temporaries(INT64_MAX).ok());
  ASSERT_TRUE((*b)->remove_stale_temporaries(INT64_MAX).ok());
  auto kept = (*b)->stat_partial(kUid2, "alice");
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(kept->has_value());
}

// One writer at a time, across processes too (flock): the second is refused until the first
// has gone; an incomplete partial does not publish.
TEST_F(FsBlobStoreTest, APartialHasOneWriterAtATime) {
  auto other = FsBlobStore::open_at(root_.string(), "node-b");
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(store_->create_partial(kUid, "alice", 4).ok());
  auto first = store_->open_partial(kUid, "alice");
  ASSERT_TRUE(first.ok());
  auto second = (*other)->open_partial(kUid, "alice");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kInvalidArgument);
  ASSERT_TRUE((*first)->write("ab").ok());
  auto early = (*first)->commit();
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().code, ErrorCode::kInvalidArgument);
  first->reset();
  second = (*other)->open_partial(kUid, "alice");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->size(), 2u);
  // All bytes there but not storable (the server overloaded, a disk error): given up, gone.
  ASSERT_TRUE((*second)->write("cd").ok());
  (*second)->abandon();
  second->reset();
  auto st = store_->stat_partial(kUid, "alice");
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->has_value());
  EXPECT_EQ(files_under(root_ / "uploads"), 0u);
}

TEST_F(FsBlobStoreTest, APartialIsItsOwnersOnlyAndItsIdIsPlainHex) {
  ASSERT_TRUE(store_->create_partial(kUid, "alice", 4).ok());
  auto taken = store_->create_partial(kUid, "alice", 4);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.error().code, ErrorCode::kExists);
  auto st = store_->stat_partial(kUid, "bob");
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->has_value());
  auto w = store_->open_partial(kUid, "bob");
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code, ErrorCode::kNotFound);
  for (const std::string bad : {"../../blobs/x", "0123456789ABCDEF0123456789ABCDEF", "0123", ""}) {
    auto o = store_->open_partial(bad, "alice");
    ASSERT_FALSE(o.ok()) << bad;
    EXPECT_EQ(o.error().code, ErrorCode::kNotFound) << bad;
    auto c = store_->create_partial(bad, "alice", 4);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(store_->create_partial(kUid2, "Not A User", 4).ok());
}

TEST_F(FsBlobStoreTest, PartialsAreCountedByOwnerAndInAll) {
  ASSERT_TRUE(store_->create_partial(kUid, "alice", 10).ok());
  ASSERT_TRUE(store_->create_partial(kUid2, "alice", 20).ok());
  ASSERT_TRUE(store_->create_partial("00000000000000000000000000000000", "ali", 30).ok());
  auto alice = store_->partials_of("alice", 100);
  ASSERT_TRUE(alice.ok());
  ASSERT_EQ(alice->size(), 2u);
  EXPECT_EQ((*alice)[0].announced + (*alice)[1].announced, 30u);
  auto ali = store_->partials_of("ali", 100);
  ASSERT_TRUE(ali.ok());
  ASSERT_EQ(ali->size(), 1u);
  EXPECT_EQ((*ali)[0].announced, 30u);
  auto capped = store_->partials_of("alice", 1);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->size(), 1u);
  auto all = store_->count_partials();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, 3u);
}

// Idle partials go with their bytes, unless a writer holds them; a size left without bytes
// (a crash while creating) goes too.
TEST_F(FsBlobStoreTest, IdlePartialsAreRemovedUnlessAWriterHoldsThem) {
  ASSERT_TRUE(store_->create_partial(kUid, "alice", 10).ok());
  ASSERT_TRUE(store_->create_partial(kUid2, "alice", 10).ok());
  auto held = store_->open_partial(kUid2, "alice");
  ASSERT_TRUE(held.ok());
  auto n = store_->remove_idle_partials(0);  // none idle that long
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  n = store_->remove_idle_partials(INT64_MAX);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  auto first = store_->stat_partial(kUid, "alice");
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first->has_value());
  ASSERT_TRUE((*held)->write("still here").ok());
  held->reset();
  n = store_->remove_idle_partials(INT64_MAX);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(files_under(root_ / "uploads"), 0u);

  ASSERT_TRUE(store_->create_partial(kUid, "alice", 10).ok());
  fs::remove(root_ / "uploads" / (std::string(kUid) + ".616c696365"));  // "alice" in hex
  auto st = store_->stat_partial(kUid, "alice");
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->has_value());
  ASSERT_TRUE(store_->remove_idle_partials(INT64_MAX).ok());
  EXPECT_EQ(files_under(root_ / "uploads"), 0u);
}

TEST_F(FsBlobStoreTest, FilesArePrivate) {
  auto w = store_->create();
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->write("p").ok());
  auto info = (*w)->commit();
  ASSERT_TRUE(info.ok());
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "blobs" / info->id.substr(0, 2) / info->id).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

}  // namespace
}  // namespace tern::store
