#include "base/fiber_mutex.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>

namespace tern {
namespace {

using namespace std::chrono_literals;

// Two fibers of one loop: the second finds the mutex held by the first, which holds it
// across a wait. The second suspends instead of blocking the thread, so the loop runs other
// work meanwhile and the first gets to its unlock; then the second has it. (With a
// std::mutex the loop's thread would wait for itself.)
TEST(FiberMutex, AFiberWaitingForItLetsItsLoopRunTheHolder) {
  boost::asio::io_context io;
  FiberMutex mu;
  std::vector<std::string> order;
  Fiber a(io, [&] {
    std::lock_guard lock(mu);
    order.push_back("a locked");
    Fiber::sleep_for(30ms);  // a store read, say
    order.push_back("a unlocks");
  });
  Fiber b(io, [&] {
    order.push_back("b waits");
    std::lock_guard lock(mu);
    order.push_back("b locked");
  });
  boost::asio::post(io, [&] { a.resume(); });
  boost::asio::post(io, [&] { b.resume(); });
  boost::asio::post(io, [&] { order.push_back("other work"); });
  io.run_for(5s);
  EXPECT_TRUE(a.done());
  EXPECT_TRUE(b.done());
  EXPECT_EQ(order, (std::vector<std::string>{"a locked", "b waits", "other work", "a unlocks", "b locked"}));
  EXPECT_TRUE(mu.try_lock());
  mu.unlock();
}

// Polls `pred` every millisecond for at most 5 s; its last value.
template <typename Pred>
bool soon(Pred pred) {
  for (int i = 0; i < 5000 && !pred(); ++i) std::this_thread::sleep_for(1ms);
  return pred();
}

// Waiters get it in the order they came, whether fibers or threads.
TEST(FiberMutex, WaitersAreHandedItInTheOrderTheyCame) {
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread loop([&] { io.run_for(10s); });
  FiberMutex mu;
  std::mutex order_mu;
  std::vector<std::string> order;
  auto note = [&](std::string s) {
    std::lock_guard l(order_mu);
    order.push_back(std::move(s));
  };
  mu.lock();  // this thread holds it while the waiters line up
  std::vector<std::unique_ptr<Fiber>> fibers;
  for (int i = 0; i < 3; ++i) {
    fibers.push_back(std::make_unique<Fiber>(io, [&, i] {
      std::lock_guard lock(mu);
      note("fiber " + std::to_string(i));
    }));
  }
  // One at a time, so that the order of arrival is known; a thread queues after fiber 1.
  std::thread t;
  for (int i = 0; i < 3; ++i) {
    boost::asio::post(io, [&, i] { fibers[i]->resume(); });
    ASSERT_TRUE(soon([&] { return mu.waiting() == static_cast<size_t>(i + (i == 2 ? 2 : 1)); }));
    if (i == 1) {
      t = std::thread([&] {
        std::lock_guard lock(mu);
        note("thread");
      });
      ASSERT_TRUE(soon([&] { return mu.waiting() == 3; }));
    }
  }
  mu.unlock();
  t.join();
  guard.reset();
  loop.join();
  for (auto& f : fibers) EXPECT_TRUE(f->done());
  EXPECT_EQ(order, (std::vector<std::string>{"fiber 0", "fiber 1", "thread", "fiber 2"}));
}

// A thread waits for a fiber that holds it across a wait, and a fiber for a thread: each
// gets it once the other let go, and the fiber's loop goes on meanwhile.
TEST(FiberMutex, FibersAndThreadsShareIt) {
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread loop([&] { io.run_for(10s); });
  FiberMutex mu;
  std::atomic<bool> fiber_holds{false}, thread_had_it{false}, fiber_had_it{false};
  Fiber f(io, [&] {
    {
      std::lock_guard lock(mu);
      fiber_holds = true;
      // Holds it across waits until the thread is queued.
      for (int i = 0; i < 5000 && mu.waiting() == 0; ++i) Fiber::sleep_for(1ms);
      EXPECT_FALSE(thread_had_it.load());
    }
    std::lock_guard lock(mu);  // the thread has it now: this fiber waits in turn
    EXPECT_TRUE(thread_had_it.load());
    fiber_had_it = true;
  });
  boost::asio::post(io, [&] { f.resume(); });
  ASSERT_TRUE(soon([&] { return fiber_holds.load(); }));
  std::atomic<int> ticks{0};
  {
    std::lock_guard lock(mu);  // waits for the fiber
    thread_had_it = true;
    ASSERT_TRUE(soon([&] { return mu.waiting() == 1; }));  // the fiber waits for this thread
    // ... and its loop still runs posted work.
    for (int i = 0; i < 3; ++i) boost::asio::post(io, [&] { ++ticks; });
    EXPECT_TRUE(soon([&] { return ticks.load() == 3; }));
  }
  EXPECT_TRUE(soon([&] { return fiber_had_it.load(); }));
  guard.reset();
  loop.join();
  EXPECT_TRUE(f.done());
}

// Shutdown: the loop stopped with one fiber holding the mutex (suspended in a wait) and
// another waiting for it. Cancelled and resumed in turn, both run to their end, the waiter
// after the holder, and the mutex is free again.
TEST(FiberMutex, CancelledFibersStillTakeItInTurnAndEnd) {
  boost::asio::io_context io;
  FiberMutex mu;
  std::vector<std::string> order;
  Fiber holder(io, [&] {
    std::lock_guard lock(mu);
    Fiber::sleep_for(10s);  // cut short by the cancel
    order.push_back("holder ends");
  });
  Fiber waiter(io, [&] {
    std::lock_guard lock(mu);
    order.push_back("waiter has it");
  });
  boost::asio::post(io, [&] { holder.resume(); });
  boost::asio::post(io, [&] { waiter.resume(); });
  io.run_for(50ms);  // both started: holder sleeps, waiter waits
  ASSERT_FALSE(holder.done());
  ASSERT_FALSE(waiter.done());
  waiter.cancel();
  holder.cancel();
  // The waiter first, as an owner might: it cannot have the mutex yet and suspends again.
  for (int round = 0; round < 10 && !(holder.done() && waiter.done()); ++round) {
    if (!waiter.done()) waiter.resume();
    if (!holder.done()) holder.resume();
  }
  EXPECT_TRUE(holder.done());
  EXPECT_TRUE(waiter.done());
  EXPECT_EQ(order, (std::vector<std::string>{"holder ends", "waiter has it"}));
  EXPECT_TRUE(mu.try_lock());
  mu.unlock();
}

}  // namespace
}  // namespace tern
