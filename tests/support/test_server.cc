#include "support/test_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/testing/child_process.h"

namespace tern::test {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string ternd_path() {
  // No fallback path: a test must run the build's own ternd, never another one it happens to find.
  const char* dir = std::getenv("TERN_BIN_DIR");
  return dir && *dir ? std::string(dir) + "/ternd" : "";
}

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

bool on_redis_backend() {
  const char* url = std::getenv("TERN_TEST_REDIS_URL");
  return url && *url;
}

std::vector<std::string> TestServer::disk_dirs() const {
  std::vector<std::string> dirs{data_dir_};
  if (const char* url = std::getenv("TERN_TEST_REDIS_URL"); url && *url)
    if (const char* dir = std::getenv("TERN_TEST_REDIS_DIR"); dir && *dir) dirs.emplace_back(dir);
  return dirs;
}

TestServer::TestServer(std::vector<std::string> args) : args_(std::move(args)) {
  // An integration binary started with --tern-backend=redis (ctest's `redis.` tests,
  // support/redis_backend.cc) runs the same tests on `ternd --store redis` against a
  // redis-server it started.
  const bool own_store = std::find(args_.begin(), args_.end(), "--store") != args_.end();
  if (const char* url = std::getenv("TERN_TEST_REDIS_URL"); url && *url && !own_store)
    args_.insert(args_.end(), {"--store", "redis", "--redis", url});
  // TERN_TEST_TERND_ARGS (by hand, e.g. "--redis-route-sends 0"): more flags for every ternd
  // of a run on Redis, to run a suite in another mode of the nodes.
  if (const char* extra = std::getenv("TERN_TEST_TERND_ARGS"); extra && *extra && !own_store) {
    std::istringstream in(extra);
    for (std::string a; in >> a;) args_.push_back(a);
  }
  char tmpl[] = "/tmp/tern-itest-XXXXXX";
  if (::mkdtemp(tmpl) != nullptr) {
    root_ = tmpl;
    data_dir_ = root_ + "/data";
    std::error_code ec;
    fs::create_directories(data_dir_, ec);
  } else {
    error_ = std::string("mkdtemp failed: ") + std::strerror(errno);
  }
}

TestServer::~TestServer() {
  if (pid_ > 0) kill(SIGKILL);
  if (!keep_ && !root_.empty()) {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
}

bool TestServer::start(std::chrono::milliseconds deadline) { return launch(0, deadline); }

bool TestServer::restart(std::chrono::milliseconds deadline) {
  if (pid_ > 0) {
    error_ = "restart while the previous ternd is still running";
    return false;
  }
  if (port_ != 0 && launch(port_, deadline)) return true;
  // The old port may be taken (another test's client got it as an ephemeral port).
  if (pid_ > 0) kill(SIGKILL);
  return launch(0, deadline);
}

bool TestServer::launch(uint16_t port, std::chrono::milliseconds deadline) {
  error_.clear();
  if (root_.empty()) {
    error_ = "no temp directory";
    return false;
  }
  const std::string bin = ternd_path();
  if (::access(bin.c_str(), X_OK) != 0) {
    error_ = bin.empty() ? "TERN_BIN_DIR is not set (ctest sets it to the build's bin directory)"
                         : "ternd binary not found at " + bin;
    return false;
  }
  const std::string out_path = root_ + "/stdout.log";
  const std::string err_path = root_ + "/stderr.log";
  // Fresh stdout file per launch: we look for the first line of THIS run.
  int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out_fd < 0 || err_fd < 0) {
    error_ = "cannot open log files in " + root_;
    if (out_fd >= 0) ::close(out_fd);
    if (err_fd >= 0) ::close(err_fd);
    return false;
  }

  std::vector<std::string> argv_s = {bin, "--listen", "127.0.0.1:" + std::to_string(port), "--data", data_dir_};
  argv_s.insert(argv_s.end(), args_.begin(), args_.end());
  // The server's environment. Under AddressSanitizer, freed memory waits in a quarantine
  // (256 MB by default) before it is reused, so the RSS the adversarial suite measures would
  // grow with every allocation, not with what the server holds: turn the quarantine off, and
  // let the allocator give freed pages back to the OS as glibc's does.
  std::vector<std::string> set_env = env_;
#if defined(__SANITIZE_ADDRESS__)
  // A library preloaded by env_ comes before AddressSanitizer's runtime, which would refuse to
  // start (it checks that it comes first); the preloads tests use intercept no allocation.
  const bool preloads = std::any_of(env_.begin(), env_.end(), [](const std::string& e) { return e.rfind("LD_PRELOAD=", 0) == 0; });
  const char* asan = std::getenv("ASAN_OPTIONS");
  set_env.push_back(std::string("ASAN_OPTIONS=") + (asan ? std::string(asan) + ":" : std::string()) +
                    "quarantine_size_mb=0:thread_local_quarantine_size_kb=0:allocator_release_to_os_interval_ms=100" +
                    (preloads ? ":verify_asan_link_order=0" : ""));
#endif
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  // Everything exec needs is built before the fork (base/testing/child_process.h).
  tern::test_support::ExecPlan plan(std::move(argv_s), set_env);
  plan.stdin_from(devnull).stdout_to(out_fd).stderr_to(err_fd).die_with_parent();
  const pid_t pid = plan.spawn();
  if (devnull >= 0) ::close(devnull);
  if (pid < 0) {
    error_ = std::string("fork failed: ") + std::strerror(errno);
    ::close(out_fd);
    ::close(err_fd);
    return false;
  }
  ::close(out_fd);
  ::close(err_fd);
  pid_ = pid;

  const auto until = Clock::now() + deadline;
  while (Clock::now() < until) {
    std::string out = read_file(out_path);
    auto nl = out.find('\n');
    if (nl != std::string::npos) {
      std::string line = out.substr(0, nl);
      const std::string prefix = "listening 127.0.0.1:";
      if (line.rfind(prefix, 0) != 0) {
        error_ = "unexpected first stdout line: '" + line + "'";
        kill(SIGKILL);
        return false;
      }
      int p = std::atoi(line.c_str() + prefix.size());
      if (p <= 0 || p > 65535) {
        error_ = "bad port in '" + line + "'";
        kill(SIGKILL);
        return false;
      }
      port_ = static_cast<uint16_t>(p);
      return true;
    }
    if (!running()) {
      error_ = "ternd exited before listening (status " + std::to_string(last_status_) + ")\n" + log_tail();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  error_ = "ternd did not print its listening line in time\n" + log_tail();
  kill(SIGKILL);
  return false;
}

bool TestServer::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    last_status_ = decode_status(status);
    pid_ = -1;
    return false;
  }
  return r == 0;
}

int TestServer::reap(std::chrono::milliseconds deadline) {
  const auto until = Clock::now() + deadline;
  while (pid_ > 0) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      last_status_ = decode_status(status);
      pid_ = -1;
      return last_status_;
    }
    if (r < 0 && errno != EINTR) {
      pid_ = -1;
      return -1;
    }
    if (Clock::now() >= until) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return last_status_;
}

