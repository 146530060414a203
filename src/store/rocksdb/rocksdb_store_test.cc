// RocksDbStore: the store contract suite on a fresh temporary directory per test, plus what
// only the embedded backend can be asked (bad paths, locks, corrupt records, NUL ids).
#include "store/rocksdb/rocksdb_store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "store/rocksdb/encoding.h"
#include "store/store_contract_test.h"

namespace tern::store {
namespace {

// A directory under /tmp, removed with everything in it when this goes away.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/tern-store-XXXXXX";
    char* p = ::mkdtemp(tmpl);
    EXPECT_NE(p, nullptr);
    if (p) path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string db() const { return path_ + "/db"; }

 private:
  std::string path_;
};

RocksDbOptions small_options() {
  RocksDbOptions o;
  o.block_cache_mb = 8;
  o.write_buffer_mb = 4;
  return o;
}

class RocksDbHarness final : public contract::StoreHarness {
 public:
  Result<std::unique_ptr<Store>> open() override {
    auto s = RocksDbStore::open(dir_.db(), small_options());
    if (!s) return s.error();
    return std::unique_ptr<Store>(std::move(s).value());
  }

 private:
  TempDir dir_;
};

using contract::StoreContractTest;

INSTANTIATE_TEST_SUITE_P(RocksDb, StoreContractTest,
                         ::testing::Values(contract::StoreHarnessFactory{
                             "rocksdb", [] { return std::make_unique<RocksDbHarness>(); }}),
                         [](const auto& info) { return std::to_string(info.index); });

// Test lists, failure messages and ctest names show the backend, not the parameter's bytes.
TEST(StoreContractNames, TheParameterPrintsAsItsName) {
  EXPECT_EQ(::testing::PrintToString(contract::StoreHarnessFactory{"rocksdb", {}}), "rocksdb");
}

// Writes raw rows into a closed store's database, as a disk fault or a bug might.
void poke_raw(const std::string& dir, RocksDbStore::Cf cf, const std::string& key, const std::string& value) {
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, descs, &handles, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::ColumnFamilyHandle* target = nullptr;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == RocksDbStore::cf_name(cf)) target = handles[i];
  }
  ASSERT_NE(target, nullptr);
  EXPECT_TRUE(db->Put(rocksdb::WriteOptions(), target, key, value).ok());
  for (auto* h : handles) EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  EXPECT_TRUE(db->Close().ok());
}

TEST(RocksDbStoreTest, OpeningARegularFileFails) {
  TempDir dir;
  std::string file = dir.path() + "/plain";
  std::ofstream(file) << "not a database";
  auto s = RocksDbStore::open(file, small_options());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kInternal);
  EXPECT_FALSE(s.error().message.empty());
}

TEST(RocksDbStoreTest, OpeningAMissingDatabaseWithoutCreateFails) {
  TempDir dir;
  RocksDbOptions o = small_options();
  o.create_if_missing = false;
  auto s = RocksDbStore::open(dir.db(), o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kInternal);
}

TEST(RocksDbStoreTest, OpeningADirectoryOfGarbageFails) {
  TempDir dir;
  std::filesystem::create_directories(dir.db());
  std::ofstream(dir.db() + "/CURRENT") << "MANIFEST-000042\n";  // points at nothing
  auto s = RocksDbStore::open(dir.db(), small_options());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kInternal);
}

TEST(RocksDbStoreTest, SecondOpenOfTheSameDirectoryFailsWhileTheFirstIsOpen) {
  TempDir dir;
  auto first = RocksDbStore::open(dir.db(), small_options());
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = RocksDbStore::open(dir.db(), small_options());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kInternal);
  first.value().reset();
  auto third = RocksDbStore::open(dir.db(), small_options());
  EXPECT_TRUE(third.ok()) << third.error().message;
}

TEST(RocksDbStoreTest, UnknownColumnFamiliesDoNotPreventOpening) {
  TempDir dir;
  {
    auto s = RocksDbStore::open(dir.db(), small_options());
    ASSERT_TRUE(s.ok());
    Batch b;
    b.add(AppendMessage{"c1", 1, "x"});
    ASSERT_TRUE(s.value()->commit(b, true).ok());
  }
  {
    rocksdb::Options o;
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(o, dir.db(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, dir.db(), descs, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::ColumnFamilyHandle* extra = nullptr;
    ASSERT_TRUE(db->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), "from_the_future", &extra).ok());
    handles.push_back(extra);
    for (auto* h : handles) EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    EXPECT_TRUE(db->Close().ok());
  }
  auto s = RocksDbStore::open(dir.db(), small_options());
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto h = s.value()->head("c1");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h.value(), 1u);
}

