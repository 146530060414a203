#include "client/backoff.h"

#include <cstdint>
#include <limits>
#include <random>

#include <gtest/gtest.h>

namespace tern::client {
namespace {

TEST(Backoff, WindowDoublesUpToTheCap) {
  BackoffPolicy p{100, 1000, 0};
  EXPECT_EQ(backoff_window_ms(p, 0), 100);
  EXPECT_EQ(backoff_window_ms(p, 1), 200);
  EXPECT_EQ(backoff_window_ms(p, 2), 400);
  EXPECT_EQ(backoff_window_ms(p, 3), 800);
  EXPECT_EQ(backoff_window_ms(p, 4), 1000);
  EXPECT_EQ(backoff_window_ms(p, 5), 1000);
  EXPECT_EQ(backoff_window_ms(p, 1'000'000), 1000);
  EXPECT_EQ(backoff_window_ms(p, -3), 100);
}

TEST(Backoff, HugeValuesDoNotOverflow) {
  BackoffPolicy p{std::numeric_limits<int64_t>::max() / 3, std::numeric_limits<int64_t>::max(), 0};
  for (int a = 0; a < 200; ++a) {
    const int64_t w = backoff_window_ms(p, a);
    EXPECT_GE(w, p.base_ms);
    EXPECT_LE(w, p.cap_ms);
  }
}

TEST(Backoff, DelayStaysWithinTheWindowForAnyRandom) {
  BackoffPolicy p{250, 30'000, 0};
  std::mt19937_64 rng(42);
  for (int attempt = 0; attempt < 40; ++attempt) {
    const int64_t w = backoff_window_ms(p, attempt);
    for (uint64_t r : {uint64_t{0}, uint64_t{1}, std::numeric_limits<uint64_t>::max(), uint64_t(w), uint64_t(w + 1)}) {
      const int64_t d = backoff_delay_ms(p, attempt, r);
      EXPECT_GE(d, 0);
      EXPECT_LE(d, w);
    }
    for (int i = 0; i < 200; ++i) {
      const int64_t d = backoff_delay_ms(p, attempt, rng());
      EXPECT_GE(d, 0);
      EXPECT_LE(d, w);
    }
  }
}

TEST(Backoff, FullJitterSpreadsOverTheWholeWindow) {
  // Not a timing test: with full jitter the delays of many clients must cover the window,
  // not bunch at its top (plain exponential) or its middle (equal jitter).
  BackoffPolicy p{1000, 1000, 0};
  std::mt19937_64 rng(7);
  int low = 0, high = 0;
  for (int i = 0; i < 2000; ++i) {
    const int64_t d = backoff_delay_ms(p, 3, rng());
    if (d < 250) ++low;
    if (d > 750) ++high;
  }
  EXPECT_GT(low, 300);
  EXPECT_GT(high, 300);
}

TEST(Backoff, ZeroWindowMeansNoDelay) {
  BackoffPolicy p{0, 0, 0};
  EXPECT_EQ(backoff_delay_ms(p, 5, 12345), 0);
  BackoffPolicy neg{-5, -1, 0};
  EXPECT_EQ(backoff_delay_ms(neg, 2, 99), 0);
}

TEST(Backoff, AttemptsAreBounded) {
  BackoffPolicy p{10, 100, 3};
  EXPECT_TRUE(backoff_allows(p, 0));
  EXPECT_TRUE(backoff_allows(p, 2));
  EXPECT_FALSE(backoff_allows(p, 3));
  BackoffPolicy forever{10, 100, 0};
  EXPECT_TRUE(backoff_allows(forever, 1'000'000));
}

}  // namespace
}  // namespace tern::client
