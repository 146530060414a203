#include "base/heap_trim.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

namespace tern {
namespace {

size_t resident_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

TEST(HeapTrim, SmallReleasesScheduleNothing) {
  boost::asio::io_context ioc;
  const uint64_t before = HeapTrim::trims();
  HeapTrim::released(ioc.get_executor(), 0);
  HeapTrim::released(ioc.get_executor(), 1024);
  EXPECT_EQ(ioc.run(), 0u);  // no handler was queued
  EXPECT_EQ(HeapTrim::trims(), before);
}

TEST(HeapTrim, ReleasesCloseTogetherShareOneTrim) {
  boost::asio::io_context ioc;
  const uint64_t before = HeapTrim::trims();
  for (int i = 0; i < 3; ++i) HeapTrim::released(ioc.get_executor(), HeapTrim::kThresholdBytes);
  ioc.run();  // returns once the one timer has fired
  EXPECT_EQ(HeapTrim::trims(), before + 1);
  // The next large release schedules a new one.
  HeapTrim::released(ioc.get_executor(), HeapTrim::kThresholdBytes);
  ioc.restart();
  ioc.run();
  EXPECT_EQ(HeapTrim::trims(), before + 2);
}

TEST(HeapTrim, ATrimLostWithItsLoopDoesNotBlockTheNext) {
  const uint64_t before = HeapTrim::trims();
  {
    boost::asio::io_context gone;
    HeapTrim::released(gone.get_executor(), HeapTrim::kThresholdBytes);
  }  // destroyed with the trim pending
  boost::asio::io_context ioc;
  HeapTrim::released(ioc.get_executor(), HeapTrim::kThresholdBytes);
  ioc.run();
  EXPECT_EQ(HeapTrim::trims(), before + 1);
}

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
// The reason the class exists: 40 MB freed below a live allocation stay resident after
// free(), and are given back by the trim.
TEST(HeapTrim, FreedPagesBelowALiveAllocationGoBackToTheKernel) {
  constexpr size_t kBlock = 60 * 1024, kBlocks = 680;  // ~40 MB, each block below the mmap threshold
  std::vector<char*> blocks;
  for (size_t i = 0; i < kBlocks; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(kBlock)));
    ASSERT_NE(blocks.back(), nullptr);
    for (size_t j = 0; j < kBlock; j += 4096) blocks.back()[j] = 1;  // touch every page
  }
  char* pin = static_cast<char*>(std::malloc(64));  // above them: the arena's top stays in use
  ASSERT_NE(pin, nullptr);
  pin[0] = 1;
  for (char* b : blocks) std::free(b);
  const size_t after_free = resident_bytes();
  boost::asio::io_context ioc;
  HeapTrim::released(ioc.get_executor(), kBlock * kBlocks);
  ioc.run();
  const size_t after_trim = resident_bytes();
  std::free(pin);
  EXPECT_LT(after_trim + 20u * 1024 * 1024, after_free)
      << "resident after free " << after_free << " bytes, after the trim " << after_trim;
}
#endif

}  // namespace
}  // namespace tern
