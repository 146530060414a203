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

}  // namespace
}  // namespace tern::services
