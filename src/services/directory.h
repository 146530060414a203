// Read-mostly caches of the store's account and conversation data that every send consults:
// conversation snapshots (members with joined/left seqs) and each user's device list.
//
// Conversation snapshots are immutable (shared_ptr<const>) and replaced whole. Only the
// sequencer shard that owns a conversation replaces its snapshot, at the moment it sequences
// a membership change, so every send sequenced afterwards sees the new membership.
// Device lists are replaced by Accounts when a device is linked.
//
// Bounded: each cache holds `capacity` entries (--directory-cache, default 100,000), the
// least recently used evicted first and read again from the store when next needed. An entry
// that was put (a membership change or device reservation not yet committed, which the store
// does not have yet) is kept beyond the capacity for kPinnedMs after the put, far longer than
// any commit takes, but never beyond 2 × capacity (the hard bound). Only real users are
// cached: a lookup of an unknown name leaves nothing behind.
// Sizes are exported as tern_directory_cached_conversations / tern_directory_cached_users.
//
// Thread-safe (a mutex per cache; held only for the map access). Owned by TernService.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/lru_map.h"
#include "base/result.h"
#include "store/store.h"

namespace tern {
class Gauge;
}

namespace tern::services {

// Sets the gauge (if any) to n; out of line, so this header needs no metrics include.
void set_gauge(Gauge* gauge, size_t n);

using ConversationPtr = std::shared_ptr<const store::Conversation>;

// Membership lookups on a snapshot.
const store::Member* find_member(const store::Conversation& c, const std::string& user);
bool is_active_member(const store::Conversation& c, const std::string& user);

// A size-bounded LRU map from string to V, thread-safe; entries may be pinned until a time
// (ms), but never beyond twice the capacity (the hard bound). Built on LruMap.
template <typename V>
class LruCache {
 public:
  LruCache(size_t capacity, Gauge* size_gauge)
      : map_(std::max<size_t>(1, capacity), [this](const Slot& s) { return s.pinned_until > now_; },
             2 * std::max<size_t>(1, capacity)),
        gauge_(size_gauge) {}

  std::optional<V> get(const std::string& key) {
    std::lock_guard lock(mu_);
    if (Slot* s = map_.find(key)) return s->value;
    return std::nullopt;
  }
  // Runs fn(find) under one lock and returns its result; find(key) is the cached value or
  // null, a use like get() without the copy. For a caller that looks up many keys at once.
  template <typename Fn>
  auto locked(Fn&& fn) {
    std::lock_guard lock(mu_);
    return fn([this](const std::string& key) -> const V* {
      Slot* s = map_.find(key);
      return s ? &s->value : nullptr;
    });
  }
  // Inserts unless present (keep_existing) or replaces; returns the cached value.
  V put(const std::string& key, V value, bool keep_existing, int64_t pinned_until_ms, int64_t now_ms) {
    std::lock_guard lock(mu_);
    if (Slot* s = map_.find(key)) {
      if (!keep_existing) {
        s->value = std::move(value);
        s->pinned_until = std::max(s->pinned_until, pinned_until_ms);
      }
      return s->value;
    }
    now_ = now_ms;  // what the pin predicate compares with during this insert's eviction
    V out = map_.emplace(key, Slot{std::move(value), pinned_until_ms}).value;
    publish();
    return out;
  }
  void erase(const std::string& key) {
    std::lock_guard lock(mu_);
    map_.erase(key);
    publish();
  }
  size_t size() {
    std::lock_guard lock(mu_);
    return map_.size();
  }
  // Drops every entry but those pinned at now_ms (put, not yet committed: the store does not
  // have them yet, so they are not stale).
  void erase_unpinned(int64_t now_ms) {
    std::lock_guard lock(mu_);
    map_.erase_if([&](const std::string&, const Slot& s) { return s.pinned_until <= now_ms; });
    publish();
  }

 private:
  struct Slot {
    V value;
    int64_t pinned_until = 0;
  };
  void publish() { set_gauge(gauge_, map_.size()); }

  std::mutex mu_;
  int64_t now_ = 0;  // guarded by mu_
  LruMap<std::string, Slot> map_;
  Gauge* gauge_;
};

class Directory {
 public:
  static constexpr size_t kDefaultCapacity = 100000;
  static constexpr int64_t kPinnedMs = 60000;

  explicit Directory(store::Store& store, size_t capacity = kDefaultCapacity);

  // nullptr (not an error) when the conversation does not exist.
  Result<ConversationPtr> conversation(const std::string& id);
  // conversation() of each id, in order; those neither cached nor held are read with one
  // store call (Store::conversations_of: one round trip on Redis) and cached: a device's
  // connect, for the conversations of its inbox.
  Result<std::vector<ConversationPtr>> conversations(const std::vector<std::string>& ids);
  // The cached snapshot, or null: never reads the store.
  ConversationPtr cached_conversation(const std::string& id) { return conversations_.get(id).value_or(nullptr); }
  void put_conversation(ConversationPtr snapshot);
  void forget_conversation(const std::string& id);
  // The user's membership of `c`: the member list, or for a channel subscriber (channels list
  // only owner and admins) the user's index row, a store point read. nullopt: not in it.
  Result<std::optional<store::Member>> member(const store::Conversation& c, const std::string& user);

  Result<std::vector<uint32_t>> devices(const std::string& user);  // empty if no such user
  // Brings the device lists of those of `users` not cached into the cache with one store call
  // (Store::devices_of: one round trip on Redis): a group's warm-up, on a reader thread.
  Result<void> prefetch_devices(const std::vector<std::string>& users);
  // Whether every active member of `c` has its device list cached (an unknown user never
  // has): a warm conversation's check, on its loop for every piece of its work, so one lock
  // for all of them and no copy of the member names; never reads the store. Appends their
  // devices to `all` if given.
  bool devices_cached(const store::Conversation& c, std::vector<DeviceRef>* all);
  void put_devices(const std::string& user, std::vector<uint32_t> devices);
  // Another node linked a device of the user: the next devices() reads the store.
  void forget_devices(const std::string& user);
  // This node may have missed other nodes' invalidations (bus.h set_resync_sink): every
  // snapshot and device list is read again when next needed, but those put here and not yet
  // committed (pinned).
  void forget_all();

  size_t cached_conversations() { return conversations_.size(); }
  size_t cached_users() { return devices_.size(); }

 private:
  store::Store& store_;
  LruCache<ConversationPtr> conversations_;
  LruCache<std::vector<uint32_t>> devices_;
};

}  // namespace tern::services
