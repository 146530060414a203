#include "services/contact_index.h"

#include <gtest/gtest.h>

namespace tern::services {
namespace {

ConversationPtr conv(const std::string& id, std::vector<std::pair<std::string, bool>> members) {
  auto c = std::make_shared<store::Conversation>();
  c->id = id;
  for (auto& [u, active] : members) c->members.push_back(store::Member{u, 1, active ? 0u : 2u, false});
  return c;
}

TEST(ContactIndex, CountsSharedConversationsAndReportsTheLastOne) {
  ContactIndex idx(1000);
  auto g1 = conv("g1", {{"a", true}, {"b", true}, {"c", true}});
  auto g2 = conv("g2", {{"a", true}, {"b", true}});
  idx.install("a", {g1, g2});
  EXPECT_TRUE(idx.shares("a", "b"));
  EXPECT_TRUE(idx.shares("a", "c"));
  EXPECT_FALSE(idx.shares("a", "d"));
  EXPECT_EQ(idx.conversations("a"), 2u);

  std::vector<std::string> unshared;
  idx.apply("a", "g1", conv("g1", {{"a", true}, {"b", true}, {"c", false}}), &unshared);
  EXPECT_EQ(unshared, std::vector<std::string>{"c"});
  EXPECT_TRUE(idx.shares("a", "b"));
  unshared.clear();
  idx.apply("a", "g2", conv("g2", {{"a", true}, {"b", false}}), &unshared);
  EXPECT_TRUE(unshared.empty()) << "a still shares g1 with b";
  idx.apply("a", "g1", conv("g1", {{"a", false}, {"b", true}, {"c", false}}), &unshared);
  EXPECT_EQ(unshared, std::vector<std::string>{"b"});
  EXPECT_FALSE(idx.shares("a", "b"));
  EXPECT_EQ(idx.conversations("a"), 1u);  // g2, alone
  // Applying the same snapshot twice changes nothing.
  auto g3 = conv("g3", {{"a", true}, {"e", true}});
  idx.apply("a", "g3", g3, nullptr);
  idx.apply("a", "g3", g3, nullptr);
  EXPECT_EQ(idx.conversations("a"), 2u);
  unshared.clear();
  idx.apply("a", "g3", nullptr, &unshared);  // the conversation vanished
  EXPECT_EQ(unshared, std::vector<std::string>{"e"});
}

TEST(ContactIndex, EvictsLeastRecentlyUsedUnpinnedUsers) {
  ContactIndex idx(4);  // entries: conversations + counterparts
  idx.install("a", {conv("g", {{"a", true}, {"b", true}})});  // 2 entries
  idx.pin("a");
  idx.install("b", {conv("g", {{"a", true}, {"b", true}})});  // 4
  idx.install("c", {conv("h", {{"c", true}, {"d", true}})});  // 6 → evicts b (a is pinned)
  EXPECT_TRUE(idx.loaded("a"));
  EXPECT_FALSE(idx.loaded("b"));
  EXPECT_TRUE(idx.loaded("c"));
  EXPECT_LE(idx.entries(), 4u);
}

}  // namespace
}  // namespace tern::services
