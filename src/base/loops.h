// Loops: the server's event loops, one per core (thread-per-core). Each loop is an
// io_context run by exactly one thread, so code running on a loop needs no strand and no lock
// for the state that loop owns: a connection lives on one loop for its life, and each
// conversation has one owning loop (see services/sequencer.h).
//
// Crossing loops: run(dst, task) runs the task on loop `dst`: inline when the caller is
// already on `dst`, otherwise through dst's mailbox. A mailbox wakes its loop once per batch
// (the first task queued into an empty mailbox posts one drain; every task queued before the
// drain runs rides along), so a burst of cross-loop work costs one wake-up, not one per task.
// Tasks from one loop to another run in the order they were queued.
//
// Thread-safety: run()/post() from any thread (also threads that are not loops, e.g. the
// store's writer); current() names the calling loop. Owned by the server's composition root;
// start() spawns the threads, stop() ends every loop, join() waits for the threads.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace tern {

class Loops {
 public:
  using Task = std::function<void()>;
  static constexpr size_t kNone = static_cast<size_t>(-1);

  explicit Loops(size_t count);
  ~Loops();
  Loops(const Loops&) = delete;
  Loops& operator=(const Loops&) = delete;

  size_t size() const { return loops_.size(); }
  boost::asio::io_context& context(size_t i) { return loops_[i]->io; }
  std::vector<boost::asio::io_context*> contexts();

  // Index of the loop of this Loops that the calling thread runs, or kNone (also in a fiber
  // on a loop's thread: base/fiber.h).
  size_t here() const;
  // The loop whose thread the caller runs on, in a fiber too (here() says kNone there, since
  // run() must not be inline in a fiber); kNone off the loops. For state a loop owns that its
  // fibers touch as well.
  size_t thread_loop() const;

  // Runs `task` on loop `dst`: inline if the caller is on it (not in a fiber), else queued
  // (batched wake-up).
  void run(size_t dst, Task task);
  // Always queues, also from `dst` itself (for callers that must not re-enter).
  void post(size_t dst, Task task);

  // Spawns one thread per loop. Loops keep running (even with no work) until stop().
  void start();
  // Lets every loop return once its queued handlers ran; idempotent; any thread.
  void release();
  // Stops every loop at once (pending handlers are dropped).
  void stop();
  void join();

  // Runs loop i on the calling thread until release()/stop() (tests that drive a loop
  // themselves instead of start()).
  void run_here(size_t i);

 private:
  struct Loop {
    Loop() : io(1), guard(boost::asio::make_work_guard(io)) {}
    boost::asio::io_context io;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard;
    std::mutex mu;
    std::vector<Task> inbox;  // guarded by mu
    bool scheduled = false;   // guarded by mu: a drain is posted and has not taken the inbox yet
    std::vector<Task> draining;  // loop thread only
    std::thread thread;
  };
  void drain(Loop& loop);

  std::vector<std::unique_ptr<Loop>> loops_;
};

}  // namespace tern
