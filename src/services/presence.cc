#include "services/presence.h"

#include "base/clock.h"
#include "proto/frames.h"

namespace tern::services {

Presence::Presence(store::Store& store, GroupCommitter& committer, Directory& directory, bus::Bus& bus,
                   const ServiceOptions& options)
    : store_(store), committer_(committer), directory_(directory), bus_(bus), options_(options) {}

std::shared_ptr<const bus::Notification> Presence::presence_frame(const std::string& user, bool online,
                                                                  int64_t last_seen) {
  auto n = std::make_shared<bus::Notification>();
  n->kind = bus::Notification::Kind::kFrame;
  n->frame = std::make_shared<const std::string>(proto::encode_presence(user, online, last_seen));
  return n;
}

void Presence::broadcast(const std::string& user, bool online, int64_t last_seen) {
  std::vector<std::shared_ptr<bus::Endpoint>> targets;
  {
    std::lock_guard lock(mu_);
    auto it = watchers_.find(user);
    if (it == watchers_.end()) return;
    for (auto& [_, weak] : it->second)
      if (auto e = weak.lock()) targets.push_back(std::move(e));
  }
  if (targets.empty()) return;
  auto n = presence_frame(user, online, last_seen);
  for (auto& t : targets) t->notify(n);
}

void Presence::device_attached(const std::string& user, size_t devices_online) {
  if (devices_online == 1) broadcast(user, true, 0);
}

void Presence::device_detached(const std::string& user, size_t devices_online) {
  if (devices_online != 0) return;
  const int64_t now = now_ms();
  store::Batch batch;
  batch.add(store::SetLastSeen{user, now});
  committer_.submit(std::move(batch), nullptr);  // best effort: last_seen is not a guarantee
  broadcast(user, false, now);
}

bool Presence::share_conversation(const std::string& a, const std::string& b) {
  if (a == b) return true;
  auto mine = store_.user_conversations(a);
  if (!mine) return false;
  for (const auto& uc : *mine) {
    if (uc.left_seq != 0) continue;
    auto conv = directory_.conversation(uc.conversation_id);
    if (conv && *conv && is_active_member(**conv, a) && is_active_member(**conv, b)) return true;
  }
  return false;
}

Result<void> Presence::subscribe(uint64_t subscriber_id, const std::string& subscriber_user,
                                 const std::shared_ptr<bus::Endpoint>& subscriber,
                                 const std::vector<std::string>& users) {
  std::vector<std::string> visible;
  for (const auto& u : users)
    if (share_conversation(subscriber_user, u)) visible.push_back(u);
  {
    std::lock_guard lock(mu_);
    auto& mine = watching_[subscriber_id];
    size_t added = 0;
    for (const auto& u : visible) added += mine.count(u) ? 0 : 1;
    if (mine.size() + added > options_.max_presence_subscriptions)
      return make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(options_.max_presence_subscriptions) +
                                                       " presence subscriptions per connection");
    for (const auto& u : visible) {
      mine.insert(u);
      watchers_[u][subscriber_id] = subscriber;
    }
  }
  for (const auto& u : visible) {
    const bool online = bus_.online(u);
    int64_t last_seen = 0;
    if (!online) {
      auto ls = store_.last_seen(u);
      if (ls) last_seen = *ls;
    }
    subscriber->notify(presence_frame(u, online, last_seen));
  }
  return {};
}

void Presence::unsubscribe_all(uint64_t subscriber_id) {
  std::lock_guard lock(mu_);
  auto it = watching_.find(subscriber_id);
  if (it == watching_.end()) return;
  for (const auto& u : it->second) {
    auto w = watchers_.find(u);
    if (w == watchers_.end()) continue;
    w->second.erase(subscriber_id);
    if (w->second.empty()) watchers_.erase(w);
  }
  watching_.erase(it);
}

Result<void> Presence::typing(const DeviceRef& from, const std::string& conversation_id, bool active) {
  auto conv = directory_.conversation(conversation_id);
  if (!conv) return conv.error();
  if (!*conv) return make_error(ErrorCode::kNotFound, "unknown conversation");
  if (!is_active_member(**conv, from.user)) return make_error(ErrorCode::kForbidden, "not a member of this conversation");
  auto n = std::make_shared<bus::Notification>();
  n->kind = bus::Notification::Kind::kFrame;
  n->frame = std::make_shared<const std::string>(proto::encode_typing(conversation_id, from.user, active));
  std::shared_ptr<const bus::Notification> shared = std::move(n);
  for (const auto& m : (*conv)->members)
    if (m.active() && m.user != from.user) bus_.publish_user(m.user, shared);
  return {};
}

}  // namespace tern::services
