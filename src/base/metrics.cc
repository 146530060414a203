#include "base/metrics.h"

#include <cmath>
#include <sstream>

namespace tern {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  if (v > 0) sum_micros_.fetch_add(static_cast<uint64_t>(std::llround(v * 1e6)), std::memory_order_relaxed);
}

double Histogram::sum() const { return static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6; }

Counter& CounterFamily::with(const std::string& label_value) {
  std::lock_guard lock(mu_);
  auto& slot = by_label_[label_value];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

std::map<std::string, uint64_t> CounterFamily::snapshot() const {
  std::lock_guard lock(mu_);
  std::map<std::string, uint64_t> out;
  for (const auto& [k, v] : by_label_) out[k] = v->value();
  return out;
}

MetricsRegistry& MetricsRegistry::global() {
  static MetricsRegistry registry;
  return registry;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  auto& e = entries_[name];
  if (!e.counter) { e.counter = std::make_unique<Counter>(); e.help = help; }
  return *e.counter;
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  auto& e = entries_[name];
  if (!e.gauge) { e.gauge = std::make_unique<Gauge>(); e.help = help; }
  return *e.gauge;
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      std::vector<double> bounds) {
  std::lock_guard lock(mu_);
  auto& e = entries_[name];
  if (!e.histogram) { e.histogram = std::make_unique<Histogram>(std::move(bounds)); e.help = help; }
  return *e.histogram;
}

CounterFamily& MetricsRegistry::family(const std::string& name, const std::string& label,
                                       const std::string& help) {
  std::lock_guard lock(mu_);
  auto& e = entries_[name];
  if (!e.family) { e.family = std::make_unique<CounterFamily>(); e.help = help; e.label = label; }
  return *e.family;
}

std::string MetricsRegistry::render_prometheus() const {
  std::lock_guard lock(mu_);
  std::ostringstream out;
  for (const auto& [name, e] : entries_) {
    out << "# HELP " << name << ' ' << e.help << '\n';
    if (e.counter) {
      out << "# TYPE " << name << " counter\n" << name << ' ' << e.counter->value() << '\n';
    } else if (e.gauge) {
      out << "# TYPE " << name << " gauge\n" << name << ' ' << e.gauge->value() << '\n';
    } else if (e.family) {
      out << "# TYPE " << name << " counter\n";
      for (const auto& [label, v] : e.family->snapshot())
        out << name << '{' << e.label << "=\"" << label << "\"} " << v << '\n';
    } else if (e.histogram) {
      const auto& h = *e.histogram;
      out << "# TYPE " << name << " histogram\n";
      uint64_t cumulative = 0;
      for (size_t i = 0; i < h.bounds().size(); ++i) {
        cumulative += h.bucket(i);
        out << name << "_bucket{le=\"" << h.bounds()[i] << "\"} " << cumulative << '\n';
      }
      cumulative += h.bucket(h.bounds().size());
      out << name << "_bucket{le=\"+Inf\"} " << cumulative << '\n';
      out << name << "_sum " << h.sum() << '\n' << name << "_count " << h.count() << '\n';
    }
  }
  return out.str();
}

std::vector<double> latency_buckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

}  // namespace tern
