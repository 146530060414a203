// LatencyHistogram: a log-linear histogram of non-negative integer values (tern-bench records
// microseconds). Each power of two is split into 32 linear sub-buckets, so any quantile is
// reported within 1/32 (about 3 %) of the true value, in fixed memory (~9.5 KB) with O(1)
// recording, from 0 up to 2^40 (values above are clamped into the top bucket). Mergeable
// across connections and processes; serialises to a compact sparse JSON form.
//
// Thread affinity: a plain value; not synchronised. Each thread records into its own and the
// owner merges.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include <boost/json/value.hpp>

#include "base/result.h"

namespace tern::client::lean {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 5;
  static constexpr int kSub = 1 << kSubBits;  // linear sub-buckets per power of two
  static constexpr int kMaxExp = 40;          // values up to 2^40 - 1
  static constexpr int kBuckets = (kMaxExp - kSubBits + 1) * kSub;

  void record(uint64_t value, uint64_t count = 1);
  void merge(const LatencyHistogram& other);
  void clear();

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }
  // The smallest recorded-bucket value v such that at least q of the values are <= v, as the
  // bucket's upper edge clipped to the observed maximum. q in [0, 1]; 0 when empty.
  uint64_t quantile(double q) const;

  // Bucket arithmetic, exposed for tests.
  static int bucket_of(uint64_t value);
  static uint64_t bucket_low(int bucket);
  static uint64_t bucket_high(int bucket);  // inclusive

  // {"count":..,"min":..,"max":..,"sum":..,"b":[[bucket,count],...]}
  boost::json::value to_json() const;
  static Result<LatencyHistogram> from_json(const boost::json::value& v);

 private:
  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace tern::client::lean
