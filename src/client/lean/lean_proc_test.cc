#include "client/lean/lean_proc.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace tern::client::lean {
namespace {

TEST(LeanProc, ParsesStatWithAwkwardCommandName) {
  const std::string stat =
      "1234 (a b) c)) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 3 0 12345 1000000 200 18446744073709551615";
  auto t = parse_stat_cpu_ticks(stat);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, 325);
  EXPECT_FALSE(parse_stat_cpu_ticks("1234 (x) S 1 2").ok());
  EXPECT_FALSE(parse_stat_cpu_ticks("no parens").ok());
}

TEST(LeanProc, ParsesVmRss) {
  auto r = parse_status_rss_kb("Name:\tternd\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads: 3\n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 5120);
  EXPECT_FALSE(parse_status_rss_kb("Name: x\n").ok());
}

TEST(LeanProc, ParsesSchedstatWait) {
  auto r = parse_schedstat_wait_ns("2939056924 11820034155 14705\n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 11820034155);
  EXPECT_FALSE(parse_schedstat_wait_ns("123").ok());
  EXPECT_FALSE(parse_schedstat_wait_ns("1 x 3").ok());
}

TEST(LeanProc, SamplesThisProcess) {
  auto s = sample_process(static_cast<int>(::getpid()));
  ASSERT_TRUE(s.ok());
  EXPECT_GT(s->rss_kb, 0);
  EXPECT_GE(s->runqueue_wait_us, 0) << "schedstat is readable for our own threads";
  EXPECT_GE(s->cpu_us, 0);
  EXPECT_FALSE(sample_process(0x7ffffff0).ok());
  EXPECT_GE(self_cpu_us(), 0);
}

}  // namespace
}  // namespace tern::client::lean
