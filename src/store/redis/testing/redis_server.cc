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
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>

#include "base/testing/child_process.h"
#include "base/testing/loopback_port.h"
#include "store/redis/redis_connection.h"
#include "store/redis/testing/redis_info.h"
#include "store/redis/testing/test_certs.h"

namespace tern::store::redis::testing {

namespace {

// The process id of the redis-server that answers on the port once it is ready, or nullopt
// (none, or still loading its AOF: PING answers LOADING then).
std::optional<long> ready_pid(uint16_t port, const RedisCredentials& login) {
  auto c = RedisConnection::connect(RedisAddress{"127.0.0.1", port}, std::chrono::milliseconds(100),
                                    std::chrono::milliseconds(500), login);
  if (!c) return std::nullopt;
  auto r = (*c)->command({"PING"});
  if (!r.ok() || (*r)->type != REDIS_REPLY_STATUS) return std::nullopt;
  auto info = (*c)->command({"INFO", "server"});
  if (!info.ok() || (*info)->type != REDIS_REPLY_STRING) return std::nullopt;
  const auto pid = info_field(std::string_view((*info)->str, (*info)->len), "process_id");
  if (!pid) return std::nullopt;
  return static_cast<long>(*pid);
}

}  // namespace

RedisServer::RedisServer() : RedisServer(std::vector<std::string>{}) {}

RedisServer::RedisServer(std::vector<std::string> extra_args) : RedisServer(std::move(extra_args), {}) {}

RedisServer::RedisServer(std::vector<std::string> extra_args, RedisCredentials login)
    : extra_args_(std::move(extra_args)), login_(std::move(login)) {
  if (login_.user.empty() && !login_.empty()) {
    extra_args_.insert(extra_args_.end(), {"--requirepass", login_.password});
  } else if (!login_.empty()) {
    extra_args_.insert(extra_args_.end(),
                       {"--user", login_.user, "on", ">" + login_.password, "~*", "&*", "+@all", "--user", "default", "off"});
  }
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
  if (port_ != 0) return launch();  // a restart: the same port, or a clear failure
  // The first start: a port of our own. Tests run in parallel (ctest -j), each with its own
  // redis-server, so a port may be taken between the pick and the bind: then that server
  // exits, or another one answers; pick again.
  Result<void> last = make_error(ErrorCode::kInternal, "no free port");
  for (int attempt = 0; attempt < 8; ++attempt) {
    port_ = tern::test_support::restartable_port();  // below the ephemeral range: kept on restarts
    if (port_ == 0) continue;
    last = launch();
    if (last.ok()) return last;
  }
  port_ = 0;
  return last;
}

void RedisServer::serve_tls(const TestCerts& certs) {
  tls_args_ = {"--tls-cert-file", certs.server_cert(), "--tls-key-file", certs.server_key(), "--tls-ca-cert-file",
               certs.ca(), "--tls-auth-clients", "yes"};
}

Result<void> RedisServer::launch() {
  const std::string port = std::to_string(port_);
  std::vector<std::string> args = {"redis-server", "--port", tls_args_.empty() ? port : "0", "--bind", "127.0.0.1", "--dir", dir_,
                                   "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                   "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
                                   "--logfile", dir_ + "/redis.log"};
  if (!tls_args_.empty()) {
    args.insert(args.end(), {"--tls-port", port});
    args.insert(args.end(), tls_args_.begin(), tls_args_.end());
  }
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  // The child must not hold the test's stdout/stderr open (a pipe reader would wait for it).
  const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  tern::test_support::ExecPlan plan(std::move(args));
  plan.stdout_to(devnull).stderr_to(devnull);
  const pid_t pid = plan.spawn();  // everything exec needs built before the fork
  if (devnull >= 0) ::close(devnull);
  if (pid < 0) return make_error(ErrorCode::kInternal, "fork failed");
  pid_ = pid;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return make_error(ErrorCode::kInternal, "redis-server exited (port " + port +
                                                  " taken? is it installed? scripts/setup.sh)");
    }
    if (auto answering = ready_pid(port_, login_)) {
      if (*answering == pid_) return {};
      // Another test's server holds the port; ours cannot bind and exits (or is killed here).
      kill9();
      return make_error(ErrorCode::kInternal, "port " + port + " is another redis-server's");
    }
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
