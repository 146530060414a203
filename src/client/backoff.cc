#include "client/backoff.h"

#include <algorithm>

namespace tern::client {

int64_t backoff_window_ms(const BackoffPolicy& policy, int attempt) {
  const int64_t base = std::max<int64_t>(policy.base_ms, 0);
  const int64_t cap = std::max<int64_t>(policy.cap_ms, 0);
  if (attempt < 0) attempt = 0;
  int64_t window = base;
  // Doubling stops as soon as the cap is reached, so there is no overflow for any attempt.
  for (int i = 0; i < attempt && window < cap; ++i) window = window > cap / 2 ? cap : window * 2;
  return std::min(window, cap);
}

int64_t backoff_delay_ms(const BackoffPolicy& policy, int attempt, uint64_t random) {
  const int64_t window = backoff_window_ms(policy, attempt);
  if (window <= 0) return 0;
  return static_cast<int64_t>(random % (static_cast<uint64_t>(window) + 1));
}

bool backoff_allows(const BackoffPolicy& policy, int attempt) {
  return policy.max_attempts <= 0 || attempt < policy.max_attempts;
}

}  // namespace tern::client
