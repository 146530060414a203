// deploy/bench-nodes.sh, the script docs/benchmarks.md's several-node figures come from, run
// briefly on free loopback ports: one ternd on RocksDB, one on a redis-server, and three
// behind HAProxy on one redis-server. A benchmark measures nothing here; the test checks
// that every set-up starts, delivers its load (every message, no failed send) and
// that the script exits 0, so a change to what the script starts (ternd's flags,
// haproxy.cfg) cannot leave the documented commands broken unnoticed.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "store/redis/testing/redis_server.h"
#include "support/test_server.h"

namespace tern::test {
namespace {

namespace fs = std::filesystem;
using store::redis::testing::port_free;

// The first of `count` free ports in a row below the kernel's ephemeral range (32768 up),
// where the other tests' ports and outgoing connections are; 0 if none was found.
uint16_t free_run(int from, int count) {
  for (int base = from + static_cast<int>(::getpid() % 500) * 8; base + count < 30000; base += count + 1) {
    bool all = true;
    for (int k = 0; k < count && all; ++k) all = port_free(static_cast<uint16_t>(base + k));
    if (all) return static_cast<uint16_t>(base);
  }
  return 0;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(BenchNodes, EverySetUpStartsAndDeliversItsLoad) {
  const std::string ternd = ternd_path();
  ASSERT_FALSE(ternd.empty()) << "TERN_BIN_DIR is needed";
  const std::string bin = fs::path(ternd).parent_path().string();
  const uint16_t lb = free_run(20000, 4);
  const uint16_t redis = free_run(24000, 1);
  ASSERT_NE(lb, 0);
  ASSERT_NE(redis, 0);
  char tmpl[] = "/tmp/tern-bench-nodes-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string out = std::string(tmpl) + "/out.log";

  // 10 clients (5 pairs), 100 messages a second for 2 s: 200 messages per set-up.
  std::ostringstream cmd;
  cmd << "env SETUPS='rocksdb redis1 redis1tls redis3' BIN='" << bin << "' LB_PORT=" << lb << " REDIS_PORT=" << redis
      << " '" << TERN_SOURCE_DIR << "/deploy/bench-nodes.sh' 10 100 2 pairs >'" << out << "' 2>&1";
  const int status = std::system(cmd.str().c_str());
  const std::string log = read_file(out);
  fs::remove_all(tmpl);
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 0) << log;
  // Every message delivered, none failed. Whether the rate was sustained depends on what
  // else the machine runs (the test suite beside it): not asserted, a test measures nothing.
  for (const char* setup : {"rocksdb", "redis1", "redis1tls", "redis3"}) {
    const std::regex line(std::string("(^|\n)") + setup + R"(: sent/s [0-9]+ delivered 200 send_failed 0 undelivered 0 )");
    EXPECT_TRUE(std::regex_search(log, line)) << setup << " did not deliver its load:\n" << log;
  }
  // HAProxy carried redis3's clients: its CPU is counted, so it ran.
  EXPECT_NE(log.find("haproxy"), std::string::npos) << log;
}

}  // namespace
}  // namespace tern::test
