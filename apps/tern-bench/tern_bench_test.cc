// Runs the real tern-bench binary against the real ternd, each workload at a small size, and
// requires a clean verdict: exit 0 and no loss, duplicate or order violation in its JSON.
// Skips (with a message) when ternd has not been built.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "base/clock.h"

namespace {
namespace fs = std::filesystem;
namespace json = boost::json;

std::string bin_dir() {
  if (const char* d = std::getenv("TERN_BIN_DIR"); d && *d) return d;
  return std::string(TERN_SOURCE_DIR) + "/build/bin";
}

// Reads from fd until `deadline_us` (monotonic); appends to `out`; false on timeout.
bool read_until_eof(int fd, std::string& out, int64_t deadline_us) {
  char buf[4096];
  for (;;) {
    const int64_t left_ms = (deadline_us - tern::mono_us()) / 1000;
    if (left_ms <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return true;
    out.append(buf, static_cast<size_t>(r));
  }
}

// Starts `argv` with stdout on a pipe; returns pid and the read end.
pid_t spawn(const std::vector<std::string>& argv, int* out_fd) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(p[1]);
  *out_fd = p[0];
  return pid;
}

int wait_exit(pid_t pid, int timeout_s) {
  const int64_t deadline = tern::mono_us() + int64_t{timeout_s} * 1'000'000;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (tern::mono_us() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

class TernBenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string ternd = bin_dir() + "/ternd";
    bench_ = bin_dir() + "/tern-bench";
    if (!fs::exists(ternd)) GTEST_SKIP() << "ternd not built yet (looked for " << ternd << "); build target ternd";
    ASSERT_TRUE(fs::exists(bench_)) << bench_;
    char tmpl[] = "/tmp/tern-bench-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    data_dir_ = tmpl;
    int out = -1;
    server_pid_ = spawn({ternd, "--listen", "127.0.0.1:0", "--data", data_dir_}, &out);
    ASSERT_GT(server_pid_, 0);
    server_out_ = out;
    // The first line of stdout is exactly "listening 127.0.0.1:PORT".
    std::string line;
    const int64_t deadline = tern::mono_us() + 30'000'000;
    while (line.find('\n') == std::string::npos && tern::mono_us() < deadline) {
      pollfd p{out, POLLIN, 0};
      if (::poll(&p, 1, 500) <= 0) continue;
      char c[256];
      const ssize_t n = ::read(out, c, sizeof c);
      if (n <= 0) break;
      line.append(c, static_cast<size_t>(n));
    }
    const std::string first = line.substr(0, line.find('\n'));
    ASSERT_EQ(first.rfind("listening ", 0), 0u) << "ternd said: " << line;
    address_ = first.substr(10);
  }

  void TearDown() override {
    if (server_pid_ > 0) {
      ::kill(server_pid_, SIGTERM);
      EXPECT_EQ(wait_exit(server_pid_, 30), 0) << "ternd did not drain and exit 0 on SIGTERM";
    }
    if (server_out_ >= 0) ::close(server_out_);
    if (!data_dir_.empty()) {
      std::error_code ec;
      fs::remove_all(data_dir_, ec);
    }
  }

  // Runs tern-bench with `args` (plus --server, --server-pid, --json, --quiet); returns its JSON.
  json::object run_bench(std::vector<std::string> args, int* exit_code) {
    std::vector<std::string> argv{bench_};
    argv.insert(argv.end(), args.begin(), args.end());
    for (const char* a : {"--json", "--quiet"}) argv.emplace_back(a);
    argv.emplace_back("--server");
    argv.emplace_back("http://" + address_);
    argv.emplace_back("--server-pid");
    argv.emplace_back(std::to_string(server_pid_));
    int out = -1;
    const pid_t pid = spawn(argv, &out);
    std::string text;
    const bool finished = read_until_eof(out, text, tern::mono_us() + 240'000'000);
    ::close(out);
    *exit_code = wait_exit(pid, finished ? 60 : 1);
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec || !v.is_object()) {
      ADD_FAILURE() << "tern-bench printed no JSON: " << text;
      return {};
    }
    return v.as_object();
  }

  // The common verdict: exit 0, verifier clean, everything acknowledged was delivered.
  void expect_clean(const json::object& r, int code) {
    EXPECT_EQ(code, 0) << json::serialize(r);
    ASSERT_TRUE(r.contains("verifier")) << json::serialize(r);
    const auto& v = r.at("verifier").as_object();
    EXPECT_EQ(v.at("losses").to_number<uint64_t>(), 0u) << json::serialize(v);
    EXPECT_EQ(v.at("duplicates").to_number<uint64_t>(), 0u) << json::serialize(v);
    EXPECT_EQ(v.at("order_violations").to_number<uint64_t>(), 0u) << json::serialize(v);
    EXPECT_EQ(v.at("seq_conflicts").to_number<uint64_t>(), 0u);
    EXPECT_EQ(v.at("foreign").to_number<uint64_t>(), 0u);
    EXPECT_EQ(v.at("echoes").to_number<uint64_t>(), 0u);
    EXPECT_EQ(v.at("delivered").to_number<uint64_t>(), v.at("expected_deliveries").to_number<uint64_t>());
    EXPECT_TRUE(r.at("ok").as_bool());
  }

