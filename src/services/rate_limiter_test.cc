#include "services/rate_limiter.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "store/memory/memory_store.h"

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

// A store that keeps shared buckets (Redis: one per key for every node) decides for the
// limiter, under the name "<limit>:<key>": its "no" holds while the limiter's own bucket has
// tokens, its "yes" past the own bucket's burst. A store that keeps none (embedded), or that
// cannot answer, leaves it to the limiter's own bucket; an unlimited limiter asks nothing.
class BucketStore final : public store::MemoryStore {
 public:
  std::optional<Result<std::optional<bool>>> answer;  // unset: the contract's default (none kept)
  std::vector<std::string> asked;
  Result<std::optional<bool>> take_tokens(const std::string& key, double rate, double burst, double n) override {
    asked.push_back(key);
    if (!answer) return store::MemoryStore::take_tokens(key, rate, burst, n);
    return *answer;
  }
};

TEST(KeyedRateLimiter, TheStoresSharedBucketsDecideWhereTheStoreKeepsThem) {
  BucketStore store;
  KeyedRateLimiter l(/*rate*/ 1, /*burst*/ 2, /*max_keys*/ 10, {&store, "register"});
  store.answer = Result<std::optional<bool>>(std::optional<bool>(false));
  EXPECT_FALSE(l.take("10.0.0.1", 0));  // its own bucket is full; the shared one is empty
  EXPECT_EQ(store.asked, std::vector<std::string>{"register:10.0.0.1"});
  store.answer = Result<std::optional<bool>>(std::optional<bool>(true));
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(l.take("10.0.0.1", 0)) << i;
  store.answer.reset();
  EXPECT_TRUE(l.take("10.0.0.2", 0));
  EXPECT_TRUE(l.take("10.0.0.2", 0));
  EXPECT_FALSE(l.take("10.0.0.2", 0));
  store.answer = Result<std::optional<bool>>(make_error(ErrorCode::kUnavailable, "redis: away"));
  EXPECT_TRUE(l.take("10.0.0.3", 0));
  EXPECT_TRUE(l.take("10.0.0.3", 0));
  EXPECT_FALSE(l.take("10.0.0.3", 0));
  store.asked.clear();
  KeyedRateLimiter unlimited(0, 0, 1, {&store, "register"});
  EXPECT_TRUE(unlimited.take("10.0.0.4", 0));
  EXPECT_TRUE(store.asked.empty());
}

}  // namespace
}  // namespace tern::services
