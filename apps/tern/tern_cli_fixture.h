// The fixture of the `tern` end-to-end tests (tern_cli_test.cc, tern_cli_e2e_test.cc): a real
// ternd (TerndProcess) and `tern` run as a child process with its own config directory per
// user; a pseudo-terminal for `tern chat`; a port nothing listens on. Every wait is bounded.
// Thread affinity: the test thread.
#pragma once
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <pty.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <sstream>
#include <thread>

#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "client/api.h"
#include "client/blocking.h"
#include "client/io_thread.h"
#include "client/client.h"
#include "base/testing/child_process.h"
#include "client/testing/ternd_process.h"
#include "client/attachments.h"
#include "format.h"
#include "terminal.h"


namespace tern::cli::testing {
using namespace std::chrono_literals;
namespace json = boost::json;
using client::testing::TerndProcess;
using test_support::ExecPlan;

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

struct Proc {
  int status = -1;
  std::string out, err;
};

// Runs tern with XDG_CONFIG_HOME=config; at most 30 s.
inline Proc run_tern(const std::string& tern, const std::string& config, const std::vector<std::string>& args) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) return {};
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<std::string> argv{tern};
  argv.insert(argv.end(), args.begin(), args.end());
  // Built before the fork: the child of this multi-threaded process only execs.
  ExecPlan plan(std::move(argv), {"XDG_CONFIG_HOME=" + config});
  plan.stdin_from(devnull).stdout_to(out_pipe[1]).stderr_to(err_pipe[1]);
  const pid_t pid = plan.spawn();
  if (devnull >= 0) ::close(devnull);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (pid < 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return {};
  }
  Proc r;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0 && std::chrono::steady_clock::now() < deadline) {
    if (::poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  if (open_fds > 0) ::kill(pid, SIGKILL);
  ::waitpid(pid, &r.status, 0);
  r.status = WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1;
  return r;
}

// A loopback port where nothing listens: bound (so nobody else gets it) but not listening,
// so connecting to it is refused at once. Closed on destruction.
class DeadPort {
 public:
  DeadPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port_ = ntohs(a.sin_port);
  }
  ~DeadPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  bool ok() const { return port_ != 0; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

inline json::object parse_json(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  EXPECT_FALSE(ec) << text;
  return !ec && v.is_object() ? v.as_object() : json::object{};
}

// `tern chat` on a pseudo-terminal: everything it prints is collected by a reader thread.
class Pty {
 public:
  Pty(const std::string& tern, const std::string& config, const std::vector<std::string>& args) {
    winsize ws{};
    ws.ws_row = 30;
    ws.ws_col = 120;
    std::vector<std::string> argv{tern};
    argv.insert(argv.end(), args.begin(), args.end());
    // Built before the fork: the child of this multi-threaded process only execs.
    const ExecPlan plan(std::move(argv), {"XDG_CONFIG_HOME=" + config, "TERM=xterm"});
    pid_ = ::forkpty(&master_, nullptr, nullptr, &ws);
    if (pid_ == 0) plan.exec_in_child();  // stdin/stdout/stderr: the terminal
    reader_ = std::thread([this] {
      char buf[4096];
      while (!stop_) {
        pollfd p{master_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        ssize_t n = ::read(master_, buf, sizeof buf);
        if (n <= 0) break;  // the child closed the terminal
        std::lock_guard l(mu_);
        out_.append(buf, static_cast<size_t>(n));
      }
    });
  }
  ~Pty() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
    stop_ = true;
    reader_.join();
    ::close(master_);
  }
  void type(const std::string& s) { (void)!::write(master_, s.data(), s.size()); }
  // Output since `from` (a mark taken with size()) contains `needle`.
  bool wait_for(const std::string& needle, size_t from = 0, std::chrono::milliseconds timeout = 20s) {
    return eventually(
        [&] {
          std::lock_guard l(mu_);
          return out_.find(needle, std::min(from, out_.size())) != std::string::npos;
        },
        timeout);
  }
  size_t size() {
    std::lock_guard l(mu_);
    return out_.size();
  }
  // Output from `from` on.
  std::string text(size_t from = 0) {
    std::lock_guard l(mu_);
    return from < out_.size() ? out_.substr(from) : std::string();
  }
  // Position of `needle` at or after `from`, or npos.
  size_t find(const std::string& needle, size_t from = 0) {
    std::lock_guard l(mu_);
    return out_.find(needle, from);
  }
  std::string tail(size_t n = 2000) {
    std::lock_guard l(mu_);
    return out_.size() > n ? out_.substr(out_.size() - n) : out_;
  }
  // Exit status, or -1 if it did not exit in time.
  int wait_exit(std::chrono::milliseconds timeout = 10s) {
    int status = 0;
    const bool done = eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
    if (!done) return -1;
    exited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  int master_ = -1;
  pid_t pid_ = -1;
  bool exited_ = false;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string out_;
  std::thread reader_;
};

class TernCli : public ::testing::Test {
 protected:
  void SetUp() override {
    // The in-process SDK clients log each reconnect attempt at info: while ternd is down
    // that is dozens of lines, which would push a failure's message out of CI's excerpt.
    spdlog::set_level(spdlog::level::warn);
    ternd_ = client::testing::find_ternd();
    tern_ = client::testing::find_binary("tern");
    ASSERT_FALSE(ternd_.empty() || tern_.empty()) << "ternd or tern not built (TERN_BIN_DIR or build/bin)";
    dir_ = client::testing::make_temp_dir("tern-cli-test");
    server_ = std::make_unique<TerndProcess>(ternd_, dir_ + "/data");
    auto r = server_->start();
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  void TearDown() override {
    server_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string config(const std::string& who) { return dir_ + "/" + who; }
  Proc tern(const std::string& who, std::vector<std::string> args) {
    args.push_back("--server");
    args.push_back(server_->url());
    return run_tern(tern_, config(who), args);
  }
  // Credentials saved by `tern register`, to drive the other side with the SDK.
  client::Credentials saved(const std::string& who) {
    std::ifstream in(config(who) + "/tern/credentials.json");
    std::stringstream ss;
    ss << in.rdbuf();
    auto o = parse_json(ss.str());
    return client::Credentials{std::string(o["user"].as_string()), static_cast<uint32_t>(o["device"].to_number<int64_t>()),
                               std::string(o["token"].as_string())};
  }

  // An SDK client of `who` (registered by the CLI), started: end-to-end like `tern` itself,
  // with that config's store and keys (so `tern` cannot run for `who` meanwhile).
  std::unique_ptr<client::Client> sdk(const std::string& who, client::Events ev = {}) {
    client::Options o;
    o.server = server_->url();
    o.credentials = saved(who);
    o.reconnect = {50, 500, 0};
    o.store_path = config(who) + "/tern/state.sqlite";
    o.keyring_dir = config(who) + "/tern/keys";
    auto c = client::Client::create(o, std::move(ev));
    EXPECT_TRUE(c.ok());
    if (!c.ok()) return nullptr;
    (*c)->start();
    return std::move(*c);
  }

  std::string ternd_, tern_, dir_;
  std::unique_ptr<TerndProcess> server_;
};

// Messages an SDK client received, for the tests to wait on.
struct Inbox {
  std::mutex mu;
  std::vector<client::Message> got;
  std::vector<client::Receipt> receipts;
  client::Events events() {
    client::Events ev;
    ev.on_message = [this](const client::Message& m) {
      std::lock_guard l(mu);
      got.push_back(m);
    };
    ev.on_receipt = [this](const client::Receipt& r) {
      std::lock_guard l(mu);
      receipts.push_back(r);
    };
    return ev;
  }
  bool delivered_to(const std::string& user, Seq seq) {
    std::lock_guard l(mu);
    for (const auto& r : receipts)
      if (r.user == user && r.seq >= seq) return true;
    return false;
  }
  bool has(const std::string& text) {
    std::lock_guard l(mu);
    for (const auto& m : got)
      if (m.body == text) return true;
    return false;
  }
  std::vector<std::string> bodies() {
    std::lock_guard l(mu);
    std::vector<std::string> v;
    for (const auto& m : got)
      if (!m.system_json) v.push_back(m.body);
    return v;
  }
};


}  // namespace tern::cli::testing
