#include "client/testing/ternd_process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "base/testing/child_process.h"
#include "base/testing/loopback_port.h"

namespace tern::client::testing {
namespace fs = std::filesystem;

std::string find_ternd() { return find_binary("ternd"); }

std::string find_binary(const std::string& name) {
  std::vector<fs::path> candidates;
  if (const char* d = std::getenv("TERN_BIN_DIR"); d && *d) candidates.emplace_back(fs::path(d) / name);
  candidates.emplace_back(fs::path("build/bin") / name);
  candidates.emplace_back(fs::path(__FILE__).parent_path().parent_path().parent_path().parent_path() / "build/bin" / name);
  for (const auto& p : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0) return fs::absolute(p).string();
  }
  return {};
}

std::string make_temp_dir(const std::string& prefix) {
  std::string tmpl = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (!::mkdtemp(tmpl.data())) return {};
  return tmpl;
}

TerndProcess::TerndProcess(std::string binary, std::string data_dir, std::vector<std::string> extra_args)
    : binary_(std::move(binary)), data_dir_(std::move(data_dir)), extra_args_(std::move(extra_args)) {}

TerndProcess::~TerndProcess() { stop(); }

namespace {

std::string exit_status(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace

Result<void> TerndProcess::start(uint16_t port) {
  if (pid_ > 0) return make_error(ErrorCode::kInternal, "already running");
  if (port == 0) port = port_;
  // The first start picks the port (and picks again if ternd lost it to another process).
  const bool pick = port == 0;
  const std::string out_path = stdout_path();
  const std::string err_path = stderr_path();
  std::string last_exit;
  // A restart right after SIGKILL can meet the old socket for a moment: a few tries.
  for (int attempt = 0; attempt < 20; ++attempt) {
    // Below the kernel's ephemeral range: a port picked there (port 0) could be taken,
    // between a SIGKILL and the restart, by a parallel test's outgoing connection.
    if (pick) port = tern::test_support::restartable_port();
    const std::string listen = "127.0.0.1:" + std::to_string(port);
    // Truncated here, before ternd runs: the previous run's "listening" line must not be
    // mistaken for this one's. Everything the child needs is built before the fork
    // (base/testing/child_process.h says why).
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    std::vector<std::string> args{binary_, "--listen", listen, "--data", data_dir_, "--durability", "sync",
                                  "--log-level", log_level_};
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    tern::test_support::ExecPlan plan(std::move(args));
    plan.stdout_to(out).stderr_to(err);
    const pid_t pid = plan.spawn();
    if (out >= 0) ::close(out);
    if (err >= 0) ::close(err);
    if (pid < 0) return make_error(ErrorCode::kInternal, "fork failed");
    pid_ = pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        last_exit = exit_status(status);
        break;  // exited (port still busy?): try again
      }
      std::ifstream in(out_path);
      std::string line;
      if (std::getline(in, line) && line.rfind("listening ", 0) == 0 && !in.eof()) {
        const auto colon = line.rfind(':');
        port_ = static_cast<uint16_t>(std::stoi(line.substr(colon + 1)));
        return {};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (pid_ > 0) {
      kill9();
      return make_error(ErrorCode::kInternal, "ternd on " + listen + " did not report its address in 20 s; its stderr:\n" +
                                                  stderr_tail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return make_error(ErrorCode::kInternal, "ternd exited at start 20 times (last: " + last_exit + ", port " +
                                              std::to_string(port) + "); its stderr:\n" + stderr_tail());
}

// At most ~1,500 characters: for an error message (a failed start in CI says why only
// through what the test prints).
std::string TerndProcess::stderr_tail() const {
  std::ifstream in(stderr_path(), std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  constexpr size_t kMax = 1500;
  if (text.size() > kMax) text = "..." + text.substr(text.size() - kMax);
  return text;
}

void TerndProcess::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void TerndProcess::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 500; ++i) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill9();
}

}  // namespace tern::client::testing
