#include "services/contact_index.h"

namespace tern::services {

void ContactIndex::touch(User& u) { lru_.splice(lru_.begin(), lru_, u.lru); }

void ContactIndex::count(User& u, const std::string& self, const store::Conversation& c, int delta,
                         std::vector<std::string>* unshared) {
  for (const auto& m : c.members) {
    if (!m.active() || m.user == self) continue;
    if (delta > 0) {
      auto [it, inserted] = u.counterparts.try_emplace(m.user, 0);
      if (inserted) ++entries_;
      ++it->second;
    } else {
      auto it = u.counterparts.find(m.user);
      if (it == u.counterparts.end()) continue;
      if (--it->second == 0) {
        u.counterparts.erase(it);
        --entries_;
        if (unshared) unshared->push_back(m.user);
      }
    }
  }
}

void ContactIndex::install(const std::string& user, const std::vector<ConversationPtr>& conversations) {
  if (auto it = users_.find(user); it != users_.end()) {
    entries_ -= it->second.conversations.size() + it->second.counterparts.size();
    lru_.erase(it->second.lru);
    const uint32_t pins = it->second.pins;
    users_.erase(it);
    if (pins) users_[user].pins = pins;
  }
  User& u = users_[user];
  lru_.push_front(user);
  u.lru = lru_.begin();
  for (const auto& c : conversations) {
    // Channels share no presence: an admin and a subscriber are not contacts.
    if (!c || c->type == store::ConvType::kChannel || !is_active_member(*c, user)) continue;
    if (!u.conversations.emplace(c->id, c).second) continue;
    ++entries_;
    count(u, user, *c, +1, nullptr);
  }
  evict(user);
}

void ContactIndex::apply(const std::string& user, const std::string& conversation_id, const ConversationPtr& snapshot,
                         std::vector<std::string>* unshared) {
  auto it = users_.find(user);
  if (it == users_.end()) return;
  User& u = it->second;
  auto old = u.conversations.find(conversation_id);
  if (old != u.conversations.end() && old->second == snapshot) return;
  std::vector<std::string> dropped;
  if (old != u.conversations.end()) {
    count(u, user, *old->second, -1, &dropped);
    u.conversations.erase(old);
    --entries_;
  }
  if (snapshot && is_active_member(*snapshot, user)) {
    u.conversations.emplace(conversation_id, snapshot);
    ++entries_;
    count(u, user, *snapshot, +1, nullptr);
  }
  if (unshared)
    for (auto& d : dropped)
      if (!u.counterparts.count(d)) unshared->push_back(std::move(d));
  evict(user);
}

bool ContactIndex::shares(const std::string& user, const std::string& other) {
  auto it = users_.find(user);
  if (it == users_.end()) return false;
  touch(it->second);
  return user == other || it->second.counterparts.count(other) != 0;
}

size_t ContactIndex::conversations(const std::string& user) {
  auto it = users_.find(user);
  if (it == users_.end()) return 0;
  touch(it->second);
  return it->second.conversations.size();
}

void ContactIndex::pin(const std::string& user) {
  if (auto it = users_.find(user); it != users_.end()) ++it->second.pins;
}

void ContactIndex::unpin(const std::string& user) {
  if (auto it = users_.find(user); it != users_.end() && it->second.pins > 0) --it->second.pins;
}

// Least recently used unpinned users go first; `keep` (just used) stays. Bounded scan.
void ContactIndex::evict(const std::string& keep) {
  auto pos = lru_.end();
  size_t scanned = 0;
  while (entries_ > max_entries_ && pos != lru_.begin() && scanned++ < 256) {
    --pos;
    auto it = users_.find(*pos);
    if (it->second.pins || *pos == keep) continue;
    entries_ -= it->second.conversations.size() + it->second.counterparts.size();
    auto victim = pos;
    ++pos;
    users_.erase(it);
    lru_.erase(victim);
  }
}

}  // namespace tern::services
