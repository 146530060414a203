// Accounts across two nodes on one store: each node reserves device numbers in its own cache,
// so two nodes can pick the same number for one user at the same moment; the store refuses the
// later link (PutDevice::must_be_new), whose device does not replace the earlier one's token.
#include "services/accounts.h"

#include <gtest/gtest.h>

#include <future>

#include "services/directory.h"
#include "services/group_committer.h"
#include "services/service_options.h"
#include "store/memory/memory_store.h"

namespace tern::services {
namespace {

// One node's accounts on a shared store: its own committer and device-list cache.
struct Node {
  explicit Node(std::shared_ptr<store::MemoryStore::State> state)
      : store(std::move(state)), committer(store, true, 1000, 64), directory(store), accounts(store, committer, directory, options) {
    committer.start();
  }
  ~Node() { committer.stop(); }
  Result<Credentials> add_device(const std::string& user) {
    std::promise<Result<Credentials>> p;
    accounts.add_device(user, [&p](Result<Credentials> r) { p.set_value(std::move(r)); });
    return wait(p);
  }
  static Result<Credentials> wait(std::promise<Result<Credentials>>& p) {
    auto f = p.get_future();
    if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
      return make_error(ErrorCode::kInternal, "no answer within 10 s");
    return f.get();
  }
  Result<Credentials> register_user(const std::string& user) {
    std::promise<Result<Credentials>> p;
    accounts.register_user(user, [&p](Result<Credentials> r) { p.set_value(std::move(r)); });
    return wait(p);
  }
  ServiceOptions options;
  store::MemoryStore store;
  GroupCommitter committer;
  Directory directory;
  Accounts accounts;
};

TEST(AccountsOnTwoNodes, TheSameDeviceNumberLinkedOnTwoNodesIsRefusedOnTheLaterOne) {
  store::MemoryStore view;
  Node a(view.state()), b(view.state());
  auto alice = a.register_user("alice");
  ASSERT_TRUE(alice) << alice.error().message;
  // Both nodes have alice's device list {1} cached (as after any send of hers).
  ASSERT_EQ(*a.directory.devices("alice"), (std::vector<uint32_t>{1}));
  ASSERT_EQ(*b.directory.devices("alice"), (std::vector<uint32_t>{1}));
  auto on_a = a.add_device("alice");  // picks 2 and commits
  ASSERT_TRUE(on_a) << on_a.error().message;
  EXPECT_EQ(on_a->device, 2u);
  auto on_b = b.add_device("alice");  // b's cache still says {1}: picks 2 as well
  ASSERT_FALSE(on_b);
  EXPECT_EQ(on_b.error().code, ErrorCode::kUnavailable) << on_b.error().message;
  // The earlier link keeps its device; b reads the list again and links the next number.
  auto who = a.accounts.authenticate(on_a->token);
  ASSERT_TRUE(who) << who.error().message;
  EXPECT_EQ(*who, (DeviceRef{"alice", 2}));
  auto again = b.add_device("alice");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->device, 3u);
  EXPECT_TRUE(a.accounts.authenticate(on_a->token));
}

}  // namespace
}  // namespace tern::services
