// PageBuilds: with reads in fibers (Redis), the backfill pages of one loop are read and
// rendered one at a time, as the embedded store does them inline on the loop.
//
// Why: an HTTP request runs in a fiber of its loop (tern_service.cc), up to
// --redis-read-fibers at once, and an answer is charged to the gateway's byte budget
// (global_queue_bytes) only once it is written. Twenty backfills of 100 messages of 60 KiB
// each, never read, were read and rendered side by side (~14 MB each: the stored frames and
// the JSON) before the first was charged: RSS grew ~150 MiB past a 16 MiB budget
// (AdversarialGateway.UnreadBackfillResponsesAreBounded on Redis). One page at a time per
// loop bounds what answers being built hold to one page per loop; the budget bounds the ones
// built and not yet read (beyond it they are answered 503 when written).
//
// The page is built in the fiber that asked first; pages asked for meanwhile wait in order
// (at most kMaxWaiting per loop, then run() refuses: answer 503) and are built one after the
// other by that same fiber. A small page waits for a large one
// of its loop; pages of different loops do not wait for each other.
//
// Thread: run() on a loop's thread (in a fiber on it); each loop's queue is touched there
// only. Called off the loops (reader threads, --redis-read-fibers 0) `build` runs at once:
// the reader threads (--redis-read-threads) bound those pages.
#pragma once
#include <cstddef>
#include <deque>
#include <functional>
#include <vector>

namespace tern::services {

class PageBuilds {
 public:
  static constexpr size_t kMaxWaiting = 1024;  // pages waiting per loop
  using Build = std::function<void()>;

  explicit PageBuilds(size_t loops) : loops_(loops) {}

  // `loop`: the calling thread's loop (Loops::here()), or Loops::kNone. Runs build() now if
  // no page of the loop is being built, else after the ones before it returned. `build`
  // answers before it returns (it may yield in between, waiting for the store).
  // False: kMaxWaiting pages wait already, `build` was not taken.
  bool run(size_t loop, Build build);

 private:
  struct Loop {
    bool building = false;  // a fiber is in drain(): it builds what waits
    std::deque<Build> waiting;
  };

  std::vector<Loop> loops_;
};

}  // namespace tern::services
