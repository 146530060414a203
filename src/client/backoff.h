// Reconnect and retry delays: exponential backoff with full jitter, so that many clients
// dropped at the same moment (a server restart) come back spread over the window instead
// of all at once. Pure functions; thread-safe.
#pragma once
#include <cstdint>

namespace tern::client {

struct BackoffPolicy {
  int64_t base_ms = 250;    // window of the first retry
  int64_t cap_ms = 30'000;  // the window never grows past this
  int max_attempts = 0;     // consecutive failures before giving up; 0 = never give up
};

// Upper bound of the window for `attempt` (0-based): min(cap, base * 2^attempt), computed
// without overflow. Never negative.
int64_t backoff_window_ms(const BackoffPolicy& policy, int attempt);

// Full jitter: a delay uniform in [0, window] chosen by `random` (any 64-bit value, e.g.
// from a PRNG). Deterministic for a given input, hence testable.
int64_t backoff_delay_ms(const BackoffPolicy& policy, int attempt, uint64_t random);

// True when `attempt` (0-based count of consecutive failures so far) may still retry.
bool backoff_allows(const BackoffPolicy& policy, int attempt);

}  // namespace tern::client
