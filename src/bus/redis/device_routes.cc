#include "bus/redis/device_routes.h"

#include <algorithm>
#include <mutex>

#include "base/byte_codec.h"

namespace tern::bus {

uint32_t DeviceRoutes::node_index(const std::string& node) {
  auto [it, fresh] = index_.try_emplace(node, static_cast<uint32_t>(names_.size()));
  if (fresh) {
    names_.push_back(node);
    nodes_.emplace_back();
  }
  return it->second;
}

void DeviceRoutes::touch(uint32_t node, Clock::time_point now) {
  // A node that just spoke is live, until a later list leaves it out.
  if (nodes_[node].live_since == Clock::time_point{} || nodes_[node].absent_since != Clock::time_point{})
    nodes_[node].live_since = now;  // new here, or back after a list without it
  nodes_[node].seen = now;
  nodes_[node].live = true;
  nodes_[node].absent_since = {};
  nodes_[node].gone_told = false;
}

void DeviceRoutes::drop_node(uint32_t node) {
  for (auto it = users_.begin(); it != users_.end();) {
    auto& held = it->second;
    const size_t before = held.size();
    std::erase_if(held, [&](const Held& h) { return h.node == node; });
    pairs_ -= before - held.size();
    if (held.empty()) it = users_.erase(it);
    else ++it;
  }
}

bool DeviceRoutes::complete_locked() const {
  if (!live_known_) return false;
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].live && !nodes_[i].has_set && names_[i] != self_) return false;
  return true;
}

bool DeviceRoutes::may_drop() const {
  std::shared_lock lock(mu_);
  if (!complete_locked()) return false;
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].live && !nodes_[i].knows_missed && names_[i] != self_) return false;
  return true;
}

bool DeviceRoutes::complete() const {
  std::shared_lock lock(mu_);
  return complete_locked();
}

std::vector<std::string> DeviceRoutes::waiting_for() const {
  std::shared_lock lock(mu_);
  std::vector<std::string> out;
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].live && !nodes_[i].has_set && names_[i] != self_) out.push_back(names_[i]);
  return out;
}

size_t DeviceRoutes::devices() const {
  std::shared_lock lock(mu_);
  return pairs_;
}

DeviceRoutes::Where DeviceRoutes::find(const DeviceRef& device, std::vector<std::string>& nodes) const {
  std::shared_lock lock(mu_);
  if (auto it = users_.find(device.user); it != users_.end()) {
    const size_t before = nodes.size();
    for (const Held& h : it->second)
      if (h.device == device.device && nodes_[h.node].live) nodes.push_back(names_[h.node]);
    if (nodes.size() > before) return Where::kNodes;
  }
  return complete_locked() ? Where::kNowhere : Where::kUnknown;
}

DeviceRoutes::Where DeviceRoutes::find_user(const std::string& user, std::vector<std::string>& nodes) const {
  std::shared_lock lock(mu_);
  // Only a complete view may say that the user has no device on a node it does not list.
  if (!complete_locked()) return Where::kUnknown;
  auto it = users_.find(user);
  if (it == users_.end()) return Where::kNowhere;
  const size_t before = nodes.size();
  for (const Held& h : it->second)
    if (nodes_[h.node].live &&
        std::find(nodes.begin() + static_cast<std::ptrdiff_t>(before), nodes.end(), names_[h.node]) == nodes.end())
      nodes.push_back(names_[h.node]);
  return nodes.size() > before ? Where::kNodes : Where::kNowhere;
}

void DeviceRoutes::add(const std::string& node, const DeviceRef& device, Clock::time_point now) {
  if (node == self_) return;
  std::unique_lock lock(mu_);
  const uint32_t i = node_index(node);
  touch(i, now);
  hold(device, i);
}

void DeviceRoutes::hold(const DeviceRef& device, uint32_t node) {
  auto& held = users_[device.user];
  for (const Held& h : held)
    if (h.device == device.device && h.node == node) return;
  held.push_back(Held{device.device, node});
  ++pairs_;
}

void DeviceRoutes::remove(const std::string& node, const DeviceRef& device, Clock::time_point now) {
  if (node == self_) return;
  std::unique_lock lock(mu_);
  const uint32_t i = node_index(node);
  touch(i, now);
  auto it = users_.find(device.user);
  if (it == users_.end()) return;
  const size_t before = it->second.size();
  std::erase_if(it->second, [&](const Held& h) { return h.device == device.device && h.node == i; });
  pairs_ -= before - it->second.size();
  if (it->second.empty()) users_.erase(it);
}

std::vector<DeviceRef> DeviceRoutes::replace(const std::string& node, const std::vector<DeviceRef>& devices,
                                             Clock::time_point now, bool knows_missed) {
  std::vector<DeviceRef> added;
  if (node == self_) return added;
  std::unique_lock lock(mu_);
  const uint32_t i = node_index(node);
  touch(i, now);
  for (const DeviceRef& d : devices) {
    auto it = users_.find(d.user);
    if (it == users_.end() ||
        std::none_of(it->second.begin(), it->second.end(), [&](const Held& h) { return h.device == d.device && h.node == i; }))
      added.push_back(d);
  }
  drop_node(i);
  for (const DeviceRef& d : devices) hold(d, i);
  nodes_[i].has_set = true;
  nodes_[i].knows_missed = knows_missed;
  return added;
}

