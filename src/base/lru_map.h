// LruMap: a map bounded in entries that evicts the least recently used entry, but never one
// the caller pins (an entry with work in flight: evicting it would lose state the store does
// not have yet) — unless the map holds more than `hard_capacity` entries, when pinned ones go
// too. Not thread-safe: each instance belongs to one loop, or to a caller that locks it.
#pragma once
#include <cstddef>
#include <functional>
#include <list>
#include <unordered_map>
#include <utility>

namespace tern {

template <typename K, typename V>
class LruMap {
 public:
  // pinned(value) → true keeps the entry even when it is the least recently used.
  explicit LruMap(size_t capacity, std::function<bool(const V&)> pinned = nullptr,
                  size_t hard_capacity = static_cast<size_t>(-1))
      : capacity_(capacity ? capacity : 1), hard_capacity_(hard_capacity), pinned_(std::move(pinned)) {}

  // The entry, marked most recently used; nullptr if absent.
  V* find(const K& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return &it->second->second;
  }
  // Inserts (or finds) the entry, then evicts unpinned least recently used entries beyond the
  // capacity. The returned reference stays valid until the entry itself is evicted or erased;
  // the new entry is most recently used, so the eviction here never takes it.
  V& emplace(const K& key, V value) {
    if (V* v = find(key)) return *v;
    order_.emplace_front(key, std::move(value));
    index_.emplace(key, order_.begin());
    evict();
    return order_.front().second;
  }
  void erase(const K& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    order_.erase(it->second);
    index_.erase(it);
  }
  void clear() {
    index_.clear();
    order_.clear();
  }
  // Erases every entry for which drop(key, value) is true (a walk of the whole map).
  template <typename Pred>
  void erase_if(Pred drop) {
    for (auto it = order_.begin(); it != order_.end();) {
      if (drop(it->first, it->second)) {
        index_.erase(it->first);
        it = order_.erase(it);
      } else {
        ++it;
      }
    }
  }
  size_t size() const { return index_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  void evict() {
    // Walks from the least recently used end; pinned entries are skipped (bounded walk, so a
    // map full of pinned entries may exceed the capacity until they unpin).
    auto it = order_.end();
    size_t steps = 0;
    while (index_.size() > capacity_ && steps++ < 64) {
      if (it == order_.begin()) break;
      --it;
      if (it == order_.begin()) break;  // never the entry just used
      if (pinned_ && index_.size() <= hard_capacity_ && pinned_(it->second)) continue;
      index_.erase(it->first);
      it = order_.erase(it);
    }
  }

  size_t capacity_;
  size_t hard_capacity_;
  std::function<bool(const V&)> pinned_;
  std::list<std::pair<K, V>> order_;  // front = most recently used
  std::unordered_map<K, typename std::list<std::pair<K, V>>::iterator> index_;
};

}  // namespace tern
