#include "services/warm_hold.h"

namespace tern::services {
namespace {

thread_local const WarmHold* t_current = nullptr;

}  // namespace

const WarmHold* WarmHold::current() { return t_current; }

WarmHold::Scope::Scope(const WarmHold* hold) : previous_(t_current) { t_current = hold; }

WarmHold::Scope::~Scope() { t_current = previous_; }

std::optional<std::shared_ptr<const store::Conversation>> WarmHold::held_conversation(const std::string& id) {
  const WarmHold* h = t_current;
  if (!h || !h->conversation_read || h->conversation_id != id) return std::nullopt;
  return h->conversation;
}

const std::vector<uint32_t>* WarmHold::held_devices(const std::string& user) {
  const WarmHold* h = t_current;
  if (!h) return nullptr;
  auto it = h->devices.find(user);
  return it == h->devices.end() ? nullptr : &it->second;
}

std::optional<uint32_t> WarmHold::held_registration(const std::string& device_key) {
  const WarmHold* h = t_current;
  if (!h) return std::nullopt;
  auto it = h->registrations.find(device_key);
  if (it == h->registrations.end()) return std::nullopt;
  return it->second;
}

std::optional<bool> WarmHold::held_block(const std::string& blocker, const std::string& other) {
  const WarmHold* h = t_current;
  if (!h) return std::nullopt;
  auto it = h->blocked.find({blocker, other});
  if (it == h->blocked.end()) return std::nullopt;
  return it->second;
}

}  // namespace tern::services
