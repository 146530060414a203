#include "services/store_reads.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

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
  StoreReads reads(loops, 1, /*max_queued=*/2);
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

}  // namespace
}  // namespace tern::services
