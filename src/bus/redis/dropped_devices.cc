#include "bus/redis/dropped_devices.h"

#include <algorithm>

namespace tern::bus {

void DroppedDevices::note(const DeviceRef& device, int64_t now_us) {
  if (now_us >= next_prune_us_) {
    prune(now_us - keep_us_);
    next_prune_us_ = now_us + keep_us_ / 10;
  }
  if (auto it = users_.find(device.user); it != users_.end())
    for (auto& [dev, at] : it->second)
      if (dev == device.device) {
        at = std::max(at, now_us);
        return;
      }
  // Full of devices dropped within `keep`: forget them all. Until `keep` has passed, every
  // device then counts as dropped (a kMissed each time one connects): correct, only costlier.
  if (size_ >= limit_) prune(std::numeric_limits<int64_t>::max());
  users_[device.user].emplace_back(device.device, now_us);
  ++size_;
}

bool DroppedDevices::since(const DeviceRef& device, int64_t from_us) const {
  if (from_us <= horizon_) return true;
  auto it = users_.find(device.user);
  if (it == users_.end()) return false;
  for (const auto& [dev, at] : it->second)
    if (dev == device.device) return at >= from_us;
  return false;
}

void DroppedDevices::prune(int64_t before_us) {
  for (auto it = users_.begin(); it != users_.end();) {
    auto& held = it->second;
    std::erase_if(held, [&](const std::pair<uint32_t, int64_t>& p) {
      if (p.second >= before_us) return false;
      horizon_ = std::max(horizon_, p.second);
      --size_;
      return true;
    });
    if (held.empty()) it = users_.erase(it);
    else ++it;
  }
}

}  // namespace tern::bus
