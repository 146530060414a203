#include "store/redis/testing/redis_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>

#include "store/redis/redis_connection.h"

namespace tern::store::redis::testing {

uint16_t free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

namespace {

bool answers_ping(uint16_t port) {
  auto c = RedisConnection::connect(RedisAddress{"127.0.0.1", port}, std::chrono::milliseconds(100),
                                    std::chrono::milliseconds(500));
  if (!c) return false;
  // While it loads its AOF, Redis answers PING with a LOADING error: not ready yet.
  auto r = (*c)->command({"PING"});
  return r.ok() && (*r)->type == REDIS_REPLY_STATUS;
}

}  // namespace

RedisServer::RedisServer() : RedisServer(std::vector<std::string>{}) {}

RedisServer::RedisServer(std::vector<std::string> extra_args) : extra_args_(std::move(extra_args)) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "tern-redis-XXXXXX").string();
  if (::mkdtemp(tmpl.data())) dir_ = tmpl;
}

RedisServer::~RedisServer() {
  stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

Result<void> RedisServer::start() {
  if (dir_.empty()) return make_error(ErrorCode::kInternal, "no temp dir for redis-server");
  if (pid_ > 0) return {};
  if (port_ == 0) port_ = free_loopback_port();
  if (port_ == 0) return make_error(ErrorCode::kInternal, "no free port");
  const std::string port = std::to_string(port_);
  std::vector<std::string> args = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", dir_,
                                   "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                   "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
                                   "--logfile", dir_ + "/redis.log"};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  pid_t pid = ::fork();
  if (pid < 0) return make_error(ErrorCode::kInternal, "fork failed");
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The child must not hold the test's stdout/stderr open (a pipe reader would wait for it).
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    ::execvp("redis-server", argv.data());
    ::_exit(127);
  }
  pid_ = pid;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return make_error(ErrorCode::kInternal, "redis-server exited (is it installed? scripts/setup.sh)");
    }
    if (answers_ping(port_)) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill9();
  return make_error(ErrorCode::kInternal, "redis-server did not answer within 10 s");
}

void RedisServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
}

void RedisServer::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void RedisServer::freeze() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void RedisServer::thaw() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

}  // namespace tern::store::redis::testing
