#include "bus/redis/pending_requests.h"

#include <algorithm>

namespace tern::bus {

uint64_t PendingRequests::add(std::string node, Clock::time_point deadline, Bus::Reply reply) {
  std::lock_guard lock(mu_);
  const uint64_t id = next_++;
  requests_.emplace(id, Request{std::move(node), deadline, std::move(reply)});
  return id;
}

std::optional<PendingRequests::Request> PendingRequests::take(uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = requests_.find(id);
  if (it == requests_.end()) return std::nullopt;
  Request r = std::move(it->second);
  requests_.erase(it);
  return r;
}

std::vector<std::pair<uint64_t, std::string>> PendingRequests::past(Clock::time_point now,
                                                                    Clock::time_point& later) const {
  std::vector<std::pair<uint64_t, std::string>> out;
  std::lock_guard lock(mu_);
  for (const auto& [id, r] : requests_) {
    if (r.deadline <= now) out.emplace_back(id, r.node);
    else later = std::min(later, r.deadline);
  }
  return out;
}

size_t PendingRequests::size() const {
  std::lock_guard lock(mu_);
  return requests_.size();
}

}  // namespace tern::bus
