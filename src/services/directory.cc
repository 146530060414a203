#include "services/directory.h"

#include "base/clock.h"
#include "base/metrics.h"
#include "services/warm_hold.h"

namespace tern::services {
namespace {

Gauge& conversations_gauge() {
  static Gauge& g = MetricsRegistry::global().gauge("tern_directory_cached_conversations",
                                                    "conversation snapshots in the directory cache");
  return g;
}
Gauge& users_gauge() {
  static Gauge& g = MetricsRegistry::global().gauge("tern_directory_cached_users", "device lists in the directory cache");
  return g;
}
[[maybe_unused]] Gauge& registered_at_start_c = conversations_gauge();
[[maybe_unused]] Gauge& registered_at_start_u = users_gauge();

}  // namespace

const store::Member* find_member(const store::Conversation& c, const std::string& user) {
  for (const auto& m : c.members)
    if (m.user == user) return &m;
  return nullptr;
}

bool is_active_member(const store::Conversation& c, const std::string& user) {
  const auto* m = find_member(c, user);
  return m && m->active();
}

void set_gauge(Gauge* gauge, size_t n) {
  if (gauge) gauge->set(static_cast<int64_t>(n));
}

Directory::Directory(store::Store& store, size_t capacity)
    : store_(store), conversations_(capacity, &conversations_gauge()), devices_(capacity, &users_gauge()) {}

Result<ConversationPtr> Directory::conversation(const std::string& id) {
  if (auto hit = conversations_.get(id)) return *hit;
  if (auto held = WarmHold::held_conversation(id)) return *held;  // evicted since the warm-up
  auto loaded = store_.conversation(id);
  if (!loaded) return loaded.error();
  if (!*loaded) return ConversationPtr{};  // unknown: nothing cached
  auto snapshot = std::make_shared<const store::Conversation>(std::move(**loaded));
  // A concurrent put (a membership change) wins over what we just read.
  return conversations_.put(id, std::move(snapshot), /*keep_existing=*/true, 0, now_ms());
}

Result<std::vector<ConversationPtr>> Directory::conversations(const std::vector<std::string>& ids) {
  std::vector<ConversationPtr> out(ids.size());
  std::vector<std::string> missing;
  std::vector<size_t> at;  // missing[k] answers out[at[k]]
  for (size_t i = 0; i < ids.size(); ++i) {
    if (auto hit = conversations_.get(ids[i])) out[i] = *hit;
    else if (auto held = WarmHold::held_conversation(ids[i])) out[i] = *held;
    else {
      missing.push_back(ids[i]);
      at.push_back(i);
    }
  }
  if (missing.empty()) return out;
  auto loaded = store_.conversations_of(missing);
  if (!loaded) return loaded.error();
  const int64_t now = now_ms();
  for (size_t k = 0; k < missing.size(); ++k) {
    if (!(*loaded)[k]) continue;  // unknown: nothing cached, null answered
    auto snapshot = std::make_shared<const store::Conversation>(std::move(*(*loaded)[k]));
    // A concurrent put (a membership change) wins over what we just read.
    out[at[k]] = conversations_.put(missing[k], std::move(snapshot), /*keep_existing=*/true, 0, now);
  }
  return out;
}

void Directory::put_conversation(ConversationPtr snapshot) {
  const int64_t now = now_ms();
  const std::string id = snapshot->id;
  conversations_.put(id, std::move(snapshot), /*keep_existing=*/false, now + kPinnedMs, now);
}

Result<std::optional<store::Member>> Directory::member(const store::Conversation& c, const std::string& user) {
  if (const auto* m = find_member(c, user)) return std::optional<store::Member>(*m);
  if (c.type != store::ConvType::kChannel) return std::optional<store::Member>{};
  auto row = store_.user_conversation(user, c.id);
  if (!row) return row.error();
  if (!*row) return std::optional<store::Member>{};
  return std::optional<store::Member>(store::Member{user, (*row)->joined_seq, (*row)->left_seq, false});
}

void Directory::forget_conversation(const std::string& id) { conversations_.erase(id); }

void Directory::forget_devices(const std::string& user) { devices_.erase(user); }

void Directory::forget_all() {
  const int64_t now = now_ms();
  conversations_.erase_unpinned(now);
  devices_.erase_unpinned(now);
}

Result<std::vector<uint32_t>> Directory::devices(const std::string& user) {
  if (auto hit = devices_.get(user)) return *hit;
  if (auto held = WarmHold::held_devices(user)) return std::move(*held);  // evicted since the warm-up
  auto loaded = store_.devices(user);
  if (!loaded) return loaded.error();
  if (loaded->empty()) return std::vector<uint32_t>{};  // no such user: nothing cached
  return devices_.put(user, std::move(*loaded), /*keep_existing=*/true, 0, now_ms());
}

Result<void> Directory::prefetch_devices(const std::vector<std::string>& users) {
  std::vector<std::string> missing;
  for (const auto& u : users)
    if (!devices_.get(u)) missing.push_back(u);
  if (missing.empty()) return {};
  auto loaded = store_.devices_of(missing);
  if (!loaded) return loaded.error();
  const int64_t now = now_ms();
  for (size_t i = 0; i < missing.size(); ++i)
    if (!(*loaded)[i].empty())  // no such user: nothing cached (as devices())
      devices_.put(missing[i], std::move((*loaded)[i]), /*keep_existing=*/true, 0, now);
  return {};
}

bool Directory::devices_cached(const store::Conversation& c, std::vector<DeviceRef>* all) {
  return devices_.locked([&](auto find) {
    for (const store::Member& m : c.members) {
      if (!m.active()) continue;
      const std::vector<uint32_t>* devices = find(m.user);
      if (!devices) return false;
      if (all)
        for (uint32_t d : *devices) all->push_back(DeviceRef{m.user, d});
    }
    return true;
  });
}

void Directory::put_devices(const std::string& user, std::vector<uint32_t> devices) {
  const int64_t now = now_ms();
  devices_.put(user, std::move(devices), /*keep_existing=*/false, now + kPinnedMs, now);
}

}  // namespace tern::services
