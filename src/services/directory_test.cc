// Directory: forget_all (a node that may have missed other nodes' invalidations) drops what
// was read from the store and keeps what was put here and not yet committed; conversations()
// reads what it does not hold with one store call.
#include "services/directory.h"

#include <gtest/gtest.h>

#include "store/memory/memory_store.h"

namespace tern::services {
namespace {

store::Conversation group(const std::string& id, std::vector<std::string> users) {
  store::Conversation c;
  c.id = id;
  c.type = store::ConvType::kGroup;
  for (auto& u : users) c.members.push_back(store::Member{u, 1, 0, false});
  return c;
}

TEST(Directory, ForgetAllDropsWhatWasReadAndKeepsWhatWasPutAndNotYetCommitted) {
  store::MemoryStore store;
  store::Batch b;
  b.add(store::PutConversation{group("read", {"alice", "bob"})});
  b.add(store::PutDevice{DeviceRef{"alice", 1}, "h1"});
  ASSERT_TRUE(store.commit(b, true).ok());
  Directory dir(store);
  ASSERT_TRUE(dir.conversation("read").ok());
  ASSERT_TRUE(dir.devices("alice").ok());
  dir.put_conversation(std::make_shared<const store::Conversation>(group("put", {"carol"})));
  dir.put_devices("dave", {1, 2});
  ASSERT_EQ(dir.cached_conversations(), 2u);
  ASSERT_EQ(dir.cached_users(), 2u);

  dir.forget_all();
  EXPECT_EQ(dir.cached_conversation("read"), nullptr) << "read from the store: may be stale, dropped";
  ASSERT_NE(dir.cached_conversation("put"), nullptr) << "put here (pinned): the store may not have it yet";
  EXPECT_EQ(dir.cached_conversation("put")->members.size(), 1u);
  EXPECT_EQ(dir.cached_conversations(), 1u);
  EXPECT_EQ(dir.cached_users(), 1u);
  auto dave = dir.devices("dave");  // the pinned list, not the store's (none)
  ASSERT_TRUE(dave.ok());
  EXPECT_EQ(*dave, (std::vector<uint32_t>{1, 2}));
  // The dropped entries are read again from the store when next needed.
  auto again = dir.conversation("read");
  ASSERT_TRUE(again.ok());
  ASSERT_NE(*again, nullptr);
  EXPECT_EQ((*again)->members.size(), 2u);
}

// The memory store, counting the conversation reads asked of it.
class CountingStore : public store::MemoryStore {
 public:
  Result<std::optional<store::Conversation>> conversation(const std::string& id) override {
    if (!in_batch) ++singles;
    return MemoryStore::conversation(id);
  }
  Result<std::vector<std::optional<store::Conversation>>> conversations_of(const std::vector<std::string>& ids) override {
    ++batches;
    asked.push_back(ids);
    in_batch = true;  // the contract's default answers through conversation()
    auto r = MemoryStore::conversations_of(ids);
    in_batch = false;
    return r;
  }
  bool in_batch = false;
  int singles = 0;
  int batches = 0;
  std::vector<std::vector<std::string>> asked;
};

TEST(Directory, ConversationsReadsWhatItDoesNotHoldInOneStoreCall) {
  CountingStore store;
  store::Batch b;
  for (const char* id : {"g1", "g2", "g3"}) b.add(store::PutConversation{group(id, {"alice", "bob"})});
  ASSERT_TRUE(store.commit(b, true).ok());
  Directory dir(store);
  ASSERT_TRUE(dir.conversation("g2").ok());  // cached by a single read
  dir.put_conversation(std::make_shared<const store::Conversation>(group("g3", {"carol"})));  // put here, newer
  store.singles = 0;

  auto got = dir.conversations({"g1", "g2", "nope", "g3", "g1"});
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 5u);
  EXPECT_EQ(store.singles, 0);
  ASSERT_EQ(store.batches, 1);
  EXPECT_EQ(store.asked[0], (std::vector<std::string>{"g1", "nope", "g1"})) << "only what is not cached";
  ASSERT_NE((*got)[0], nullptr);
  EXPECT_EQ((*got)[0]->id, "g1");
  ASSERT_NE((*got)[1], nullptr);
  EXPECT_EQ((*got)[1]->id, "g2");
  EXPECT_EQ((*got)[2], nullptr) << "no such conversation";
  ASSERT_NE((*got)[3], nullptr);
  EXPECT_EQ((*got)[3]->members.size(), 1u) << "the snapshot put here, not the store's";
  ASSERT_NE((*got)[4], nullptr);
  EXPECT_EQ((*got)[4], (*got)[0]) << "one snapshot cached for both";
  EXPECT_NE(dir.cached_conversation("g1"), nullptr) << "what was read is cached";

  // All held now: no store call at all.
  auto again = dir.conversations({"g1", "g2", "g3"});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(store.batches, 1);
  EXPECT_EQ(store.singles, 0);
}

}  // namespace
}  // namespace tern::services
