#include "gateway/session_registry.h"

#include <atomic>

namespace tern::gateway {

uint64_t next_session_id() {
  static std::atomic<uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed) + 1;
}

std::optional<uint16_t> SessionRegistry::add(uint64_t id, std::weak_ptr<Session> session) {
  std::lock_guard lock(mu_);
  sessions_[id] = std::move(session);
  return closing_code_;
}

void SessionRegistry::remove(uint64_t id) {
  std::lock_guard lock(mu_);
  sessions_.erase(id);
}

size_t SessionRegistry::size() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

std::vector<std::shared_ptr<Session>> SessionRegistry::begin_close_all(uint16_t code) {
  std::vector<std::shared_ptr<Session>> live;
  std::lock_guard lock(mu_);
  closing_code_ = code;
  live.reserve(sessions_.size());
  // lock() only adds a reference; a session already being destroyed yields null and is
  // skipped (its destructor is waiting on mu_ to remove itself).
  for (const auto& [id, weak] : sessions_)
    if (auto s = weak.lock()) live.push_back(std::move(s));
  return live;
}

}  // namespace tern::gateway
