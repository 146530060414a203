// Token bucket for one device connection's sends. Not thread-safe: owned by one
// DeviceSession and used on its strand only.
#pragma once
#include <algorithm>
#include <cstdint>

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

}  // namespace tern::services
