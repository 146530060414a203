// WarmHold's lookups: a warm check's flat form (checked_devices, checked_registrations) and a
// warm-up's maps, innermost hold first, nothing outside a Scope.
#include "services/warm_hold.h"

#include <gtest/gtest.h>

namespace tern::services {
namespace {

std::shared_ptr<WarmHold> checked() {
  auto h = std::make_shared<WarmHold>();
  h->checked_devices = {DeviceRef{"alice", 1}, DeviceRef{"alice", 3}, DeviceRef{"bob", 2}};
  h->checked_registrations = {11, 13, 22};
  return h;
}

TEST(WarmHold, AChecksFlatListAnswersDevicesAndRegistrationsInsideItsScopeOnly) {
  EXPECT_FALSE(WarmHold::held_devices("alice"));
  {
    WarmHold::Scope scope(checked());
    EXPECT_EQ(WarmHold::held_devices("alice"), (std::vector<uint32_t>{1, 3}));
    EXPECT_EQ(WarmHold::held_devices("bob"), (std::vector<uint32_t>{2}));
    EXPECT_FALSE(WarmHold::held_devices("carol"));  // not a member: read as usual
    EXPECT_EQ(WarmHold::held_registration(DeviceRef{"alice", 3}, "alice:3"), 13u);
    EXPECT_EQ(WarmHold::held_registration(DeviceRef{"bob", 2}, "bob:2"), 22u);
    EXPECT_FALSE(WarmHold::held_registration(DeviceRef{"bob", 9}, "bob:9"));
  }
  EXPECT_FALSE(WarmHold::held_devices("alice"));
  EXPECT_FALSE(WarmHold::held_registration(DeviceRef{"alice", 1}, "alice:1"));
}

TEST(WarmHold, RegistrationsNotCheckedAreNotAnswered) {
  auto h = checked();
  h->checked_registrations.clear();  // no key directory: the check did not look them up
  WarmHold::Scope scope(h);
  EXPECT_EQ(WarmHold::held_devices("alice"), (std::vector<uint32_t>{1, 3}));
  EXPECT_FALSE(WarmHold::held_registration(DeviceRef{"alice", 1}, "alice:1"));
}

TEST(WarmHold, TheInnermostHoldAnswersFirst) {
  auto outer = std::make_shared<WarmHold>();  // a warm-up's, older
  outer->devices["alice"] = {1};
  outer->registrations["alice:1"] = 5;
  outer->devices["dave"] = {4};
  WarmHold::Scope outer_scope(outer);
  {
    WarmHold::Scope inner_scope(checked());  // a later check's, newer
    EXPECT_EQ(WarmHold::held_devices("alice"), (std::vector<uint32_t>{1, 3}));
    EXPECT_EQ(WarmHold::held_registration(DeviceRef{"alice", 1}, "alice:1"), 11u);
    EXPECT_EQ(WarmHold::held_devices("dave"), (std::vector<uint32_t>{4}));  // only the outer has it
  }
  EXPECT_EQ(WarmHold::held_devices("alice"), (std::vector<uint32_t>{1}));
  EXPECT_EQ(WarmHold::held_registration(DeviceRef{"alice", 1}, "alice:1"), 5u);
}

}  // namespace
}  // namespace tern::services
