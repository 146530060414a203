// Directory: forget_all (a node that may have missed other nodes' invalidations) drops what
// was read from the store and keeps what was put here and not yet committed.
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

}  // namespace
}  // namespace tern::services
