#include "client/local_store.h"

#include <algorithm>

namespace tern::client {

Result<void> MemoryStore::add(const OutboxEntry& entry) {
  std::lock_guard lock(mu_);
  for (const auto& e : entries_)
    if (e.client_msg_id == entry.client_msg_id) return make_error(ErrorCode::kExists, "client_msg_id already pending");
  if (entries_.size() >= max_entries_) return make_error(ErrorCode::kOverloaded, "outbox full");
  entries_.push_back(entry);
  return {};
}

Result<void> MemoryStore::remove(std::string_view client_msg_id) {
  std::lock_guard lock(mu_);
  std::erase_if(entries_, [&](const OutboxEntry& e) { return e.client_msg_id == client_msg_id; });
  return {};
}

Result<std::vector<OutboxEntry>> MemoryStore::pending() const {
  std::lock_guard lock(mu_);
  return entries_;
}

size_t MemoryStore::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

Result<void> MemoryStore::save_cursor(std::string_view conversation_id, Seq seq) {
  std::lock_guard lock(mu_);
  auto& s = cursors_[std::string(conversation_id)];
  s = std::max(s, seq);
  return {};
}

Result<std::map<std::string, Seq>> MemoryStore::cursors() const {
  std::lock_guard lock(mu_);
  return cursors_;
}

}  // namespace tern::client
