#include "services/store_reads.h"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "base/fiber.h"
#include "base/fiber_mutex.h"

namespace tern::services {
namespace {

using namespace std::chrono_literals;

TEST(StoreReads, WithoutReaderThreadsAReadRunsInlineOnTheCaller) {
  Loops loops(1);
  StoreReads reads(loops, 0);
  EXPECT_FALSE(reads.offloaded());
  const auto caller = std::this_thread::get_id();
  std::thread::id read_on, done_on;
  int got = 0;
  reads.run<int>(
      0, [&]() -> Result<int> { read_on = std::this_thread::get_id(); return 7; },
      [&](Result<int> r) {
        done_on = std::this_thread::get_id();
        got = r.ok() ? *r : -1;
      });
  EXPECT_EQ(got, 7);  // done ran before run() returned
  EXPECT_EQ(read_on, caller);
  EXPECT_EQ(done_on, caller);
}

TEST(StoreReads, AReadRunsOffTheLoopAndItsResultComesBackOnTheLoop) {
  Loops loops(1);
  loops.start();
  StoreReads reads(loops, 2);
  ASSERT_TRUE(reads.offloaded());
  std::promise<std::thread::id> loop_thread;
  loops.post(0, [&] { loop_thread.set_value(std::this_thread::get_id()); });
  const auto loop_id = loop_thread.get_future().get();
  std::promise<std::pair<std::thread::id, std::thread::id>> seen;  // (read, done)
  auto read_on = std::make_shared<std::thread::id>();
  loops.post(0, [&] {
    reads.run<std::string>(
        0, [read_on]() -> Result<std::string> { *read_on = std::this_thread::get_id(); return std::string("x"); },
        [&, read_on](Result<std::string> r) {
          EXPECT_TRUE(r.ok());
          seen.set_value({*read_on, std::this_thread::get_id()});
        });
  });
  auto f = seen.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  auto [read_thread, done_thread] = f.get();
  EXPECT_NE(read_thread, loop_id);
  EXPECT_EQ(done_thread, loop_id);
  reads.stop();
  loops.stop();
  loops.join();
}

TEST(StoreReads, AFullQueueRefusesWithUnavailableAndTheLoopKeepsRunning) {
  Loops loops(1);
  loops.start();
  StoreReads reads(loops, 1, /*fibers_per_loop=*/0, /*max_queued=*/2);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::promise<void> reader_busy;
  int ok = 0;  // on the loop only
  std::promise<void> all_ok;
  auto count = [&](Result<int> r) {
    if (r.ok() && ++ok == 3) all_ok.set_value();
  };
  std::promise<Error> refused;
  // The first read occupies the only reader; two more fill the queue; the fourth is refused.
  reads.run<int>(
      0, [&, gate]() -> Result<int> { reader_busy.set_value(); gate.wait(); return 1; },
      count);
  reader_busy.get_future().wait();
  for (int i = 0; i < 2; ++i)
    reads.run<int>(0, []() -> Result<int> { return 1; }, count);
  EXPECT_EQ(reads.queued(), 2u);
  reads.run<int>(0, []() -> Result<int> { return 1; }, [&](Result<int> r) {
    ASSERT_FALSE(r.ok());
    refused.set_value(r.error());
  });
  auto f = refused.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);  // answered while the reader is still stuck
  EXPECT_EQ(f.get().code, ErrorCode::kUnavailable);
  release.set_value();
  EXPECT_EQ(all_ok.get_future().wait_for(10s), std::future_status::ready);  // the queued ones ran
  reads.stop();
  loops.stop();
  loops.join();
}

// A socket pair per read: a read in a fiber waits for its socket the way a Redis read waits
// for its reply (Fiber::wait_fd), until the test writes to the other end.
struct Sockets {
  explicit Sockets(size_t n) : pairs(n) {
    for (auto& p : pairs) EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p.data()), 0);
  }
  ~Sockets() {
    for (auto& p : pairs) {
      ::close(p[0]);
      ::close(p[1]);
    }
  }
  void answer(size_t i) { ASSERT_EQ(::write(pairs[i][1], "r", 1), 1); }
  std::vector<std::array<int, 2>> pairs;
};