int TestServer::kill(int sig) {
  if (pid_ <= 0) return last_status_;
  ::kill(pid_, sig);
  int r = reap(std::chrono::seconds(20));
  if (r == -1 && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    r = reap(std::chrono::seconds(20));
  }
  return r;
}

int TestServer::terminate(std::chrono::milliseconds deadline) {
  if (pid_ <= 0) return last_status_;
  ::kill(pid_, SIGTERM);
  int r = reap(deadline);
  if (pid_ > 0) {  // did not drain in time
    ::kill(pid_, SIGKILL);
    reap(std::chrono::seconds(20));
    return -1;
  }
  return r;
}

bool TestServer::await_log(const std::string& text, std::chrono::milliseconds deadline, size_t times) const {
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    if (log_count(text) >= times) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

size_t TestServer::log_count(const std::string& text) const {
  const std::string log = log_tail(std::string::npos);
  size_t n = 0;
  for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + text.size())) ++n;
  return n;
}

std::string TestServer::log_tail(size_t max_bytes) const {
  if (root_.empty()) return {};
  std::string all = "--- ternd stdout ---\n" + read_file(root_ + "/stdout.log") + "--- ternd stderr ---\n" +
                    read_file(root_ + "/stderr.log");
  if (all.size() > max_bytes) all = "..." + all.substr(all.size() - max_bytes);
  return all;
}

}  // namespace tern::test
