#include "services/warm_hold.h"

namespace tern::services {
namespace {

// The holds of the work running on this thread, innermost last (a few at most).
thread_local std::vector<std::shared_ptr<const WarmHold>> t_holds;

}  // namespace

WarmHold::Scope::Scope(std::shared_ptr<const WarmHold> hold) : pushed_(hold != nullptr) {
  if (pushed_) t_holds.push_back(std::move(hold));
}

WarmHold::Scope::~Scope() {
  if (pushed_) t_holds.pop_back();
}

std::optional<std::shared_ptr<const store::Conversation>> WarmHold::held_conversation(const std::string& id) {
  for (auto it = t_holds.rbegin(); it != t_holds.rend(); ++it)
    if ((*it)->conversation_read && (*it)->conversation_id == id) return (*it)->conversation;
  return std::nullopt;
}

std::optional<std::vector<uint32_t>> WarmHold::held_devices(const std::string& user) {
  for (auto it = t_holds.rbegin(); it != t_holds.rend(); ++it) {
    if (auto d = (*it)->devices.find(user); d != (*it)->devices.end()) return d->second;
    // A check lists each member's devices together (devices_cached), and none for a member
    // without a cached list, which fails the check.
    std::vector<uint32_t> found;
    for (const DeviceRef& d : (*it)->checked_devices)
      if (d.user == user) found.push_back(d.device);
      else if (!found.empty()) break;
    if (!found.empty()) return found;
  }
  return std::nullopt;
}

std::optional<uint32_t> WarmHold::held_registration(const DeviceRef& device, const std::string& device_key) {
  for (auto it = t_holds.rbegin(); it != t_holds.rend(); ++it) {
    if (auto r = (*it)->registrations.find(device_key); r != (*it)->registrations.end()) return r->second;
    const auto& ids = (*it)->checked_registrations;
    const auto& devices = (*it)->checked_devices;
    if (ids.size() == devices.size())
      for (size_t i = 0; i < devices.size(); ++i)
        if (devices[i] == device) return ids[i];
  }
  return std::nullopt;
}

std::optional<bool> WarmHold::held_block(const std::string& blocker, const std::string& other) {
  for (auto it = t_holds.rbegin(); it != t_holds.rend(); ++it)
    if (auto b = (*it)->blocked.find({blocker, other}); b != (*it)->blocked.end()) return b->second;
  return std::nullopt;
}

std::shared_ptr<const WarmHold> WarmHold::request_hold() {
  for (auto it = t_holds.rbegin(); it != t_holds.rend(); ++it)
    if (!(*it)->conversation_read) return *it;
  return nullptr;
}

}  // namespace tern::services