// In fibers, reads run on the loop's own thread, several at once: each waits for its reply
// suspended, and the loop runs other work meanwhile. In the read, Loops::here() is kNone (as
// on a reader thread); `done` runs on the loop, off the fiber.
TEST(StoreReads, InFibersReadsRunOnTheLoopManyWaitAtOnceAndTheLoopGoesOn) {
  constexpr size_t kReads = 4;
  Loops loops(1);
  loops.start();
  StoreReads reads(loops, /*threads=*/0, /*fibers_per_loop=*/kReads);
  ASSERT_TRUE(reads.offloaded());
  Sockets sockets(kReads);
  std::promise<std::thread::id> loop_thread;
  loops.post(0, [&] { loop_thread.set_value(std::this_thread::get_id()); });
  const auto loop_id = loop_thread.get_future().get();
  std::atomic<size_t> waiting{0};
  std::promise<void> all_waiting;
  std::vector<int> answers;  // on the loop only
  std::promise<void> all_done;
  for (size_t i = 0; i < kReads; ++i) {
    reads.run<int>(
        0,
        [&, i]() -> Result<int> {
          EXPECT_EQ(std::this_thread::get_id(), loop_id);
          EXPECT_NE(Fiber::current(), nullptr);
          EXPECT_EQ(loops.here(), Loops::kNone);
          if (++waiting == kReads) all_waiting.set_value();
          if (!Fiber::wait_fd(sockets.pairs[i][0], false, std::chrono::steady_clock::now() + 10s))
            return make_error(ErrorCode::kUnavailable, "no reply");
          return static_cast<int>(i);
        },
        [&](Result<int> r) {
          EXPECT_EQ(std::this_thread::get_id(), loop_id);
          EXPECT_EQ(Fiber::current(), nullptr);
          EXPECT_EQ(loops.here(), 0u);
          answers.push_back(r.ok() ? *r : -1);
          if (answers.size() == kReads) all_done.set_value();
        });
  }
  ASSERT_EQ(all_waiting.get_future().wait_for(10s), std::future_status::ready);  // four in flight on one loop
  std::promise<void> loop_ran;
  loops.post(0, [&] { loop_ran.set_value(); });
  ASSERT_EQ(loop_ran.get_future().wait_for(10s), std::future_status::ready);  // not held by the reads
  EXPECT_EQ(reads.queued(), kReads);
  for (size_t i = kReads; i-- > 0;) sockets.answer(i);
  ASSERT_EQ(all_done.get_future().wait_for(10s), std::future_status::ready);
  std::sort(answers.begin(), answers.end());
  EXPECT_EQ(answers, (std::vector<int>{0, 1, 2, 3}));
  reads.stop();
  loops.stop();
  loops.join();
  EXPECT_EQ(reads.fibers(0), kReads);
  EXPECT_EQ(reads.queued(), 0u);
}

// In fibers the bound counts the reads queued and running: beyond it a read is refused with
// `unavailable` at once, and the queued one runs when a fiber is free.
TEST(StoreReads, InFibersAFullQueueRefusesWithUnavailable) {
  Loops loops(1);
  loops.start();
  StoreReads reads(loops, 0, /*fibers_per_loop=*/1, /*max_queued=*/2);
  Sockets sockets(1);
  std::promise<void> first_waits;
  std::vector<int> ok;  // on the loop only
  std::promise<void> both_ok;
  auto count = [&](Result<int> r) {
    ok.push_back(r.ok() ? *r : -1);
    if (ok.size() == 2) both_ok.set_value();
  };
  reads.run<int>(
      0,
      [&]() -> Result<int> {
        first_waits.set_value();
        return Fiber::wait_fd(sockets.pairs[0][0], false, std::chrono::steady_clock::now() + 10s) ? 1 : -1;
      },
      count);
  ASSERT_EQ(first_waits.get_future().wait_for(10s), std::future_status::ready);
  reads.run<int>(0, []() -> Result<int> { return 2; }, count);  // waits for the only fiber
  std::promise<Error> refused;
  reads.run<int>(0, []() -> Result<int> { return 3; }, [&](Result<int> r) {
    ASSERT_FALSE(r.ok());
    refused.set_value(r.error());
  });
  auto f = refused.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);  // while the first read still waits
  EXPECT_EQ(f.get().code, ErrorCode::kUnavailable);
  sockets.answer(0);
  ASSERT_EQ(both_ok.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_EQ(ok, (std::vector<int>{1, 2}));
  reads.stop();
  loops.stop();
  loops.join();
  EXPECT_EQ(reads.fibers(0), 1u);
}

// A read still waiting when the loops stop: destroying StoreReads cancels its fiber, whose
// wait fails at once; the read returns, its `done` never runs, and the fiber ends.
TEST(StoreReads, InFibersAReadStillWaitingWhenTheLoopsStopEndsWithTheirDestruction) {
  Sockets sockets(1);
  Loops loops(1);
  loops.start();
  std::promise<void> waits;
  bool wait_result = true;
  bool returned = false;
  bool done_ran = false;
  {
    StoreReads reads(loops, 0, 2);
    reads.run<int>(
        0,
        [&]() -> Result<int> {
          waits.set_value();
          wait_result = Fiber::wait_fd(sockets.pairs[0][0], false, std::chrono::steady_clock::now() + 60s);
          returned = true;
          return 1;
        },
        [&](Result<int>) { done_ran = true; });
    ASSERT_EQ(waits.get_future().wait_for(10s), std::future_status::ready);
    reads.stop();
    loops.stop();
    loops.join();
    EXPECT_FALSE(returned);
  }
  EXPECT_TRUE(returned);
  EXPECT_FALSE(wait_result);
  EXPECT_FALSE(done_ran);
}

