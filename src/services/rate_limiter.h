// Token buckets. TokenBucket: one device connection's sends (not thread-safe: owned by one
// DeviceSession and used on its strand only). KeyedRateLimiter: one bucket per key (a source
// address, a user), thread-safe, bounded: at most `max_keys` buckets, the least recently used
// dropped first (a dropped key starts again with a full bucket).
#pragma once
#include <algorithm>
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

namespace tern::services {

class TokenBucket {
 public:
  TokenBucket(double rate_per_sec, double burst, int64_t now_us)
      : rate_(rate_per_sec), burst_(burst), tokens_(burst), last_us_(now_us) {}

  // Takes one token if available.
  bool take(int64_t now_us) {
    if (now_us > last_us_) {
      tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now_us - last_us_) / 1e6);
      last_us_ = now_us;
    }
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
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
      : rate_(rate_per_sec), burst_(std::max(1.0, burst)), max_keys_(std::max<size_t>(1, max_keys)) {}

  // Takes one token from the key's bucket if available.
  bool take(const std::string& key, int64_t now_us) {
    if (rate_ <= 0) return true;
    std::lock_guard lock(mu_);
    auto it = buckets_.find(key);
    if (it == buckets_.end()) {
      if (buckets_.size() >= max_keys_) {
        buckets_.erase(lru_.back());
        lru_.pop_back();
      }
      lru_.push_front(key);
      it = buckets_.emplace(key, Slot{TokenBucket(rate_, burst_, now_us), lru_.begin()}).first;
    } else {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    }
    return it->second.bucket.take(now_us);
  }

  size_t size() {
    std::lock_guard lock(mu_);
    return buckets_.size();
  }

 private:
  struct Slot {
    TokenBucket bucket;
    std::list<std::string>::iterator lru;
  };
  const double rate_;
  const double burst_;
  const size_t max_keys_;
  std::mutex mu_;
  std::list<std::string> lru_;  // most recent first
  std::unordered_map<std::string, Slot> buckets_;
};

}  // namespace tern::services
