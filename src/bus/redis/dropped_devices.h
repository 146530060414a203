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
// Bounded: an entry is kept for at least `keep` after its last drop, and about `limit`
// devices are held (pruning may lag by a few pops; every entry is also queued, and at most
// 4 × `limit` devices are queued). What is pruned is not forgotten as a fact: `since()` answers true for any time up to
// the latest drop it pruned (the horizon), so the answer can be "yes" when it is not (one
// inbox read too many on the other node), never "no" when it is.
//
// No scan of the whole table: the drops are queued in one-second buckets (a device once per
// bucket), and pruning pops the oldest bucket's devices, forgetting those not dropped again
// since, at most 64 per note: a note costs a hash lookup, at most one push and a bounded
// number of pops, on whatever loop makes it. Beyond `limit` devices, or 4 × `limit` queued,
// the oldest go early (two pops per note keep the bounds; their drops then count up to
// their time).
//
// Thread-safety: none; RedisBus calls it under its drops mutex.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
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

  // An event for `device` was dropped at `now_us` (wall clock, µs). Prunes a few of the drops
  // older than `keep`, and the oldest beyond the bounds.
  void note(const DeviceRef& device, int64_t now_us);
  // May an event for `device` have been dropped at or after `from_us`?
  bool since(const DeviceRef& device, int64_t from_us) const;

  size_t size() const { return size_; }
  // The latest drop pruned so far (the lowest int64 when none was).
  int64_t horizon() const { return horizon_; }

 private:
  struct Entry {
    uint32_t device;
    int64_t last_us;  // its last drop
    int64_t bucket;   // the newest bucket that lists it
  };
  struct Bucket {
    int64_t id;  // time / kBucketUs
    std::vector<DeviceRef> devices;
  };
  static constexpr int64_t kBucketUs = 1'000'000;
  static constexpr size_t kPopsPerNote = 64;
  const Entry* entry(const DeviceRef& device) const;  // the device's entry, if held
  // The next device of the oldest bucket: forgotten unless dropped again since (a later
  // bucket lists it); the bucket goes once all its devices are done. Spends one of `budget`.
  void pop_one(size_t& budget);

  const int64_t keep_us_;
  const size_t limit_;
  // user → its devices' entries (a user's few devices are scanned).
  std::unordered_map<std::string, std::vector<Entry>> users_;
  std::deque<Bucket> buckets_;  // oldest first, ids increasing
  size_t size_ = 0;    // entries in users_
  size_t queued_ = 0;  // devices listed in buckets_, not yet popped
  size_t front_done_ = 0;  // devices of the oldest bucket already popped
  int64_t horizon_ = std::numeric_limits<int64_t>::min();
};

}  // namespace tern::bus
