// Accounts across two nodes on one store: each node reserves device numbers in its own cache
// and counts the stored devices too, so a device another node linked counts at once; two nodes
// can still pick the same number for one user at the same moment (both read before either
// committed): the store refuses the later link (PutDevice::must_be_new), whose device does not
// replace the earlier one's token.
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
  // start: false leaves the committer stopped, so this node's links wait uncommitted until
  // committer.start().
  explicit Node(std::shared_ptr<store::MemoryStore::State> state, bool start = true)
      : store(std::move(state)), committer(store, true, 1000, 64), directory(store), accounts(store, committer, directory, options) {
    if (start) committer.start();
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

// Node b has alice's device list {1} cached when node a links device 2: b counts the stored
// device at once (its announcement has not arrived), so its link is device 3, not a refused 2.
TEST(AccountsOnTwoNodes, ADeviceLinkedOnOneNodeCountsOnTheOtherAtOnce) {
  store::MemoryStore view;
  Node a(view.state()), b(view.state());
  auto alice = a.register_user("alice");
  ASSERT_TRUE(alice) << alice.error().message;
  // Both nodes have alice's device list {1} cached (as after any send of hers).
  ASSERT_EQ(*a.directory.devices("alice"), (std::vector<uint32_t>{1}));
  ASSERT_EQ(*b.directory.devices("alice"), (std::vector<uint32_t>{1}));
  auto on_a = a.add_device("alice");
  ASSERT_TRUE(on_a) << on_a.error().message;
  EXPECT_EQ(on_a->device, 2u);
  auto on_b = b.add_device("alice");
  ASSERT_TRUE(on_b) << on_b.error().message;
  EXPECT_EQ(on_b->device, 3u);
  b.options.limits.max_devices_per_user = 3;
  auto fourth = b.add_device("alice");
  ASSERT_FALSE(fourth);
  EXPECT_EQ(fourth.error().code, ErrorCode::kLimitExceeded) << "the limit counts a's device too";
}

TEST(AccountsOnTwoNodes, TheSameDeviceNumberLinkedOnTwoNodesIsRefusedOnTheLaterOne) {
  store::MemoryStore view;
  Node a(view.state(), /*start=*/false), b(view.state());
  auto alice = b.register_user("alice");
  ASSERT_TRUE(alice) << alice.error().message;
  // a picks 2 and waits to commit; b, reading before a committed, picks 2 as well and commits.
  std::promise<Result<Credentials>> pa;
  a.accounts.add_device("alice", [&pa](Result<Credentials> r) { pa.set_value(std::move(r)); });
  auto on_b = b.add_device("alice");
  ASSERT_TRUE(on_b) << on_b.error().message;
  EXPECT_EQ(on_b->device, 2u);
  a.committer.start();
  auto on_a = Node::wait(pa);
  ASSERT_FALSE(on_a);
  EXPECT_EQ(on_a.error().code, ErrorCode::kUnavailable) << on_a.error().message;
  // The earlier link keeps its device; a reads the list again and links the next number.
  auto who = b.accounts.authenticate(on_b->token);
  ASSERT_TRUE(who) << who.error().message;
  EXPECT_EQ(*who, (DeviceRef{"alice", 2}));
  auto again = a.add_device("alice");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->device, 3u);
  EXPECT_TRUE(b.accounts.authenticate(on_b->token));
}

}  // namespace
}  // namespace tern::services