// An HTTP request's handler (a detached job) runs in a fiber on the loop it names (loop 0
// when it names none), and its answer, made to go through that loop (via_loop), runs on the
// loop off the fiber, whichever thread gives it.
TEST(StoreReads, InFibersADetachedJobRunsInAFiberOnItsLoopAndAnswersThroughIt) {
  Loops loops(2);
  loops.start();
  StoreReads reads(loops, /*threads=*/4, /*fibers_per_loop=*/2);
  std::array<std::thread::id, 2> ids;
  for (size_t i = 0; i < 2; ++i) {
    std::promise<std::thread::id> id;
    loops.post(i, [&] { id.set_value(std::this_thread::get_id()); });
    ids[i] = id.get_future().get();
  }
  struct Seen {
    std::thread::id thread;
    bool in_fiber = false;
    size_t here = 0;
  };
  std::promise<Seen> job_seen, answer_seen;
  std::function<void(int)> answer = reads.via_loop<int>(1, [&](int) {
    answer_seen.set_value(Seen{std::this_thread::get_id(), Fiber::current() != nullptr, loops.here()});
  });
  ASSERT_TRUE(reads.run_detached(1, [&, answer] {
    job_seen.set_value(Seen{std::this_thread::get_id(), Fiber::current() != nullptr, loops.here()});
    answer(7);
  }));
  auto job = job_seen.get_future();
  ASSERT_EQ(job.wait_for(10s), std::future_status::ready);
  const Seen j = job.get();
  EXPECT_EQ(j.thread, ids[1]);
  EXPECT_TRUE(j.in_fiber);
  EXPECT_EQ(j.here, Loops::kNone);
  auto ans = answer_seen.get_future();
  ASSERT_EQ(ans.wait_for(10s), std::future_status::ready);
  const Seen a = ans.get();
  EXPECT_EQ(a.thread, ids[1]);
  EXPECT_FALSE(a.in_fiber);
  EXPECT_EQ(a.here, 1u);

  std::promise<Seen> unnamed;
  ASSERT_TRUE(reads.run_detached(Loops::kNone, [&] {
    unnamed.set_value(Seen{std::this_thread::get_id(), Fiber::current() != nullptr, loops.here()});
  }));
  auto u = unnamed.get_future();
  ASSERT_EQ(u.wait_for(10s), std::future_status::ready);
  const Seen n = u.get();
  EXPECT_EQ(n.thread, ids[0]);
  EXPECT_TRUE(n.in_fiber);
  reads.stop();
  loops.stop();
  loops.join();
}

// Shutdown with one job holding a FiberMutex across a wait and another (in the loop's first
// fiber) waiting for it: destroying StoreReads ends both, the waiter after the holder. Ending
// the fibers one after the other would leave the waiter suspended for good.
TEST(StoreReads, InFibersJobsWaitingForAFiberMutexEndWithTheirDestruction) {
  Sockets sockets(2);
  Loops loops(1);
  loops.start();
  FiberMutex mu;
  std::atomic<int> started{0};
  bool holder_returned = false, waiter_returned = false, waiter_locked = false;
  {
    StoreReads reads(loops, 0, 2);
    // The first fiber: waits for its socket, then for the mutex.
    ASSERT_TRUE(reads.run_detached(0, [&] {
      ++started;
      Fiber::wait_fd(sockets.pairs[0][0], false, std::chrono::steady_clock::now() + 60s);
      std::lock_guard lock(mu);
      waiter_locked = true;
      waiter_returned = true;
    }));
    // The second: takes the mutex, then waits (a store read that never answers).
    ASSERT_TRUE(reads.run_detached(0, [&] {
      ++started;
      std::lock_guard lock(mu);
      Fiber::wait_fd(sockets.pairs[1][0], false, std::chrono::steady_clock::now() + 60s);
      holder_returned = true;
    }));
    for (int i = 0; i < 5000 && started.load() < 2; ++i) std::this_thread::sleep_for(1ms);
    ASSERT_EQ(started.load(), 2);
    sockets.answer(0);  // the first goes on, to the mutex
    for (int i = 0; i < 5000 && mu.waiting() == 0; ++i) std::this_thread::sleep_for(1ms);
    ASSERT_EQ(mu.waiting(), 1u);
    reads.stop();
    loops.stop();
    loops.join();
    EXPECT_FALSE(holder_returned);
    EXPECT_FALSE(waiter_returned);
  }
  EXPECT_TRUE(holder_returned);
  EXPECT_TRUE(waiter_returned);
  EXPECT_TRUE(waiter_locked);
  EXPECT_TRUE(mu.try_lock());
  mu.unlock();
}

}  // namespace
}  // namespace tern::services
