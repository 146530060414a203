// Test support: runs an io_context on the calling thread until a condition holds, bounded in
// time, so that a test drives its loop (and the fibers on it) and awaits a condition instead
// of sleeping.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "base/fiber.h"

namespace tern::store::redis::testing {

// Runs `io` in slices of 5 ms until `done()` holds (true) or `limit` passed (false).
template <typename Pred>
bool run_until(boost::asio::io_context& io, Pred done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    io.restart();
    io.run_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Fibers on one loop (io), as a loop's fibers share its connections: each starts at the
// loop's next turn; run() drives the loop until every one finished (bounded). A fiber still
// suspended at the end (a failed assertion) is cancelled and run to its end, as StoreReads
// ends its fibers.
class LoopFibers {
 public:
  explicit LoopFibers(boost::asio::io_context& io) : io_(io) {}
  ~LoopFibers() {
    for (auto& f : fibers_) {
      f->cancel();
      for (int i = 0; i < 1000 && !f->done(); ++i) f->resume();
    }
  }
  Fiber& spawn(std::function<void()> body) {
    fibers_.push_back(std::make_unique<Fiber>(io_, std::move(body)));
    Fiber* f = fibers_.back().get();
    boost::asio::post(io_, [f] { f->resume(); });
    return *f;
  }
  bool run(std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    return run_until(
        io_,
        [&] {
          for (auto& f : fibers_)
            if (!f->done()) return false;
          return true;
        },
        limit);
  }

 private:
  boost::asio::io_context& io_;
  std::vector<std::unique_ptr<Fiber>> fibers_;
};

}  // namespace tern::store::redis::testing
