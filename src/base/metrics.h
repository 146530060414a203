// Process-wide metrics in the Prometheus text format. Counters, gauges and histograms are
// lock-free atomics, safe to touch from any thread; labelled families take a mutex only when
// a new label value first appears. The registry owns every metric; callers keep references.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tern {

class Counter {
 public:
  void inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }
 private:
  std::atomic<uint64_t> v_{0};
};

class Gauge {
 public:
  void add(int64_t n) { v_.fetch_add(n, std::memory_order_relaxed); }
  void set(int64_t n) { v_.store(n, std::memory_order_relaxed); }
  int64_t value() const { return v_.load(std::memory_order_relaxed); }
 private:
  std::atomic<int64_t> v_{0};
};

// Histogram with fixed upper bounds (seconds or counts, the caller's unit).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  uint64_t bucket(size_t i) const { return buckets_[i].load(std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const;
 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1 (+Inf)
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micros_{0};  // sum * 1e6, to stay atomic without a lock
};

// A family of counters keyed by one label value (e.g. frame type, error code).
class CounterFamily {
 public:
  Counter& with(const std::string& label_value);
  std::map<std::string, uint64_t> snapshot() const;
 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Counter>> by_label_;
};

class MetricsRegistry {
 public:
  static MetricsRegistry& global();

  Counter& counter(const std::string& name, const std::string& help);
  Gauge& gauge(const std::string& name, const std::string& help);
  Histogram& histogram(const std::string& name, const std::string& help, std::vector<double> bounds);
  CounterFamily& family(const std::string& name, const std::string& label, const std::string& help);

  std::string render_prometheus() const;

 private:
  struct Entry {
    std::string help;
    std::string label;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::unique_ptr<CounterFamily> family;
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

// Bucket bounds for latencies in seconds, 100 µs to 10 s.
std::vector<double> latency_buckets();

}  // namespace tern
