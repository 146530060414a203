// Fiber: a stackful coroutine (Boost.Context) that runs on one event loop's thread, so that
// code written as plain calls (the store's Redis reads: send, then read the reply) can wait
// for the network without blocking the loop. In a fiber, a wait for a socket or a timer
// (wait_fd, sleep_for) suspends the fiber; the loop runs other work; the loop's handler for
// that socket or timer resumes the fiber where it stopped. This is how StoreReads drives the
// store's reads from the loops (services/store_reads.h): no thread per request, and no
// blocking call on a loop.
//
// Why stackful: the store contract (store/store.h) is synchronous and shared with RocksDB;
// a fiber lets its Redis backend wait without rewriting every read as a callback chain. A
// switch saves and restores a few registers (no system call).
//
// The stack is 256 KiB of reserved memory with a guard page below it (pages are committed
// only when touched); an overflow faults instead of writing over the heap.
//
// Ending: a fiber is destroyed only after its body returned (asserted). To end one that
// waits, its owner calls cancel() and resumes it: every wait then returns at once as failed
// (wait_fd false, sleep_for immediately), so the code in the fiber fails its call and
// returns. No exception crosses a fiber.
//
// Thread-safety: a fiber is created, resumed and run on its loop's thread only (resume() is
// called by that loop's handlers, never from inside another fiber); cancel() and the resumes
// that end it may come from another thread once that loop no longer runs. Owned by whoever
// created it (StoreReads).
#pragma once
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>

namespace tern {

class Fiber {
 public:
  static constexpr size_t kStackBytes = 256 * 1024;

  // `io`: the loop the fiber runs on (its waits' handlers are posted there). The body starts
  // at the first resume().
  Fiber(boost::asio::io_context& io, std::function<void()> body);
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // Runs the fiber until it suspends or its body returns. On the fiber's loop thread, not
  // from inside a fiber, not after done().
  void resume();
  bool done() const { return done_; }
  // From now on every wait of this fiber fails at once (see "Ending").
  void cancel();
  bool cancelled() const;
  boost::asio::io_context& io() { return io_; }

  // The fiber the calling thread runs now, or null (the thread's own stack).
  static Fiber* current();
  // In a fiber: back to whoever resumed it (which resumes it again later).
  static void suspend();

  // In a fiber: suspends it until `fd` is readable (writable), or until `deadline`. True
  // when the descriptor is ready; false at the deadline or if it could not be watched.
  // Does not take or close `fd`.
  static bool wait_fd(int fd, bool writable, std::chrono::steady_clock::time_point deadline);

  // In a fiber, suspends it for `d` (a timer on its loop); elsewhere, the thread sleeps.
  static void sleep_for(std::chrono::milliseconds d);

 private:
  struct Impl;
  void enter();
  boost::asio::io_context& io_;
  std::unique_ptr<Impl> impl_;
  bool done_ = false;
};

}  // namespace tern
