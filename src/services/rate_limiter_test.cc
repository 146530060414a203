#include "services/rate_limiter.h"

#include <gtest/gtest.h>

namespace tern::services {
namespace {

TEST(TokenBucket, AllowsBurstThenRefillsAtRate) {
  TokenBucket b(/*rate*/ 10, /*burst*/ 3, /*now*/ 0);
  EXPECT_TRUE(b.take(0));
  EXPECT_TRUE(b.take(0));
  EXPECT_TRUE(b.take(0));
  EXPECT_FALSE(b.take(0));
  EXPECT_FALSE(b.take(50'000));   // 0.5 token after 50 ms
  EXPECT_TRUE(b.take(100'000));   // 1 token after 100 ms
  EXPECT_FALSE(b.take(100'000));
  EXPECT_TRUE(b.take(10'000'000));  // refill caps at burst
  EXPECT_TRUE(b.take(10'000'000));
  EXPECT_TRUE(b.take(10'000'000));
  EXPECT_FALSE(b.take(10'000'000));
}

TEST(KeyedRateLimiter, OneBucketPerKeyBoundedInKeys) {
  KeyedRateLimiter l(/*rate*/ 1, /*burst*/ 2, /*max_keys*/ 2);
  EXPECT_TRUE(l.take("a", 0));
  EXPECT_TRUE(l.take("a", 0));
  EXPECT_FALSE(l.take("a", 0));
  EXPECT_TRUE(l.take("b", 0));  // another key has its own bucket
  EXPECT_TRUE(l.take("c", 0));  // evicts "a" (least recently used)
  EXPECT_EQ(l.size(), 2u);
  EXPECT_TRUE(l.take("a", 0));  // "a" starts again with a full bucket
  EXPECT_TRUE(l.take("a", 1'000'000));
  KeyedRateLimiter unlimited(0, 0, 1);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(unlimited.take("x", 0));
}

}  // namespace
}  // namespace tern::services
