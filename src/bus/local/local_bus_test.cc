#include "bus/local/local_bus.h"

#include <gtest/gtest.h>

namespace tern::bus {
namespace {

struct Recorder : Endpoint {
  std::vector<std::shared_ptr<const Notification>> got;
  int replaced_calls = 0;
  void notify(std::shared_ptr<const Notification> n) override { got.push_back(std::move(n)); }
  void replaced() override { ++replaced_calls; }
};

TEST(LocalBus, DeliversToAttachedDevicesOnly) {
  LocalBus bus;
  auto a1 = std::make_shared<Recorder>();
  auto a2 = std::make_shared<Recorder>();
  EXPECT_EQ(bus.attach({"alice", 1}, a1), 1u);
  EXPECT_EQ(bus.attach({"alice", 2}, a2), 2u);
  auto n = std::make_shared<Notification>();
  bus.publish({"alice", 1}, n);
  bus.publish({"bob", 1}, n);
  EXPECT_EQ(a1->got.size(), 1u);
  EXPECT_EQ(a2->got.size(), 0u);
  bus.publish_user("alice", n);
  EXPECT_EQ(a1->got.size(), 2u);
  EXPECT_EQ(a2->got.size(), 1u);
  EXPECT_TRUE(bus.online("alice"));
  EXPECT_FALSE(bus.online("bob"));
}

TEST(LocalBus, ReplaceClosesOnlyTheNamedEndpointWhileItIsCurrent) {
  LocalBus bus;
  auto first = std::make_shared<Recorder>();
  auto second = std::make_shared<Recorder>();
  bus.attach({"alice", 1}, first);
  EXPECT_FALSE(bus.replace({"alice", 1}, second.get()));  // not the current one
  EXPECT_FALSE(bus.replace({"bob", 1}, first.get()));     // not attached at all
  EXPECT_EQ(first->replaced_calls, 0);
  EXPECT_TRUE(bus.replace({"alice", 1}, first.get()));
  EXPECT_EQ(first->replaced_calls, 1);
  bus.attach({"alice", 1}, second);  // told replaced() by the attach itself
  EXPECT_EQ(first->replaced_calls, 2);
  EXPECT_FALSE(bus.replace({"alice", 1}, first.get()));
  EXPECT_EQ(second->replaced_calls, 0);
}

TEST(LocalBus, NewConnectionReplacesOldAndOldCannotDetachNew) {
  LocalBus bus;
  auto first = std::make_shared<Recorder>();
  auto second = std::make_shared<Recorder>();
  bus.attach({"alice", 1}, first);
  bus.attach({"alice", 1}, second);
  EXPECT_EQ(first->replaced_calls, 1);
  EXPECT_EQ(bus.detach({"alice", 1}, first.get()), 1u);  // stale detach is ignored
  bus.publish({"alice", 1}, std::make_shared<Notification>());
  EXPECT_EQ(second->got.size(), 1u);
  EXPECT_EQ(bus.detach({"alice", 1}, second.get()), 0u);
  EXPECT_FALSE(bus.online("alice"));
}

// attach_async says whether the device counted already (Bus::Counted's `added`): a new
// connection of a device whose old one is still attached does not bring its user online.
TEST(LocalBus, AnAttachSaysWhetherTheDeviceWasAttachedAlready) {
  LocalBus bus;
  std::vector<std::pair<size_t, bool>> counted;
  auto record = [&counted](size_t n, uint64_t order, bool added) {
    EXPECT_EQ(order, 0u) << "one node: no order";
    counted.emplace_back(n, added);
  };
  auto first = std::make_shared<Recorder>(), second = std::make_shared<Recorder>(), third = std::make_shared<Recorder>();
  bus.attach_async({"alice", 1}, first, record);
  bus.attach_async({"alice", 1}, second, record);
  bus.detach_async({"alice", 1}, second.get(), record);
  bus.attach_async({"alice", 1}, third, record);
  EXPECT_EQ(counted, (std::vector<std::pair<size_t, bool>>{{1, true}, {1, false}, {0, true}, {1, true}}));
  EXPECT_EQ(first->replaced_calls, 1);
}

}  // namespace
}  // namespace tern::bus
