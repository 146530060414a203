// Token buckets. TokenBucket: one device connection's sends (not thread-safe: owned by one
// DeviceSession and used on its loop only). KeyedRateLimiter: one bucket per key (a source
// address, a user), thread-safe, bounded: at most `max_keys` buckets, the least recently used
// dropped first (a dropped key starts again with a full bucket).
#pragma once
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>

#include "base/lru_map.h"

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

// rate_per_sec <= 0 means unlimited.
class KeyedRateLimiter {
 public:
  KeyedRateLimiter(double rate_per_sec, double burst, size_t max_keys)
      : rate_(rate_per_sec), burst_(std::max(1.0, burst)), buckets_(std::max<size_t>(1, max_keys)) {}

  // Takes `n` tokens (default one) from the key's bucket if available.
  bool take(const std::string& key, int64_t now_us, double n = 1.0) {
    if (rate_ <= 0) return true;
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
};

}  // namespace tern::services
