#include "client/lean/lean_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include <boost/json.hpp>

namespace tern::client::lean {
namespace json = boost::json;

int LatencyHistogram::bucket_of(uint64_t value) {
  if (value < static_cast<uint64_t>(kSub)) return static_cast<int>(value);
  int exp = 63 - std::countl_zero(value);  // value in [2^exp, 2^(exp+1))
  if (exp > kMaxExp - 1) return kBuckets - 1;
  const int sub = static_cast<int>((value >> (exp - kSubBits)) & (kSub - 1));
  return (exp - kSubBits + 1) * kSub + sub;
}

uint64_t LatencyHistogram::bucket_low(int bucket) {
  if (bucket < kSub) return static_cast<uint64_t>(bucket);
  const int exp = bucket / kSub + kSubBits - 1;
  const uint64_t sub = static_cast<uint64_t>(bucket % kSub);
  return (uint64_t{1} << exp) + (sub << (exp - kSubBits));
}

uint64_t LatencyHistogram::bucket_high(int bucket) {
  if (bucket < kSub) return static_cast<uint64_t>(bucket);
  const int exp = bucket / kSub + kSubBits - 1;
  return bucket_low(bucket) + (uint64_t{1} << (exp - kSubBits)) - 1;
}

void LatencyHistogram::record(uint64_t value, uint64_t count) {
  if (count == 0) return;
  buckets_[static_cast<size_t>(bucket_of(value))] += count;
  count_ += count;
  sum_ += value * count;
  min_ = std::min(min_, value);
  max_ = std::max(max_, value);
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

void LatencyHistogram::clear() { *this = LatencyHistogram(); }

uint64_t LatencyHistogram::quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // Rank of the wanted value, 1-based: the ceil(q * n)-th smallest (at least the first).
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_))));
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += buckets_[static_cast<size_t>(b)];
    if (seen >= rank) return std::clamp(bucket_high(b), min_, max_);
  }
  return max_;
}

json::value LatencyHistogram::to_json() const {
  json::array b;
  for (int i = 0; i < kBuckets; ++i)
    if (const uint64_t c = buckets_[static_cast<size_t>(i)]) b.push_back(json::array{i, c});
  return json::object{{"count", count_}, {"min", min()}, {"max", max_}, {"sum", sum_}, {"b", std::move(b)}};
}

Result<LatencyHistogram> LatencyHistogram::from_json(const json::value& v) {
  auto bad = [] { return make_error(ErrorCode::kMalformed, "histogram JSON"); };
  const auto* o = v.if_object();
  if (!o) return bad();
  LatencyHistogram h;
  const auto* arr = o->if_contains("b");
  if (!arr || !arr->is_array()) return bad();
  for (const auto& e : arr->as_array()) {
    const auto* pair = e.if_array();
    if (!pair || pair->size() != 2) return bad();
    boost::system::error_code e1, e2;
    const auto i = (*pair)[0].to_number<int64_t>(e1);
    const auto c = (*pair)[1].to_number<uint64_t>(e2);
    if (e1 || e2 || i < 0 || i >= kBuckets) return bad();
    h.buckets_[static_cast<size_t>(i)] += c;
    h.count_ += c;
  }
  auto num = [&](std::string_view k) -> uint64_t {
    const auto* x = o->if_contains(k);
    if (!x) return 0;
    boost::system::error_code ec;
    const auto n = x->to_number<uint64_t>(ec);
    return ec ? 0 : n;
  };
  h.sum_ = num("sum");
  h.max_ = num("max");
  h.min_ = h.count_ ? num("min") : UINT64_MAX;
  return h;
}

}  // namespace tern::client::lean
