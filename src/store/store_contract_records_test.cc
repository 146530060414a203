// The store contract suite, part two: user records, the user listing and reports (issue 12:
// blocks, presence settings, push tokens, account flags, abuse reports). Same harness as
// store_contract_test.cc; compiled into every backend's test binary.
#include "store/store_contract_test.h"

namespace tern::store::contract {
namespace {

using Records = std::vector<std::pair<std::string, std::string>>;

TEST_P(StoreContractTest, UserRecordsPutReadListDelete) {
  EXPECT_EQ(must(store().user_record("alice", "block/bob")), std::nullopt);
  Batch b;
  b.add(PutUserRecord{"alice", "block/bob", "1"});
  b.add(PutUserRecord{"alice", "block/carol", "2"});
  b.add(PutUserRecord{"alice", "presence", "nobody"});
  b.add(PutUserRecord{"alicea", "block/zed", "3"});  // a user whose id extends alice's
  commit(std::move(b));
  EXPECT_EQ(must(store().user_record("alice", "block/bob")), std::optional<std::string>("1"));
  EXPECT_EQ(must(store().user_records("alice", "block/", 100)), (Records{{"block/bob", "1"}, {"block/carol", "2"}}));
  EXPECT_EQ(must(store().user_records("alice", "block/", 1)), (Records{{"block/bob", "1"}}));
  EXPECT_EQ(must(store().user_records("alice", "", 100)).size(), 3u);
  EXPECT_EQ(must(store().user_records("alicea", "", 100)), (Records{{"block/zed", "3"}}));
  commit1(DeleteUserRecord{"alice", "block/bob"});
  commit1(PutUserRecord{"alice", "presence", "everyone"});  // a later put replaces
  reopen();
  EXPECT_EQ(must(store().user_record("alice", "block/bob")), std::nullopt);
  EXPECT_EQ(must(store().user_record("alice", "presence")), std::optional<std::string>("everyone"));
  EXPECT_EQ(must(store().user_records("alice", "block/", 100)), (Records{{"block/carol", "2"}}));
}

TEST_P(StoreContractTest, UserRecordsDoNotShowAsDevicesOrUsers) {
  commit1(PutUser{"alice", 1});
  commit1(PutDevice{{"alice", 1}, "h1"});
  commit1(PutUserRecord{"alice", "push/1", "x"});
  commit1(SetLastSeen{"alice", 5});
  EXPECT_EQ(must(store().devices("alice")), (std::vector<uint32_t>{1}));
  EXPECT_EQ(must(store().users("", 10)), (std::vector<std::string>{"alice"}));
  EXPECT_EQ(must(store().last_seen("alice")), 5);
}

TEST_P(StoreContractTest, UsersAreListedInOrderAndPaged) {
  Batch b;
  for (const char* u : {"carol", "alice", "bob", "alicea", "dave"}) b.add(PutUser{u, 1});
  b.add(PutDevice{{"bob", 1}, "hb"});
  b.add(PutUserRecord{"bob", "x", "y"});
  commit(std::move(b));
  EXPECT_EQ(must(store().users("", 3)), (std::vector<std::string>{"alice", "alicea", "bob"}));
  EXPECT_EQ(must(store().users("bob", 10)), (std::vector<std::string>{"carol", "dave"}));
  EXPECT_EQ(must(store().users("alice", 1)), (std::vector<std::string>{"alicea"}));
  EXPECT_TRUE(must(store().users("dave", 10)).empty());
}

TEST_P(StoreContractTest, ReportsAreKeptByIncreasingId) {
  EXPECT_EQ(must(store().last_report_id()), 0u);
  EXPECT_TRUE(must(store().reports(0, 10)).empty());
  Batch b;
  b.add(PutReport{2, "two"});
  b.add(PutReport{1, std::string("one\0bin", 7)});
  b.add(PutReport{300, "big"});
  commit(std::move(b));
  reopen();
  EXPECT_EQ(must(store().last_report_id()), 300u);
  auto all = must(store().reports(0, 10));
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0], (std::pair<uint64_t, std::string>{1, std::string("one\0bin", 7)}));
  EXPECT_EQ(all[1].first, 2u);
  EXPECT_EQ(all[2].first, 300u);
  auto after = must(store().reports(2, 1));
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].second, "big");
}

TEST_P(StoreContractTest, UserRecordWithNulUserIsRefused) {
  Batch b;
  b.add(PutUserRecord{std::string("a\0b", 3), "n", "v"});
  EXPECT_FALSE(store().commit(b, false).ok());
}

}  // namespace
}  // namespace tern::store::contract
