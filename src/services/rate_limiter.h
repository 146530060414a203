// Token buckets. TokenBucket: one device connection's sends (not thread-safe: owned by one
// DeviceSession and used on its loop only). KeyedRateLimiter: one bucket per key (a source
// address, a user), thread-safe, bounded: at most `max_keys` buckets, the least recently used
// dropped first (a dropped key starts again with a full bucket); or, with a shared store, the
// store's bucket of that key (below).
#pragma once
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>

#include "base/lru_map.h"
#include "store/store.h"

namespace tern::services {

class TokenBucket {
 public:
  TokenBucket(double rate_per_sec, double burst, int64_t now_us)
      : rate_(rate_per_sec), burst_(burst), tokens_(burst), last_us_(now_us) {}

  // Takes `n` tokens (default one) if available.
  bool take(int64_t now_us, double n = 1.0) {
    if (now_us > last_us_) {
      tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now_us - last_us_) / 1e6);
      last_us_ = now_us;
    }
    if (tokens_ < n) return false;
    tokens_ -= n;
    return true;
  }

 private:
  double rate_;
  double burst_;
  double tokens_;
  int64_t last_us_;
};

// rate_per_sec <= 0 means unlimited. With a shared store (`shared.store`), the buckets are the
// store's (store::Store::take_tokens, named "<shared.name>:<key>"): on Redis one bucket per key
// for every node, so that a client's budget does not grow with the nodes behind a load
// balancer. Where the store keeps none (embedded), or cannot answer (Redis away), this
// limiter's own bucket decides. With a shared store, take() may wait for Redis: call it where
// a store read may run (services/store_reads.h), as the HTTP handlers and upload decisions do.
struct SharedBuckets {
  store::Store* store = nullptr;
  std::string name;  // the limit's part of the bucket key
};

class KeyedRateLimiter {
 public:
  KeyedRateLimiter(double rate_per_sec, double burst, size_t max_keys, SharedBuckets shared = {})
      : rate_(rate_per_sec), burst_(std::max(1.0, burst)), buckets_(std::max<size_t>(1, max_keys)),
        shared_(std::move(shared)) {}

  // Takes `n` tokens (default one) from the key's bucket if available.
  bool take(const std::string& key, int64_t now_us, double n = 1.0) {
    if (rate_ <= 0) return true;
    if (shared_.store) {
      auto taken = shared_.store->take_tokens(shared_.name + ":" + key, rate_, burst_, n);
      if (taken && *taken) return **taken;
    }
    std::lock_guard lock(mu_);
    TokenBucket* b = buckets_.find(key);
    if (!b) b = &buckets_.emplace(key, TokenBucket(rate_, burst_, now_us));  // may evict the LRU key
    return b->take(now_us, n);
  }

  size_t size() {
    std::lock_guard lock(mu_);
    return buckets_.size();
  }

 private:
  const double rate_;
  const double burst_;
  std::mutex mu_;
  LruMap<std::string, TokenBucket> buckets_;  // an evicted key starts again with a full bucket
  const SharedBuckets shared_;
};

}  // namespace tern::services
