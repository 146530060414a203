#include "base/fiber.h"
#include "base/fiber_waiters.h"

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <gtest/gtest.h>

namespace tern {
namespace {

using namespace std::chrono_literals;

struct SocketPair {
  SocketPair() { EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd.data()), 0); }
  ~SocketPair() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  std::array<int, 2> fd{-1, -1};
};

// A fiber that waits for a socket does not hold the loop: work posted behind it runs first,
// and the fiber goes on where it stopped when the socket becomes readable.
TEST(Fiber, AWaitForASocketLetsTheLoopRunOtherWork) {
  boost::asio::io_context io;
  SocketPair sp;
  std::vector<std::string> order;
  Fiber f(io, [&] {
    order.push_back("fiber waits");
    const bool ready = Fiber::wait_fd(sp.fd[0], false, std::chrono::steady_clock::now() + 5s);
    order.push_back(ready ? "fiber ready" : "fiber timed out");
    char c = 0;
    EXPECT_EQ(::read(sp.fd[0], &c, 1), 1);
    EXPECT_EQ(c, 'x');
  });
  boost::asio::post(io, [&] { f.resume(); });
  boost::asio::post(io, [&] {
    order.push_back("other work");
    ASSERT_EQ(::write(sp.fd[1], "x", 1), 1);
  });
  io.run_for(5s);
  EXPECT_TRUE(f.done());
  EXPECT_EQ(order, (std::vector<std::string>{"fiber waits", "other work", "fiber ready"}));
  EXPECT_EQ(Fiber::current(), nullptr);
}

TEST(Fiber, AWaitEndsAtItsDeadline) {
  boost::asio::io_context io;
  SocketPair sp;
  bool ready = true;
  Fiber f(io, [&] { ready = Fiber::wait_fd(sp.fd[0], false, std::chrono::steady_clock::now() + 30ms); });
  const auto start = std::chrono::steady_clock::now();
  boost::asio::post(io, [&] { f.resume(); });
  io.run_for(5s);
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(ready);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
}

TEST(Fiber, AWritableSocketIsReadyAndSleepSuspendsOnlyTheFiber) {
  boost::asio::io_context io;
  SocketPair sp;
  std::vector<std::string> order;
  Fiber f(io, [&] {
    EXPECT_TRUE(Fiber::wait_fd(sp.fd[1], true, std::chrono::steady_clock::now() + 5s));
    order.push_back("writable");
    Fiber::sleep_for(20ms);
    order.push_back("slept");
  });
  boost::asio::post(io, [&] { f.resume(); });
  boost::asio::steady_timer t(io, 5ms);
  t.async_wait([&](const boost::system::error_code&) { order.push_back("timer of the loop"); });
  io.run_for(5s);
  EXPECT_TRUE(f.done());
  EXPECT_EQ(order, (std::vector<std::string>{"writable", "timer of the loop", "slept"}));
}

// The owner ends a fiber that waits (its loop no longer runs): cancel, then resume. The wait
// fails at once, so does every later one, and the body returns.
TEST(Fiber, ACancelledFiberFailsItsWaitsAndEnds) {
  boost::asio::io_context io;
  SocketPair sp;
  std::vector<bool> waits;
  Fiber f(io, [&] {
    waits.push_back(Fiber::wait_fd(sp.fd[0], false, std::chrono::steady_clock::now() + 60s));
    waits.push_back(Fiber::wait_fd(sp.fd[0], false, std::chrono::steady_clock::now() + 60s));
    Fiber::sleep_for(60s);
  });
  boost::asio::post(io, [&] { f.resume(); });
  io.run_for(20ms);  // the fiber now waits for a socket nobody writes to
  ASSERT_FALSE(f.done());
  EXPECT_TRUE(waits.empty());
  f.cancel();
  f.resume();
  EXPECT_TRUE(f.done());
  EXPECT_EQ(waits, (std::vector<bool>{false, false}));
  // The abandoned wait's handlers, if the loop runs again, touch nothing of the fiber.
  io.restart();
  io.run_for(20ms);
}

// FiberWaiters: fibers that wait are resumed through the loop by wake_all (not on the waker's
// stack: the waker goes on first); one ended by its owner meanwhile returns false at once and
// the wake posted for it resumes nothing; outside a fiber there is nothing to wait with.
TEST(FiberWaiters, WakeAllResumesTheWaitersThroughTheLoopAndSkipsAnEndedOne) {
  boost::asio::io_context io;
  FiberWaiters waiters;
  EXPECT_FALSE(waiters.wait()) << "no fiber";
  std::vector<std::string> order;
  std::vector<bool> woke(3, false);
  std::vector<std::unique_ptr<Fiber>> fibers;
  for (size_t i = 0; i < 3; ++i) {
    fibers.push_back(std::make_unique<Fiber>(io, [&, i] {
      woke[i] = waiters.wait();
      order.push_back("waiter " + std::to_string(i));
    }));
    boost::asio::post(io, [f = fibers.back().get()] { f->resume(); });
  }
  io.run_for(20ms);
  ASSERT_FALSE(waiters.empty());
  fibers[1]->cancel();  // its owner ends it: the wait returns false at once
  fibers[1]->resume();
  EXPECT_TRUE(fibers[1]->done());
  Fiber waker(io, [&] {
    waiters.wake_all();
    order.push_back("waker goes on");
  });
  boost::asio::post(io, [&] { waker.resume(); });
  io.restart();
  io.run_for(20ms);
  for (const auto& f : fibers) EXPECT_TRUE(f->done());
  EXPECT_TRUE(waiters.empty());
  EXPECT_EQ(woke, (std::vector<bool>{true, false, true}));
  EXPECT_EQ(order, (std::vector<std::string>{"waiter 1", "waker goes on", "waiter 0", "waiter 2"}));
}

}  // namespace
}  // namespace tern
