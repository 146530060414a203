#include "bus/redis/dropped_devices.h"

#include <algorithm>

namespace tern::bus {

void DroppedDevices::note(const DeviceRef& device, int64_t now_us) {
  // Aged out: popped a few devices per note, so no note pays for a whole bucket.
  size_t budget = kPopsPerNote;
  while (budget > 0 && !buckets_.empty() && (buckets_.front().id + 1) * kBucketUs <= now_us - keep_us_)
    pop_one(budget);
  // A clock that stepped back files the drop in the newest bucket (its time stays the entry's).
  int64_t bucket = now_us / kBucketUs;
  if (!buckets_.empty()) bucket = std::max(bucket, buckets_.back().id);
  auto queue = [&] {
    if (buckets_.empty() || buckets_.back().id < bucket) buckets_.push_back(Bucket{bucket, {}});
    buckets_.back().devices.push_back(device);
    ++queued_;
  };
  if (auto* e = const_cast<Entry*>(entry(device))) {
    e->last_us = std::max(e->last_us, now_us);
    if (e->bucket != bucket) {
      e->bucket = bucket;
      queue();
    }
  } else {
    users_[device.user].push_back(Entry{device.device, now_us, bucket});
    ++size_;
    queue();
  }
  // Over the bounds: the oldest drops go early, and count as dropped up to their time. A note
  // adds at most one entry and one queued device, so two pops a note keep the bounds.
  budget = std::max<size_t>(budget, 2);
  while (budget > 0 && (size_ > limit_ || queued_ > 4 * limit_) && !buckets_.empty()) pop_one(budget);
}

void DroppedDevices::pop_one(size_t& budget) {
  --budget;
  Bucket& b = buckets_.front();
  const DeviceRef& d = b.devices[front_done_];
  if (auto it = users_.find(d.user); it != users_.end()) {
    auto& held = it->second;
    for (size_t i = 0; i < held.size(); ++i) {
      if (held[i].device != d.device) continue;
      if (held[i].bucket == b.id) {  // not dropped again since: forget it
        horizon_ = std::max(horizon_, held[i].last_us);
        held[i] = held.back();
        held.pop_back();
        --size_;
      }
      break;
    }
    if (held.empty()) users_.erase(it);
  }
  --queued_;
  if (++front_done_ == b.devices.size()) {
    buckets_.pop_front();
    front_done_ = 0;
  }
}

const DroppedDevices::Entry* DroppedDevices::entry(const DeviceRef& device) const {
  auto it = users_.find(device.user);
  if (it == users_.end()) return nullptr;
  for (const Entry& e : it->second)
    if (e.device == device.device) return &e;
  return nullptr;
}

bool DroppedDevices::since(const DeviceRef& device, int64_t from_us) const {
  if (from_us <= horizon_) return true;
  const Entry* e = entry(device);
  return e && e->last_us >= from_us;
}

}  // namespace tern::bus