TEST(RocksDbStoreTest, NulInIdsRejectsTheWholeBatch) {
  TempDir dir;
  auto opened = RocksDbStore::open(dir.db(), small_options());
  ASSERT_TRUE(opened.ok());
  Store& s = *opened.value();
  const std::string bad("c\0x", 3);

  Batch b;
  b.add(AppendMessage{"good", 1, "x"});
  b.add(AppendMessage{bad, 1, "x"});
  auto r = s.commit(b, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.head("good").value(), 0u);  // the valid op was not applied either

  for (Op op : std::vector<Op>{PutUser{bad, 1}, PutDevice{{bad, 1}, "t"}, SetLastSeen{bad, 1},
                               PutConversation{Conversation{"g", ConvType::kGroup, "", 0, {Member{bad, 1, 0, false}}}},
                               PutIdempotency{{bad, 1}, "m", {}}, SetCursor{{"a", 1}, bad, 1},
                               SetReceipt{"c", bad, 1, 1}, InboxMark{{bad, 1}, "c", 1}, InboxDelete{{"a", 1}, bad}}) {
    Batch one;
    one.add(op);
    auto rr = s.commit(one, false);
    ASSERT_FALSE(rr.ok()) << op.index();
    EXPECT_EQ(rr.error().code, ErrorCode::kInvalidArgument);
  }
  EXPECT_EQ(s.conversation("g").value(), std::nullopt);
  EXPECT_EQ(s.find_token("t").value(), std::nullopt);

  // Reads with such ids find nothing instead of matching another key's prefix.
  Batch a;
  a.add(AppendMessage{"c", 1, "x"});
  ASSERT_TRUE(s.commit(a, false).ok());
  std::string sneaky("c\0\0\0\0\0\0\0", 8);  // "c" + separator + 6 high bytes of seq 1
  EXPECT_TRUE(s.read_messages(sneaky, 0, 10).value().empty());
  EXPECT_EQ(s.head(sneaky).value(), 0u);
  EXPECT_FALSE(s.user_exists(bad).value());
  EXPECT_TRUE(s.devices(bad).value().empty());
  EXPECT_TRUE(s.inbox({bad, 1}).value().empty());
  EXPECT_TRUE(s.receipts(bad).value().empty());
  EXPECT_TRUE(s.user_conversations(bad).value().empty());
  EXPECT_EQ(s.cursor({"a", 1}, bad).value(), 0u);
  EXPECT_EQ(s.last_seen(bad).value(), 0);
  EXPECT_EQ(s.conversation(bad).value(), std::nullopt);
  EXPECT_EQ(s.idempotency({bad, 1}, "m", 0).value(), std::nullopt);
}

TEST(RocksDbStoreTest, CorruptRecordsAreErrorsNotCrashes) {
  TempDir dir;
  {
    auto s = RocksDbStore::open(dir.db(), small_options());
    ASSERT_TRUE(s.ok());
  }
  std::string k;
  rocks::message_key(k, "c1", 1);
  poke_raw(dir.db(), RocksDbStore::kMessages, k, "fine");
  rocks::message_prefix(k, "c1");
  poke_raw(dir.db(), RocksDbStore::kMessages, k + "short", "bad key");  // after seq 1's key
  poke_raw(dir.db(), RocksDbStore::kConversations, "g1", "\x01\x01garbage");
  poke_raw(dir.db(), RocksDbStore::kTokens, "tok", "ab");
  rocks::device_key(k, {"bob", 1}, "c1");
  poke_raw(dir.db(), RocksDbStore::kCursors, k, "1234567");
  poke_raw(dir.db(), RocksDbStore::kInbox, k, "");
  rocks::receipt_key(k, "c1", "bob");
  poke_raw(dir.db(), RocksDbStore::kReceipts, k, "12345678");
  rocks::device_key(k, {"bob", 1}, "m1");
  poke_raw(dir.db(), RocksDbStore::kIdempotency, k, "short");
  rocks::user_index_key(k, "bob", "g1");
  poke_raw(dir.db(), RocksDbStore::kUserIndex, k, "x");

  auto opened = RocksDbStore::open(dir.db(), small_options());
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  Store& s = *opened.value();
  auto expect_internal = [](const auto& r, const char* what) {
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.error().code, ErrorCode::kInternal) << what;
  };
  expect_internal(s.read_messages("c1", 0, 10), "read_messages");
  expect_internal(s.head("c1"), "head");
  expect_internal(s.conversation("g1"), "conversation");
  expect_internal(s.find_token("tok"), "find_token");
  expect_internal(s.cursor({"bob", 1}, "c1"), "cursor");
  expect_internal(s.inbox({"bob", 1}), "inbox");
  expect_internal(s.receipts("c1"), "receipts");
  expect_internal(s.idempotency({"bob", 1}, "m1", 0), "idempotency");
  expect_internal(s.user_conversations("bob"), "user_conversations");

  // The writer repairs rather than wedges: blind ops overwrite undecodable values.
  Batch b;
  b.add(SetCursor{{"bob", 1}, "c1", 4});
  b.add(InboxMark{{"bob", 1}, "c1", 4});
  b.add(SetReceipt{"c1", "bob", 2, 1});
  b.add(PutConversation{Conversation{"g1", ConvType::kGroup, "g", 1, {Member{"bob", 1, 0, true}}}});
  b.add(PutIdempotency{{"bob", 1}, "m1", IdempotencyRecord{"c1", 3, 5, 100}});
  ASSERT_TRUE(s.commit(b, true).ok());
  EXPECT_EQ(s.cursor({"bob", 1}, "c1").value(), 4u);
  ASSERT_EQ(s.inbox({"bob", 1}).value().size(), 1u);
  ASSERT_EQ(s.receipts("c1").value().size(), 1u);
  EXPECT_EQ(s.receipts("c1").value()[0].delivered, 2u);
  EXPECT_TRUE(s.conversation("g1").value().has_value());
  EXPECT_EQ(s.user_conversations("bob").value().size(), 1u);
  ASSERT_TRUE(s.idempotency({"bob", 1}, "m1", 0).value().has_value());
}

