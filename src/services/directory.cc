#include "services/directory.h"

namespace tern::services {

const store::Member* find_member(const store::Conversation& c, const std::string& user) {
  for (const auto& m : c.members)
    if (m.user == user) return &m;
  return nullptr;
}

bool is_active_member(const store::Conversation& c, const std::string& user) {
  const auto* m = find_member(c, user);
  return m && m->active();
}

Result<ConversationPtr> Directory::conversation(const std::string& id) {
  {
    std::lock_guard lock(conv_mu_);
    if (auto it = conversations_.find(id); it != conversations_.end()) return it->second;
  }
  auto loaded = store_.conversation(id);
  if (!loaded) return loaded.error();
  if (!*loaded) return ConversationPtr{};
  auto snapshot = std::make_shared<const store::Conversation>(std::move(**loaded));
  std::lock_guard lock(conv_mu_);
  // A concurrent put (a membership change) wins over what we just read.
  auto [it, inserted] = conversations_.emplace(id, snapshot);
  return it->second;
}

void Directory::put_conversation(ConversationPtr snapshot) {
  std::lock_guard lock(conv_mu_);
  conversations_[snapshot->id] = std::move(snapshot);
}

void Directory::forget_conversation(const std::string& id) {
  std::lock_guard lock(conv_mu_);
  conversations_.erase(id);
}

Result<std::vector<uint32_t>> Directory::devices(const std::string& user) {
  {
    std::lock_guard lock(dev_mu_);
    if (auto it = devices_.find(user); it != devices_.end()) return it->second;
  }
  auto loaded = store_.devices(user);
  if (!loaded) return loaded.error();
  std::lock_guard lock(dev_mu_);
  auto [it, inserted] = devices_.emplace(user, std::move(*loaded));
  return it->second;
}

void Directory::put_devices(const std::string& user, std::vector<uint32_t> devices) {
  std::lock_guard lock(dev_mu_);
  devices_[user] = std::move(devices);
}

}  // namespace tern::services
