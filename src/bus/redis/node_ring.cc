#include "bus/redis/node_ring.h"

#include <algorithm>

namespace tern::bus {

namespace {

std::vector<std::string> nodes_named(std::string_view list, std::string_view prefix) {
  constexpr std::string_view kName = "name=";
  std::vector<std::string> nodes;
  while (!list.empty()) {
    const size_t nl = list.find('\n');
    const bool whole_line = nl != std::string_view::npos;
    std::string_view line = list.substr(0, nl);
    list.remove_prefix(whole_line ? nl + 1 : list.size());
    if (whole_line && !line.empty() && line.back() == '\r') line.remove_suffix(1);
    for (size_t at = 0; at < line.size();) {
      const size_t space = line.find(' ', at);
      const bool last_field = space == std::string_view::npos;
      const std::string_view field = line.substr(at, last_field ? std::string_view::npos : space - at);
      at = last_field ? line.size() : space + 1;
      if (!field.starts_with(kName)) continue;
      const std::string_view name = field.substr(kName.size());
      if ((whole_line || !last_field) && name.size() > prefix.size() && name.starts_with(prefix))
        nodes.emplace_back(name.substr(prefix.size()));
      break;  // one name per client
    }
  }
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  return nodes;
}

}  // namespace

std::vector<std::string> live_nodes_from_client_list(std::string_view list) {
  return nodes_named(list, kNodeConnectionPrefix);
}

std::vector<std::string> leaving_nodes_from_client_list(std::string_view list) {
  return nodes_named(list, kLeavingConnectionPrefix);
}

void NodeRing::set_live(std::vector<std::string> nodes) {
  std::sort(nodes.begin(), nodes.end());
  std::lock_guard lock(mu_);
  live_ = std::move(nodes);
}

void NodeRing::suspect(const std::string& node, Clock::time_point now) {
  if (node == self_) return;
  std::lock_guard lock(mu_);
  Clock::duration period = suspect_for_;
  if (auto it = suspected_.find(node); it != suspected_.end()) {
    // Still suspected (a request sent before the suspicion, timing out now): as it was.
    if (it->second.until > now) return;
    // Let back and failing again within a period: it is hung, not briefly slow.
    if (now - it->second.until < it->second.period)
      period = std::min<Clock::duration>(2 * it->second.period, kMaxSuspectFactor * Clock::duration(suspect_for_));
  }
  suspected_[node] = Suspicion{now + period, period};
}

void NodeRing::answered(const std::string& node) {
  std::lock_guard lock(mu_);
  suspected_.erase(node);
}

std::vector<std::pair<std::string, NodeRing::Clock::duration>> NodeRing::suspected(Clock::time_point now) const {
  std::vector<std::pair<std::string, Clock::duration>> out;
  {
    std::lock_guard lock(mu_);
    for (const auto& [node, s] : suspected_)
      if (s.until > now) out.emplace_back(node, s.until - now);
  }
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t NodeRing::weight(std::string_view node, std::string_view conversation_id) {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 1099511628211ull;
  };
  for (char c : node) mix(static_cast<unsigned char>(c));
  mix('\n');
  for (char c : conversation_id) mix(static_cast<unsigned char>(c));
  // FNV's low bits mix poorly for inputs that differ only at the end: finish with a
  // multiply-xorshift so that every bit of the result depends on every input byte.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

std::string NodeRing::owner(std::string_view conversation_id, Clock::time_point now) const {
  std::lock_guard lock(mu_);
  if (live_.empty()) return {};
  const std::string* best = nullptr;
  uint64_t best_weight = 0;
  bool self_live = false;
  for (const auto& n : live_) {
    if (n == self_) self_live = true;
    else if (auto s = suspected_.find(n); s != suspected_.end() && s->second.until > now) continue;
    const uint64_t w = weight(n, conversation_id);
    if (!best || w > best_weight) {
      best = &n;
      best_weight = w;
    }
  }
  // This node not listed yet (its first heartbeat): the others do not route to it either, so
  // it routes nothing yet; likewise when the owner is this node.
  if (!self_live || !best || *best == self_) return {};
  return *best;
}

}  // namespace tern::bus