  static const json::object& result(const json::object& r) { return r.at("result").as_object(); }

  std::string bench_, data_dir_, address_;
  pid_t server_pid_ = -1;
  int server_out_ = -1;
};

TEST_F(TernBenchTest, Pairs) {
  int code = 0;
  auto r = run_bench({"pairs", "--clients", "20", "--rate", "200", "--duration", "2"}, &code);
  expect_clean(r, code);
  if (!r.contains("result")) return;
  const auto& s = result(r);
  EXPECT_GT(s.at("acked").to_number<uint64_t>(), 300u);
  EXPECT_GT(s.at("latency_ms").at("count").to_number<uint64_t>(), 0u);
  EXPECT_FALSE(s.at("server_cpu_us_per_delivery").is_null());
  EXPECT_EQ(r.at("connections").at("online_after_connect").to_number<uint64_t>(), 20u);
}

TEST_F(TernBenchTest, PairsOverTwoWorkersAndTwoSourceAddresses) {
  int code = 0;
  auto r = run_bench({"pairs", "--clients", "20", "--rate", "200", "--duration", "2", "--workers", "2",
                      "--source-addrs", "2"},
                     &code);
  expect_clean(r, code);
  if (!r.contains("result")) return;
  EXPECT_EQ(r.at("verifier").at("devices").to_number<uint64_t>(), 20u);
  EXPECT_GT(result(r).at("acked").to_number<uint64_t>(), 300u);
}

TEST_F(TernBenchTest, Group) {
  int code = 0;
  auto r = run_bench({"group", "--clients", "12", "--group-size", "6", "--senders", "2", "--rate", "100",
                      "--duration", "2"},
                     &code);
  expect_clean(r, code);
  if (!r.contains("result")) return;
  const auto& s = result(r);
  // Every message reaches the five other members.
  EXPECT_EQ(s.at("delivered").to_number<uint64_t>() + s.at("replayed").to_number<uint64_t>(),
            5 * s.at("acked").to_number<uint64_t>());
}

TEST_F(TernBenchTest, Broadcast) {
  int code = 0;
  auto r = run_bench({"broadcast", "--clients", "12", "--rate", "50", "--duration", "2"}, &code);
  expect_clean(r, code);
  if (!r.contains("result")) return;
  const auto& s = result(r);
  EXPECT_EQ(s.at("delivered").to_number<uint64_t>() + s.at("replayed").to_number<uint64_t>(),
            11 * s.at("acked").to_number<uint64_t>());
}

TEST_F(TernBenchTest, Idle) {
  int code = 0;
  auto r = run_bench({"idle", "--clients", "20", "--duration", "1"}, &code);
  expect_clean(r, code);
  if (!r.contains("idle")) return;
  const auto& idle = r.at("idle").as_object();
  EXPECT_EQ(idle.at("connections").to_number<uint64_t>(), 20u);
  EXPECT_EQ(idle.at("disconnects_while_held").to_number<uint64_t>(), 0u);
  EXPECT_FALSE(idle.at("server_bytes_per_connection").is_null());
}

TEST_F(TernBenchTest, OfflineDrain) {
  int code = 0;
  auto r = run_bench({"offline-drain", "--clients", "10", "--queued", "20", "--rate", "200"}, &code);
  expect_clean(r, code);
  if (!r.contains("result")) return;
  const auto& s = result(r);
  EXPECT_EQ(s.at("acked").to_number<uint64_t>(), 100u);
  EXPECT_EQ(s.at("replayed").to_number<uint64_t>(), 100u);  // all of it while replaying
  EXPECT_TRUE(s.contains("replay_s"));
}

TEST_F(TernBenchTest, ReconnectStorm) {
  int code = 0;
  auto r = run_bench({"reconnect-storm", "--clients", "20", "--rate", "100", "--duration", "3"}, &code);
  expect_clean(r, code);
  if (!r.contains("result")) return;
  const auto& s = result(r);
  EXPECT_TRUE(s.contains("reconnect_s"));
  EXPECT_GE(r.at("connections").at("connects").to_number<uint64_t>(), 40u);  // everyone twice
}

TEST_F(TernBenchTest, FindMaxStepsUp) {
  int code = 0;
  auto r = run_bench({"pairs", "--clients", "10", "--rate", "50", "--duration", "1", "--find-max", "--max-steps", "2",
                      "--p99-bound-ms", "1000"},
                     &code);
  expect_clean(r, code);
  if (!r.contains("find_max")) return;
  EXPECT_EQ(r.at("steps").as_array().size(), 2u);
  EXPECT_GE(r.at("find_max").at("max_sustained_rate").to_number<double>(), 50.0);
}

// No server at all: the run cannot be carried out, which is exit 2, not a verdict.
TEST(TernBenchNoServer, UnreachableServerExitsTwo) {
  const std::string bench = bin_dir() + "/tern-bench";
  ASSERT_TRUE(fs::exists(bench)) << bench;
  int out = -1;
  const pid_t pid = spawn({bench, "pairs", "--server", "http://127.0.0.1:1", "--clients", "2", "--quiet", "--json"}, &out);
  std::string text;
  read_until_eof(out, text, tern::mono_us() + 60'000'000);
  ::close(out);
  EXPECT_EQ(wait_exit(pid, 30), 2) << text;
}

}  // namespace
