#include "base/metrics.h"

#include <gtest/gtest.h>

namespace tern {

TEST(Metrics, RendersPrometheusText) {
  MetricsRegistry r;
  r.counter("tern_test_total", "a counter").inc(3);
  r.family("tern_frames_total", "type", "frames").with("send").inc();
  auto& h = r.histogram("tern_latency_seconds", "latency", {0.001, 0.01});
  h.observe(0.0005);
  h.observe(0.005);
  h.observe(5);
  const std::string text = r.render_prometheus();
  EXPECT_NE(text.find("tern_test_total 3"), std::string::npos);
  EXPECT_NE(text.find("tern_frames_total{type=\"send\"} 1"), std::string::npos);
  EXPECT_NE(text.find("tern_latency_seconds_bucket{le=\"0.001\"} 1"), std::string::npos);
  EXPECT_NE(text.find("tern_latency_seconds_bucket{le=\"0.01\"} 2"), std::string::npos);
  EXPECT_NE(text.find("tern_latency_seconds_bucket{le=\"+Inf\"} 3"), std::string::npos);
  EXPECT_NE(text.find("tern_latency_seconds_count 3"), std::string::npos);
}

}  // namespace tern
