// Admission: sends in flight per loop (accepted from a connection of the loop and not yet
// answered), the counter behind the per-loop admission bound (DeviceSession refuses a send
// with `overloaded` when it is reached). Each slot is touched only by its own loop, so it is
// a plain counter on its own cache line. Owned by TernService.
#pragma once
#include <cstddef>
#include <vector>

namespace tern::services {

class Admission {
 public:
  explicit Admission(size_t loops) : slots_(loops + 1) {}
  // The loop's counter; an index out of range (Loops::kNone: a connection outside the
  // loops, in tests) shares one extra slot.
  size_t& in_flight(size_t loop) { return slots_[loop < slots_.size() - 1 ? loop : slots_.size() - 1].n; }

 private:
  struct alignas(64) Slot {
    size_t n = 0;
  };
  std::vector<Slot> slots_;
};

}  // namespace tern::services
