// DroppedDevices: the devices whose events this node sent nowhere, and when, so that it can
// tell a node that announces one of them connected whether it owes that node a kMissed
// (RedisBus; docs/scaling.md "Events for devices connected nowhere").
//
// An event for a device that no node holds (DeviceRoutes says kNowhere) is dropped, not sent
// to every node. A device that connected on node B a moment ago is in that state at node A
// until B's kAttached reaches A. If A dropped one of its events after B's session read its
// inbox, no live delivery reaches the session; A sees that here when B's kAttached arrives
// (a drop at or after the connection's start) and sends kMissed, on which the session reads
// its inbox again.
//
// Bounded: an entry is kept for `keep` after its last drop, and at most `limit` devices are
// held. What is pruned is not forgotten as a fact: `since()` answers true for any time up to
// the latest drop it pruned (the horizon), so the answer can be "yes" when it is not (one
// inbox read too many on the other node), never "no" when it is.
//
// Thread-safety: none; RedisBus calls it under its drops mutex.
#pragma once
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/ids.h"

namespace tern::bus {

class DroppedDevices {
 public:
  DroppedDevices(std::chrono::microseconds keep, size_t limit) : keep_us_(keep.count()), limit_(limit) {}

  // An event for `device` was dropped at `now_us` (wall clock, µs). Prunes what is older than
  // `keep`, at most once per tenth of it; beyond `limit` devices everything is pruned.
  void note(const DeviceRef& device, int64_t now_us);
  // May an event for `device` have been dropped at or after `from_us`?
  bool since(const DeviceRef& device, int64_t from_us) const;

  size_t size() const { return size_; }
  // The latest drop pruned so far (the lowest int64 when none was).
  int64_t horizon() const { return horizon_; }

 private:
  void prune(int64_t before_us);  // entries older than before_us

  const int64_t keep_us_;
  const size_t limit_;
  // user → (device, last drop µs); a user's few devices are scanned.
  std::unordered_map<std::string, std::vector<std::pair<uint32_t, int64_t>>> users_;
  size_t size_ = 0;
  int64_t horizon_ = std::numeric_limits<int64_t>::min();
  int64_t next_prune_us_ = std::numeric_limits<int64_t>::min();
};

}  // namespace tern::bus