void DeviceRoutes::forget(const std::string& node) {
  if (node == self_) return;
  std::unique_lock lock(mu_);
  nodes_[node_index(node)].has_set = false;
}

std::vector<DeviceRef> DeviceRoutes::held_on(const std::string& node) const {
  std::vector<DeviceRef> out;
  std::shared_lock lock(mu_);
  auto it = index_.find(node);
  if (it == index_.end()) return out;
  for (const auto& [user, held] : users_)
    for (const Held& h : held)
      if (h.node == it->second) out.push_back(DeviceRef{user, h.device});
  return out;
}

bool DeviceRoutes::first_live_except(const std::string& node) const {
  std::shared_lock lock(mu_);
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].live && !nodes_[i].leaving && names_[i] != node && names_[i] < self_) return false;
  return true;
}

void DeviceRoutes::set_leaving(const std::vector<std::string>& leaving) {
  std::unique_lock lock(mu_);
  for (size_t i = 0; i < nodes_.size(); ++i)
    nodes_[i].leaving = std::binary_search(leaving.begin(), leaving.end(), names_[i]);
}

std::vector<DeviceRoutes::Gone> DeviceRoutes::set_live(const std::vector<std::string>& live, Clock::time_point now) {
  std::vector<Gone> gone;
  std::unique_lock lock(mu_);
  for (Node& n : nodes_) n.live = false;
  for (const std::string& name : live) touch(node_index(name), now);
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    Node& n = nodes_[i];
    if (n.live) continue;
    if (n.absent_since == Clock::time_point{}) n.absent_since = now;
    if (n.gone_told || names_[i] == self_ || now - n.absent_since < gone_after_) continue;
    n.gone_told = true;
    Gone g{names_[i], {}};
    for (const auto& [user, held] : users_)
      for (const Held& h : held)
        if (h.node == i) g.devices.push_back(DeviceRef{user, h.device});
    gone.push_back(std::move(g));
  }
  // A node gone from the lists for long is dead (or renamed): its devices are connected
  // nowhere. Not at once: a node's set can arrive before the first list that shows it. Counted
  // from the first list without it, as above: a Redis outage (no list read) does not count.
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].live || now - nodes_[i].absent_since < forget_after_) continue;
    drop_node(i);
    nodes_[i].has_set = false;
  }
  if (!live_known_) lists_since_ = now;
  live_known_ = true;
  return gone;
}

DeviceRoutes::RunSeen DeviceRoutes::run_called(const std::string& node, int64_t run, Clock::time_point now) {
  std::unique_lock lock(mu_);
  const uint32_t i = node_index(node);
  if (node != self_) touch(i, now);
  Node& n = nodes_[i];
  const RunSeen seen{n.run == 0, n.run != 0 && n.run != run};
  if (n.run != run) {
    n.run = run;
    n.run_at = now;
  }
  return seen;
}

void DeviceRoutes::run_in_set(const std::string& node, int64_t run, Clock::time_point now) {
  std::unique_lock lock(mu_);
  Node& n = nodes_[node_index(node)];
  if (n.run != 0) return;
  n.run = run;
  n.run_at = now;
}

int64_t DeviceRoutes::run(const std::string& node) const {
  std::shared_lock lock(mu_);
  auto it = index_.find(node);
  return it == index_.end() ? 0 : nodes_[it->second].run;
}

DeviceRoutes::Over DeviceRoutes::over(const std::string& node, int64_t expiry_ms, Clock::time_point now) const {
  std::shared_lock lock(mu_);
  // Not yet listed since the last reset: nothing is known of who is gone; asked again later.
  if (!live_known_) return {now + gone_after_, 0};
  auto it = index_.find(node);
  if (it == index_.end()) return {lists_since_ + gone_after_, 0};
  const Node& n = nodes_[it->second];
  if (n.run != 0 && expiry_ms < n.run) return {n.run_at + gone_after_, n.run};
  // Live, its run not heard yet: a node that starts may announce the devices that reconnect
  // to it at once before its roll call. Asked again gone_after after it became live; a node
  // whose run is still unknown then is of an older version (its roll call carries none).
  if (n.live && n.run == 0 && now < n.live_since + gone_after_) return {n.live_since + gone_after_, 0};
  if (n.live) return {Clock::time_point::max(), 0};
  const Clock::time_point absent = n.absent_since == Clock::time_point{} ? lists_since_ : n.absent_since;
  return {std::max(absent, lists_since_) + gone_after_, 0};
}

void DeviceRoutes::reset() {
  std::unique_lock lock(mu_);
  for (Node& n : nodes_) n.has_set = false;
  live_known_ = false;
}

std::string DeviceRoutes::encode_set(const std::vector<DeviceRef>& devices) {
  std::string out;
  for (const DeviceRef& d : devices) {
    put_str(out, d.user);
    put_u32(out, d.device);
  }
  return out;
}

bool DeviceRoutes::decode_set(std::string_view in, std::vector<DeviceRef>& out) {
  ByteReader r{in};
  while (r.ok && !r.in.empty()) {
    DeviceRef d;
    d.user = r.str();
    d.device = static_cast<uint32_t>(r.num(4));
    if (r.ok) out.push_back(std::move(d));
  }
  return r.ok;
}

}  // namespace tern::bus
