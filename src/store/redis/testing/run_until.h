// Test support: runs an io_context on the calling thread until a condition holds, bounded in
// time, so that a test drives its loop (and the fibers on it) and awaits a condition instead
// of sleeping.
#pragma once
#include <chrono>

#include <boost/asio/io_context.hpp>

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

}  // namespace tern::store::redis::testing