TEST(RocksDbStoreTest, FlushAndReopenAfterManyMemtables) {
  TempDir dir;
  RocksDbOptions o = small_options();
  o.write_buffer_mb = 1;
  {
    auto s = RocksDbStore::open(dir.db(), o);
    ASSERT_TRUE(s.ok());
    std::string body(4096, 'b');
    for (Seq batch = 0; batch < 20; ++batch) {
      Batch b;
      for (Seq i = 1; i <= 100; ++i) b.add(AppendMessage{"c" + std::to_string(batch % 3), batch * 100 + i, body});
      ASSERT_TRUE(s.value()->commit(b, false).ok());
    }
    ASSERT_TRUE(s.value()->flush().ok());
  }
  auto s = RocksDbStore::open(dir.db(), o);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s.value()->head("c0").value(), 1900u);
  EXPECT_EQ(s.value()->head("c1").value(), 2000u);
  EXPECT_EQ(s.value()->read_messages("c2", 0, 1000).value().size(), 600u);
}


// ---- issue 11: expired messages leave the disk ----

// True if any file under dir holds `needle` (the WAL, SST, MANIFEST, LOG files, all of them).
bool any_file_contains(const std::string& dir, const std::string& needle) {
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.find(needle) != std::string::npos) return true;
  }
  return false;
}

std::string canary_frame(const std::string& conv, Seq seq, int64_t expires_at, const std::string& body) {
  return R"({"type":"message","conversation_id":")" + conv + R"(","seq":)" + std::to_string(seq) +
         R"(,"sender":"alice","sender_device":1,"ts":1,"body":")" + body + "\"" +
         (expires_at ? R"(,"expires_at":)" + std::to_string(expires_at) : std::string()) + "}";
}

class ExpiryEraseTest : public ::testing::TestWithParam<bool> {};

// Param: whether the message was flushed to an SST file before it expired (else it is still
// in the memtable and the WAL).
TEST_P(ExpiryEraseTest, ExpiredPayloadIsGoneFromEveryFile) {
  TempDir dir;
  auto clock = std::make_shared<std::atomic<int64_t>>(1000);
  RocksDbOptions o = small_options();
  o.clock = [clock] { return clock->load(); };
  auto opened = RocksDbStore::open(dir.db(), o);
  ASSERT_TRUE(opened.ok());
  auto& store = **opened;
  const std::string canary = "CANARYxQ7mZp3vLk9TfR2";
  const std::string keep = "KEEPERxB4nWq8sYd1HjU6";
  Batch b;
  b.add(AppendMessage{"conv", 1, canary_frame("conv", 1, 5000, canary), 5000, {}});
  b.add(AppendMessage{"conv", 2, canary_frame("conv", 2, 0, keep), 0, {}});
  b.add(PutUser{"alice", 1});  // another family with data in the same WAL
  ASSERT_TRUE(store.commit(b, true).ok());
  if (GetParam()) {
    ASSERT_TRUE(store.flush().ok());
  }
  ASSERT_TRUE(any_file_contains(dir.db(), canary)) << "the canary must be on disk before it expires";

  // Not yet due: nothing to erase.
  auto due = store.expiring_messages(clock->load(), 100);
  ASSERT_TRUE(due.ok());
  EXPECT_TRUE(due->empty());

  clock->store(5000);
  due = store.expiring_messages(clock->load(), 100);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 1u);
  ASSERT_TRUE(store.erase_expired(*due).ok());
  Batch done;
  done.add(MessageExpired{"conv", 1, 5000, {}});
  ASSERT_TRUE(store.commit(done, true).ok());

  EXPECT_FALSE(any_file_contains(dir.db(), canary));
  auto msgs = store.read_messages("conv", 0, 10);
  ASSERT_TRUE(msgs.ok());
  ASSERT_EQ(msgs->size(), 2u);
  EXPECT_NE((*msgs)[0].frame.find(R"("expired":true)"), std::string::npos);
  EXPECT_NE((*msgs)[1].frame.find(keep), std::string::npos);  // the unexpired one is intact
  auto exists = store.user_exists("alice");
  ASSERT_TRUE(exists.ok());
  EXPECT_TRUE(*exists);
}

INSTANTIATE_TEST_SUITE_P(Store, ExpiryEraseTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? std::string("Flushed") : std::string("InMemtable"); });

}  // namespace
}  // namespace tern::store
