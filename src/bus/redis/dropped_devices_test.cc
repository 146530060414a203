// DroppedDevices: which devices' events a node sent nowhere since when, bounded in time and
// count without ever answering "no" for a drop it forgot.
#include "bus/redis/dropped_devices.h"

#include <gtest/gtest.h>

namespace tern::bus {
namespace {

using namespace std::chrono_literals;

TEST(DroppedDevices, AnswersWhetherADropCameAtOrAfterAGivenTime) {
  DroppedDevices d(60s, 100);
  d.note({"bob", 1}, 1'000'000);
  d.note({"bob", 1}, 3'000'000);
  d.note({"bob", 2}, 2'000'000);
  EXPECT_TRUE(d.since({"bob", 1}, 3'000'000));
  EXPECT_FALSE(d.since({"bob", 1}, 3'000'001)) << "its last drop is what counts";
  EXPECT_TRUE(d.since({"bob", 2}, 2'000'000));
  EXPECT_FALSE(d.since({"bob", 2}, 2'500'000));
  EXPECT_FALSE(d.since({"bob", 3}, 0)) << "never dropped";
  EXPECT_FALSE(d.since({"carol", 1}, 0));
  EXPECT_EQ(d.size(), 2u);
}

TEST(DroppedDevices, WhatIsPrunedByAgeCountsAsDroppedUpToItsTime) {
  DroppedDevices d(10s, 100);
  d.note({"bob", 1}, 1'000'000);
  d.note({"carol", 1}, 5'000'000);
  d.note({"dave", 1}, 20'000'000);  // prunes what is older than 10 s: bob's and carol's
  EXPECT_EQ(d.size(), 1u);
  EXPECT_EQ(d.horizon(), 5'000'000);
  EXPECT_TRUE(d.since({"erin", 7}, 5'000'000)) << "a forgotten drop may have been any device's";
  EXPECT_FALSE(d.since({"erin", 7}, 5'000'001));
  EXPECT_TRUE(d.since({"dave", 1}, 20'000'000));
}

TEST(DroppedDevices, BeyondTheLimitEverythingBeforeCountsAsDropped) {
  DroppedDevices d(60s, 3);
  d.note({"a", 1}, 1'000'000);
  d.note({"b", 1}, 2'000'000);
  d.note({"c", 1}, 3'000'000);
  EXPECT_EQ(d.size(), 3u);
  d.note({"d", 1}, 4'000'000);
  EXPECT_EQ(d.size(), 1u) << "never more than the limit";
  EXPECT_TRUE(d.since({"zed", 1}, 3'000'000));
  EXPECT_FALSE(d.since({"zed", 1}, 3'000'001));
  EXPECT_TRUE(d.since({"d", 1}, 4'000'000));
  d.note({"d", 1}, 5'000'000);  // a device already held is updated, not added
  EXPECT_EQ(d.size(), 1u);
}

}  // namespace
}  // namespace tern::bus
