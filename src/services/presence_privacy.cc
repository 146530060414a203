#include "services/presence_privacy.h"

#include "services/user_records.h"

namespace tern::services {

const char* visibility_name(PresenceVisibility v) {
  switch (v) {
    case PresenceVisibility::kEveryone: return "everyone";
    case PresenceVisibility::kNobody: return "nobody";
    case PresenceVisibility::kContacts: break;
  }
  return "contacts";
}

bool parse_visibility(const std::string& s, PresenceVisibility& out) {
  if (s == "contacts") out = PresenceVisibility::kContacts;
  else if (s == "everyone") out = PresenceVisibility::kEveryone;
  else if (s == "nobody") out = PresenceVisibility::kNobody;
  else return false;
  return true;
}

bool PresencePrivacy::cached(const std::string& user) {
  std::lock_guard lock(mu_);
  return cache_.find(user) != nullptr;
}

Result<void> PresencePrivacy::load(const std::string& user) {
  uint64_t generation = 0;
  {
    std::lock_guard lock(mu_);
    if (cache_.find(user)) return {};
    generation = generation_;
  }
  auto policy = std::make_shared<Policy>();
  auto setting = store_.user_record(user, records::kPresence);
  if (!setting) return setting.error();
  if (*setting) parse_visibility(**setting, policy->visibility);
  auto rows = store_.user_records(user, records::kAcceptPrefix, kMaxAccepted);
  if (!rows) return rows.error();
  for (const auto& row : *rows)
    if (!row.second.empty()) policy->accepted.insert(row.second);  // the value names the counterpart
  std::lock_guard lock(mu_);
  if (cache_.find(user)) return {};
  // Another node's change was announced during the read, which may have missed it: not kept
  // (the caller finds the user still not cached and decides nothing on a guess).
  if (generation != generation_) return {};
  auto [from, to] = recent_.equal_range(user);
  for (auto it = from; it != to; ++it) policy->accepted.insert(it->second);
  cache_.emplace(user, std::move(policy));
  return {};
}

bool PresencePrivacy::allowed(const std::string& subject, const std::string& viewer) {
  if (subject == viewer) return true;
  {
    std::lock_guard lock(mu_);
    PolicyPtr* v = cache_.find(viewer);
    if (!v || (*v)->visibility == PresenceVisibility::kNobody) return false;
    if (!admits_locked(subject, viewer)) return false;
  }
  return !blocks_.blocks(subject, viewer);
}

bool PresencePrivacy::setting_admits(const std::string& subject, const std::string& viewer) {
  if (subject == viewer) return true;
  std::lock_guard lock(mu_);
  return admits_locked(subject, viewer);
}

bool PresencePrivacy::admits_locked(const std::string& subject, const std::string& viewer) {
  PolicyPtr* s = cache_.find(subject);
  if (!s) return false;
  switch ((*s)->visibility) {
    case PresenceVisibility::kNobody: return false;
    case PresenceVisibility::kContacts: return (*s)->accepted.count(viewer) != 0;
    case PresenceVisibility::kEveryone: return true;
  }
  return false;
}

Result<PresenceVisibility> PresencePrivacy::visibility(const std::string& user) {
  if (auto r = load(user); !r) return r.error();
  std::lock_guard lock(mu_);
  if (PolicyPtr* p = cache_.find(user)) return (*p)->visibility;
  return PresenceVisibility::kContacts;  // evicted in between: the store said so a moment ago
}

void PresencePrivacy::forget(const std::string& user) {
  std::lock_guard lock(mu_);
  cache_.erase(user);
  ++generation_;
}

void PresencePrivacy::forget_all() {
  std::lock_guard lock(mu_);
  cache_.clear();
  ++generation_;
}

void PresencePrivacy::set_cached_visibility(const std::string& user, PresenceVisibility v) {
  std::lock_guard lock(mu_);
  if (PolicyPtr* p = cache_.find(user)) (*p)->visibility = v;
}

bool PresencePrivacy::known_accepted(const std::string& user, const std::string& conversation_id) {
  std::lock_guard lock(mu_);
  return accepted_pairs_.find(user + '\n' + conversation_id) != nullptr;
}

void PresencePrivacy::accepted(const std::string& user, const std::string& conversation_id, const std::string& other) {
  {
    std::lock_guard lock(mu_);
    accepted_pairs_.emplace(user + '\n' + conversation_id, true);
    if (PolicyPtr* p = cache_.find(user)) {
      if ((*p)->accepted.size() < kMaxAccepted) (*p)->accepted.insert(other);
    } else {
      if (recent_.size() >= kMaxRecent) recent_.clear();
      recent_.emplace(user, other);
    }
  }
  if (accepted_sink_) accepted_sink_(user);
}

}  // namespace tern::services
