#include "bus/local/local_bus.h"

#include <functional>
#include <vector>

namespace tern::bus {

LocalBus::Shard& LocalBus::shard(const std::string& user) {
  return shards_[std::hash<std::string>{}(user) % kShards];
}

size_t LocalBus::attach(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint) {
  bool added = true;
  return attach(device, std::move(endpoint), added);
}

void LocalBus::attach_async(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint, Counted counted) {
  bool added = true;
  const size_t n = attach(device, std::move(endpoint), added);
  counted(n, 0, added);
}

size_t LocalBus::attach(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint, bool& added) {
  std::shared_ptr<Endpoint> previous;
  size_t count;
  {
    auto& s = shard(device.user);
    std::lock_guard lock(s.mu);
    auto& devices = s.users[device.user];
    auto& slot = devices[device.device];
    previous = slot.lock();
    slot = endpoint;
    count = devices.size();
  }
  added = !previous;
  if (previous && previous != endpoint) previous->replaced();
  return count;
}

size_t LocalBus::detach(const DeviceRef& device, const Endpoint* endpoint) {
  auto& s = shard(device.user);
  std::lock_guard lock(s.mu);
  auto it = s.users.find(device.user);
  if (it == s.users.end()) return 0;
  auto d = it->second.find(device.device);
  if (d != it->second.end()) {
    auto current = d->second.lock();
    // Only the current endpoint may remove itself; a replaced one must not unregister its successor.
    if (!current || current.get() == endpoint) it->second.erase(d);
  }
  const size_t count = it->second.size();
  if (count == 0) s.users.erase(it);
  return count;
}

// The endpoint attached for the device, if any.
std::shared_ptr<Endpoint> LocalBus::find(const DeviceRef& device) {
  auto& s = shard(device.user);
  std::lock_guard lock(s.mu);
  auto it = s.users.find(device.user);
  if (it == s.users.end()) return nullptr;
  auto d = it->second.find(device.device);
  if (d == it->second.end()) return nullptr;
  return d->second.lock();
}

bool LocalBus::publish(const DeviceRef& device, const std::shared_ptr<const Notification>& n) {
  auto target = find(device);
  if (!target) return false;
  target->notify(n);
  return true;
}

void LocalBus::disconnect(const DeviceRef& device) {
  if (auto target = find(device)) target->replaced();
}

bool LocalBus::replace(const DeviceRef& device, const Endpoint* endpoint) {
  auto target = find(device);
  if (!target || target.get() != endpoint) return false;
  target->replaced();
  return true;
}

void LocalBus::missed(const DeviceRef& device) {
  if (auto target = find(device)) target->missed();
}

void LocalBus::publish_user(const std::string& user, const std::shared_ptr<const Notification>& n) {
  std::vector<std::shared_ptr<Endpoint>> targets;
  {
    auto& s = shard(user);
    std::lock_guard lock(s.mu);
    auto it = s.users.find(user);
    if (it == s.users.end()) return;
    for (auto& [_, weak] : it->second)
      if (auto e = weak.lock()) targets.push_back(std::move(e));
  }
  for (auto& e : targets) e->notify(n);
}

bool LocalBus::online(const std::string& user, bool* reported_offline) {
  if (reported_offline) *reported_offline = false;
  auto& s = shard(user);
  std::lock_guard lock(s.mu);
  return s.users.count(user) != 0;
}

}  // namespace tern::bus
