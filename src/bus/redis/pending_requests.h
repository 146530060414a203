// PendingRequests: the requests this node sent to one other node (forwarded sends, RedisBus::
// request) that wait for their reply, each until its deadline. A request is ended once:
// by its reply, by a failure to publish it, or when its deadline passed (take() hands it
// out and forgets it; a reply that comes later finds nothing).
//
// Thread-safety: every method from any thread (one mutex): requests are added on the loops,
// answered on the subscriber's loop, expired by the bus's publisher thread. The replies are
// called by the caller of take(), outside the lock. Owned by RedisBus.
#pragma once
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bus/bus.h"

namespace tern::bus {

class PendingRequests {
 public:
  using Clock = std::chrono::steady_clock;
  struct Request {
    std::string node;  // where it went
    Clock::time_point deadline;
    Bus::Reply reply;
  };

  // Keeps the request; its id (the first is 1, never reused).
  uint64_t add(std::string node, Clock::time_point deadline, Bus::Reply reply);
  // The request, forgotten; nullopt if it was ended already.
  std::optional<Request> take(uint64_t id);
  // The ids of the requests whose deadline is at or before `now`, with their nodes (still
  // kept: the caller take()s each); `later` lowered to the earliest deadline still ahead.
  std::vector<std::pair<uint64_t, std::string>> past(Clock::time_point now, Clock::time_point& later) const;
  size_t size() const;

 private:
  mutable std::mutex mu_;
  uint64_t next_ = 1;
  std::unordered_map<uint64_t, Request> requests_;
};

}  // namespace tern::bus
