// Wall clock in wire-v1 units (ms since the Unix epoch) and a monotonic clock for latency.
#pragma once
#include <chrono>
#include <cstdint>

namespace tern {

inline int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

// Wall clock in µs (comparisons of when things happened on different nodes).
inline int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

inline int64_t mono_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace tern
