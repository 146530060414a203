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

TEST(DroppedDevices, BeyondTheLimitTheOldestCountAsDropped) {
  DroppedDevices d(60s, 3);
  d.note({"a", 1}, 1'000'000);
  d.note({"b", 1}, 2'000'000);
  d.note({"c", 1}, 3'000'000);
  EXPECT_EQ(d.size(), 3u);
  d.note({"d", 1}, 4'000'000);
  EXPECT_EQ(d.size(), 3u) << "never more than the limit";
  EXPECT_TRUE(d.since({"zed", 1}, 1'000'000)) << "a's drop is forgotten: any device's may have been then";
  EXPECT_FALSE(d.since({"zed", 1}, 1'000'001));
  EXPECT_TRUE(d.since({"b", 1}, 2'000'000));
  EXPECT_FALSE(d.since({"b", 1}, 2'000'001));
  d.note({"d", 1}, 5'000'000);  // a device already held is updated, not added
  EXPECT_EQ(d.size(), 3u);
  EXPECT_TRUE(d.since({"d", 1}, 5'000'000));
}

// A device dropped again in a later second is kept when its earlier second ages out, and the
// work of a note stays bounded however many devices one second held.
TEST(DroppedDevices, ADeviceDroppedAgainOutlivesItsEarlierSecond) {
  DroppedDevices d(10s, 1'000'000);
  for (uint32_t i = 0; i < 1000; ++i) d.note({"crowd", i}, 1'000'000);
  d.note({"crowd", 7}, 8'000'000);
  EXPECT_EQ(d.size(), 1000u);
  // Second 1 aged out: this note pops 64 of its devices, crowd/0..63; crowd/7 stays.
  d.note({"late", 1}, 12'000'000);
  EXPECT_EQ(d.size(), 1000u - 63u + 1u);
  for (int i = 0; i < 20; ++i) d.note({"late", 1}, 12'000'000);  // the rest of second 1
  EXPECT_EQ(d.size(), 2u) << "crowd/7 (dropped again at 8 s) and late/1";
  EXPECT_TRUE(d.since({"crowd", 7}, 8'000'000));
  EXPECT_TRUE(d.since({"crowd", 3}, 1'000'000)) << "forgotten: counts up to its time";
  EXPECT_FALSE(d.since({"crowd", 3}, 1'000'001));
}

}  // namespace
}  // namespace tern::bus
