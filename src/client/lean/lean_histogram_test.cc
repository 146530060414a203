#include "client/lean/lean_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include <boost/json.hpp>

namespace tern::client::lean {
namespace {

TEST(LeanHistogram, BucketsAreContiguousAndContainTheirValues) {
  for (int b = 0; b + 1 < LatencyHistogram::kBuckets; ++b) {
    EXPECT_LE(LatencyHistogram::bucket_low(b), LatencyHistogram::bucket_high(b));
    EXPECT_EQ(LatencyHistogram::bucket_high(b) + 1, LatencyHistogram::bucket_low(b + 1)) << b;
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    const int b = LatencyHistogram::bucket_of(v);
    ASSERT_GE(b, 0);
    ASSERT_LT(b, LatencyHistogram::kBuckets);
    if (v < (uint64_t{1} << LatencyHistogram::kMaxExp)) {
      EXPECT_LE(LatencyHistogram::bucket_low(b), v);
      EXPECT_GE(LatencyHistogram::bucket_high(b), v);
    } else {
      EXPECT_EQ(b, LatencyHistogram::kBuckets - 1);  // clamped
    }
  }
}

TEST(LeanHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 20; ++v) h.record(v);
  EXPECT_EQ(h.count(), 20u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_EQ(h.max(), 20u);
  EXPECT_EQ(h.quantile(0.5), 10u);
  EXPECT_EQ(h.quantile(1.0), 20u);
  EXPECT_EQ(h.quantile(0.0), 1u);
  EXPECT_DOUBLE_EQ(h.mean(), 10.5);
}

TEST(LeanHistogram, QuantilesWithinRelativeErrorOfExact) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(7.0, 1.5);  // µs, a long tail
  std::vector<uint64_t> values;
  LatencyHistogram h;
  for (int i = 0; i < 200000; ++i) {
    const auto v = static_cast<uint64_t>(dist(rng));
    values.push_back(v);
    h.record(v);
  }
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const uint64_t exact = values[static_cast<size_t>(std::ceil(q * values.size())) - 1];
    const uint64_t got = h.quantile(q);
    EXPECT_GE(got, exact) << q;  // the bucket's upper edge never under-reports
    EXPECT_LE(static_cast<double>(got), static_cast<double>(exact) * (1.0 + 1.0 / LatencyHistogram::kSub) + 1) << q;
  }
}

TEST(LeanHistogram, MergeEqualsRecordingEverything) {
  LatencyHistogram a, b, all;
  for (uint64_t v = 0; v < 5000; v += 3) {
    (v % 2 ? a : b).record(v * 17);
    all.record(v * 17);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  for (double q : {0.1, 0.5, 0.99}) EXPECT_EQ(a.quantile(q), all.quantile(q));
}

TEST(LeanHistogram, JsonRoundTrip) {
  LatencyHistogram h;
  h.record(3);
  h.record(1000, 5);
  h.record(123456789);
  auto back = LatencyHistogram::from_json(boost::json::parse(boost::json::serialize(h.to_json())));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->count(), h.count());
  EXPECT_EQ(back->min(), 3u);
  EXPECT_EQ(back->max(), 123456789u);
  EXPECT_EQ(back->quantile(0.5), h.quantile(0.5));
  EXPECT_DOUBLE_EQ(back->mean(), h.mean());
  EXPECT_FALSE(LatencyHistogram::from_json(boost::json::parse(R"({"b":[[99999,1]]})")).ok());
  EXPECT_FALSE(LatencyHistogram::from_json(boost::json::parse(R"([1,2])")).ok());
  EXPECT_FALSE(LatencyHistogram::from_json(boost::json::parse(R"({"b":[[-1,1]]})")).ok());
}

TEST(LeanHistogram, EmptyIsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.quantile(0.99), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

}  // namespace
}  // namespace tern::client::lean
