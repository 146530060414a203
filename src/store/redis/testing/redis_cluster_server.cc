#include "store/redis/testing/redis_cluster_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <map>
#include <thread>

#include <hiredis/hiredis.h>

#include "base/testing/child_process.h"
#include "store/redis/redis_connection.h"
#include "store/redis/testing/redis_server.h"
#include "store/redis/testing/test_certs.h"

namespace tern::store::redis::testing {

namespace {

using Clock = std::chrono::steady_clock;

std::string_view str(const redisReply* r) { return std::string_view(r->str, r->len); }

Result<Reply> raw(uint16_t port, const RedisCredentials& login, const std::vector<std::string>& argv) {
  auto c = RedisConnection::connect(RedisAddress{"127.0.0.1", port}, std::chrono::milliseconds(200),
                                    std::chrono::milliseconds(5000), login);
  if (!c) return c.error();
  std::vector<std::string_view> views(argv.begin(), argv.end());
  return (*c)->command(views);
}

std::string to_text(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      return std::to_string(r->integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::string out;
      for (size_t i = 0; i < r->elements; ++i) out += (i ? "\n" : "") + to_text(r->element[i]);
      return out;
    }
    default:
      return std::string(str(r));
  }
}

// Forks and execs argv with stdout/stderr to `log`; returns the child's pid (or -1).
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  tern::test_support::ExecPlan plan(args);
  plan.stdout_to(fd).stderr_to(fd);
  const pid_t pid = plan.spawn();  // everything exec needs built before the fork
  if (fd >= 0) ::close(fd);
  return pid;
}

// slot → master port, as one node's CLUSTER SLOTS says.
Result<std::vector<uint16_t>> slot_map(uint16_t port, const RedisCredentials& login) {
  auto r = raw(port, login, {"CLUSTER", "SLOTS"});
  if (!r) return r.error();
  const redisReply* a = r->get();
  if (a->type != REDIS_REPLY_ARRAY) return make_error(ErrorCode::kInternal, "CLUSTER SLOTS: " + to_text(a));
  std::vector<uint16_t> map(16384, 0);
  for (size_t i = 0; i < a->elements; ++i) {
    const redisReply* range = a->element[i];
    if (range->elements < 3) return make_error(ErrorCode::kInternal, "CLUSTER SLOTS: short range");
    const auto port_of_master = static_cast<uint16_t>(range->element[2]->element[1]->integer);
    for (long long s = range->element[0]->integer; s <= range->element[1]->integer; ++s)
      map[static_cast<size_t>(s)] = port_of_master;
  }
  return map;
}

}  // namespace

RedisClusterServer::RedisClusterServer() : RedisClusterServer(std::string()) {}

RedisClusterServer::RedisClusterServer(std::string password) : password_(std::move(password)) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "tern-rcluster-XXXXXX").string();
  if (::mkdtemp(tmpl.data())) dir_ = tmpl;
}

RedisClusterServer::~RedisClusterServer() {
  for (uint16_t p : ports_) kill9(p);
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string RedisClusterServer::seeds() const {
  const std::string scheme = client_tls_ ? "rediss://127.0.0.1:" : "redis://127.0.0.1:";
  std::string out;
  for (uint16_t p : ports_) out += (out.empty() ? "" : ",") + scheme + std::to_string(p);
  return out;
}

std::string RedisClusterServer::seeds3() const {
  const std::string scheme = client_tls_ ? "rediss://127.0.0.1:" : "redis://127.0.0.1:";
  std::string out;
  for (size_t i = 0; i < 3 && i < ports_.size(); ++i) out += (out.empty() ? "" : ",") + scheme + std::to_string(ports_[i]);
  return out;
}

void RedisClusterServer::serve_tls(const TestCerts& certs, std::shared_ptr<const RedisTls> client) {
  client_tls_ = std::move(client);
  tls_args_ = {"--tls-cluster", "yes", "--tls-replication", "yes", "--tls-cert-file", certs.server_cert(),
               "--tls-key-file", certs.server_key(), "--tls-ca-cert-file", certs.ca(), "--tls-auth-clients", "yes",
               // The nodes' own connections (cluster bus, replication, MIGRATE) show the
               // client certificate too.
               "--tls-client-cert-file", certs.client_cert(), "--tls-client-key-file", certs.client_key()};
  cli_tls_args_ = {"--tls", "--cacert", certs.ca(), "--cert", certs.client_cert(), "--key", certs.client_key()};
}

size_t RedisClusterServer::index(uint16_t port) const {
  for (size_t i = 0; i < ports_.size(); ++i)
    if (ports_[i] == port) return i;
  return ports_.size();
}

bool RedisClusterServer::alive(uint16_t port) const {
  const size_t i = index(port);
  return i < pids_.size() && pids_[i] > 0;
}

Result<void> RedisClusterServer::launch(size_t i) {
  const std::string port = std::to_string(ports_[i]);
  const std::string dir = dir_ + "/" + port;
  std::filesystem::create_directories(dir);
  std::vector<std::string> args = {"redis-server", "--port", tls_args_.empty() ? port : "0", "--bind", "127.0.0.1", "--dir", dir, "--cluster-enabled",
                                   "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout",
                                   std::to_string(kNodeTimeoutMs), "--cluster-replica-validity-factor", "0", "--appendonly",
                                   "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", "--protected-mode",
                                   "no", "--loglevel", "notice", "--logfile", dir + "/redis.log"};
  if (!password_.empty()) args.insert(args.end(), {"--requirepass", password_, "--masterauth", password_});
  if (!tls_args_.empty()) {
    args.insert(args.end(), {"--tls-port", port});
    args.insert(args.end(), tls_args_.begin(), tls_args_.end());
  }
  const pid_t pid = spawn(args, dir + "/stdout.log");
  if (pid < 0) return make_error(ErrorCode::kInternal, "fork failed");
  pids_[i] = pid;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pids_[i] = -1;
      return make_error(ErrorCode::kInternal, "redis-server exited (is it installed? scripts/setup.sh)");
    }
    auto r = raw(ports_[i], login(), {"PING"});
    if (r && (*r)->type == REDIS_REPLY_STATUS) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill9(ports_[i]);
  return make_error(ErrorCode::kInternal, "redis-server did not answer within 10 s");
}

Result<void> RedisClusterServer::start() {
  if (dir_.empty()) return make_error(ErrorCode::kInternal, "no temp dir");
  if (!ports_.empty()) return make_error(ErrorCode::kInternal, "already started");
  // Distinct ports whose cluster bus port (+ 10000) is free too. A port taken between the
  // check and the launch (other processes on the machine) makes redis-server exit: that node
  // gets another port (bounded).
  auto pick = [&]() -> uint16_t {
    for (int tries = 0; tries < 50; ++tries) {
      const uint16_t c = free_loopback_port();
      if (c == 0 || c > 55535 || !port_free(c + 10000)) continue;
      bool dup = false;
      for (uint16_t q : ports_) dup = dup || q == c || q + 10000 == c || c + 10000 == q;
      if (!dup) return c;
    }
    return 0;
  };
  for (int i = 0; i < kNodes; ++i) {
    ports_.push_back(0);
    pids_.push_back(-1);
    Result<void> launched = make_error(ErrorCode::kInternal, "no free port");
    for (int tries = 0; tries < 5 && !launched.ok(); ++tries) {
      ports_.back() = pick();
      if (ports_.back() == 0) break;
      launched = launch(ports_.size() - 1);
    }
    if (!launched) return launched;
  }
  std::vector<std::string> args = {"redis-cli", "--cluster", "create"};
  for (uint16_t p : ports_) args.push_back("127.0.0.1:" + std::to_string(p));
  args.insert(args.end(), {"--cluster-replicas", "1", "--cluster-yes"});
  if (!password_.empty()) args.insert(args.end(), {"-a", password_, "--no-auth-warning"});
  args.insert(args.end(), cli_tls_args_.begin(), cli_tls_args_.end());
  const pid_t cli = spawn(args, dir_ + "/create.log");
  if (cli < 0) return make_error(ErrorCode::kInternal, "fork failed");
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  int status = 0;
  for (;;) {
    if (::waitpid(cli, &status, WNOHANG) == cli) break;
    if (Clock::now() > deadline) {
      ::kill(cli, SIGKILL);
      ::waitpid(cli, &status, 0);
      return make_error(ErrorCode::kInternal, "redis-cli --cluster create did not finish within 60 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return make_error(ErrorCode::kInternal, "redis-cli --cluster create failed (see " + dir_ + "/create.log)");
  auto h = await_healthy(std::chrono::seconds(30));
  if (!h) return h;
  // Every master has its replica linked (needed for failover tests).
  const auto until = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    int linked = 0;
    for (uint16_t p : ports_) {
      auto r = command(p, {"INFO", "replication"});
      if (r && r->find("role:slave") != std::string::npos && r->find("master_link_status:up") != std::string::npos)
        ++linked;
    }
    if (linked == kNodes / 2) return {};
    if (Clock::now() > until) return make_error(ErrorCode::kInternal, "replicas did not link within 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Result<std::string> RedisClusterServer::command(uint16_t port, const std::vector<std::string>& argv) const {
  auto r = raw(port, login(), argv);
  if (!r) return r.error();
  return to_text(r->get());
}

Result<void> RedisClusterServer::flush_masters() const {
  for (uint16_t p : ports_) {
    auto role = command(p, {"ROLE"});
    if (!role || role->rfind("master", 0) != 0) continue;
    auto r = command(p, {"FLUSHALL"});
    if (!r || *r != "OK")
      return make_error(ErrorCode::kInternal, "FLUSHALL failed on the master on port " + std::to_string(p));
  }
  return {};
}

Result<uint16_t> RedisClusterServer::master_of(uint16_t slot, uint16_t asked_port) const {
  Error last = make_error(ErrorCode::kUnavailable, "no live node");
  for (uint16_t p : ports_) {
    if (asked_port != 0 && p != asked_port) continue;
    if (!alive(p)) continue;
    auto m = slot_map(p, login());
    if (!m) {
      last = m.error();
      continue;
    }
    if ((*m)[slot] == 0) return make_error(ErrorCode::kNotFound, "slot not served");
    return (*m)[slot];
  }
  return last;
}

Result<uint16_t> RedisClusterServer::replica_of(uint16_t master_port) const {
  // CLUSTER SLOTS lists a replica only once it has synced (after a failover the old master
  // resyncs first): wait for one, bounded.
  const auto deadline = Clock::now() + std::chrono::seconds(15);
  for (;;) {
    auto r = raw(master_port, login(), {"CLUSTER", "SLOTS"});
    if (!r) return r.error();
    const redisReply* a = r->get();
    if (a->type != REDIS_REPLY_ARRAY) return make_error(ErrorCode::kInternal, "CLUSTER SLOTS: " + to_text(a));
    for (size_t i = 0; i < a->elements; ++i) {
      const redisReply* range = a->element[i];
      if (range->elements >= 4 && range->element[2]->element[1]->integer == master_port) {
        const auto port = static_cast<uint16_t>(range->element[3]->element[1]->integer);
        auto info = command(port, {"INFO", "replication"});
        if (info && info->find("master_link_status:up") != std::string::npos) return port;
      }
    }
    if (Clock::now() > deadline)
      return make_error(ErrorCode::kNotFound, "no linked replica of " + std::to_string(master_port) + " within 15 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Result<uint16_t> RedisClusterServer::another_master(uint16_t except_port) const {
  for (uint16_t p : ports_) {
    if (p == except_port || !alive(p)) continue;
    auto role = command(p, {"ROLE"});
    if (role && role->rfind("master", 0) == 0) return p;
  }
  return make_error(ErrorCode::kNotFound, "no other master");
}

Result<std::string> RedisClusterServer::node_id(uint16_t port) const { return command(port, {"CLUSTER", "MYID"}); }

void RedisClusterServer::kill9(uint16_t port) {
  const size_t i = index(port);
  if (i >= pids_.size() || pids_[i] <= 0) return;
  ::kill(pids_[i], SIGKILL);
  int status = 0;
  ::waitpid(pids_[i], &status, 0);
  pids_[i] = -1;
}

Result<void> RedisClusterServer::restart(uint16_t port) {
  const size_t i = index(port);
  if (i >= ports_.size()) return make_error(ErrorCode::kInvalidArgument, "unknown port");
  if (pids_[i] > 0) return {};
  return launch(i);
}

Result<void> RedisClusterServer::await_healthy(std::chrono::milliseconds within) {
  const auto deadline = Clock::now() + within;
  std::string why;
  for (;;) {
    why.clear();
    std::optional<std::vector<uint16_t>> first;
    for (uint16_t p : ports_) {
      if (!alive(p)) continue;
      auto info = command(p, {"CLUSTER", "INFO"});
      if (!info || info->find("cluster_state:ok") == std::string::npos) {
        why = "node " + std::to_string(p) + " not ok";
        break;
      }
      auto m = slot_map(p, login());
      if (!m) {
        why = m.error().message;
        break;
      }
      for (uint16_t owner : *m)
        if (owner == 0 || !alive(owner)) {
          why = "node " + std::to_string(p) + " sees a slot without a live master";
          break;
        }
      if (!why.empty()) break;
      if (!first) {
        first = std::move(*m);
      } else if (*first != *m) {
        why = "nodes disagree on the slot map";
        break;
      }
    }
    if (why.empty()) return {};
    if (Clock::now() > deadline) return make_error(ErrorCode::kInternal, "cluster not healthy: " + why);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Result<void> RedisClusterServer::failover(uint16_t replica_port) {
  auto r = command(replica_port, {"CLUSTER", "FAILOVER"});
  if (!r) return r.error();
  if (*r != "OK") return make_error(ErrorCode::kInternal, "CLUSTER FAILOVER: " + *r);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    auto role = command(replica_port, {"ROLE"});
    if (role && role->rfind("master", 0) == 0) break;
    if (Clock::now() > deadline) return make_error(ErrorCode::kInternal, "replica not promoted within 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return await_healthy(std::chrono::seconds(30));
}

Result<void> RedisClusterServer::begin_migration(uint16_t slot, uint16_t to_port, const std::vector<std::string>& keys) {
  auto from = master_of(slot);
  if (!from) return from.error();
  auto from_id = node_id(*from);
  auto to_id = node_id(to_port);
  if (!from_id || !to_id) return make_error(ErrorCode::kInternal, "CLUSTER MYID failed");
  const std::string s = std::to_string(slot);
  for (auto [port, argv] : {std::pair{to_port, std::vector<std::string>{"CLUSTER", "SETSLOT", s, "IMPORTING", *from_id}},
                            std::pair{*from, std::vector<std::string>{"CLUSTER", "SETSLOT", s, "MIGRATING", *to_id}}}) {
    auto r = command(port, argv);
    if (!r) return r.error();
    if (*r != "OK") return make_error(ErrorCode::kInternal, "SETSLOT: " + *r);
  }
  if (keys.empty()) return {};
  std::vector<std::string> migrate = migrate_command(to_port);
  migrate.insert(migrate.end(), keys.begin(), keys.end());
  auto r = command(*from, migrate);
  if (!r) return r.error();
  if (*r != "OK" && *r != "NOKEY") return make_error(ErrorCode::kInternal, "MIGRATE: " + *r);
  return {};
}

std::vector<std::string> RedisClusterServer::migrate_command(uint16_t to_port) const {
  std::vector<std::string> m = {"MIGRATE", "127.0.0.1", std::to_string(to_port), "", "0", "5000"};
  if (!password_.empty()) m.insert(m.end(), {"AUTH", password_});
  m.push_back("KEYS");
  return m;
}

Result<void> RedisClusterServer::finish_migration(uint16_t slot, uint16_t to_port) {
  auto from = master_of(slot);
  if (!from) return from.error();
  const std::string s = std::to_string(slot);
  for (int round = 0; round < 1000; ++round) {
    auto keys = raw(*from, login(), {"CLUSTER", "GETKEYSINSLOT", s, "100"});
    if (!keys) return keys.error();
    if ((*keys)->type != REDIS_REPLY_ARRAY) return make_error(ErrorCode::kInternal, "GETKEYSINSLOT failed");
    if ((*keys)->elements == 0) break;
    std::vector<std::string> migrate = migrate_command(to_port);
    for (size_t i = 0; i < (*keys)->elements; ++i) migrate.emplace_back(str((*keys)->element[i]));
    auto r = command(*from, migrate);
    if (!r) return r.error();
    if (*r != "OK") return make_error(ErrorCode::kInternal, "MIGRATE: " + *r);
  }
  auto to_id = node_id(to_port);
  if (!to_id) return to_id.error();
  // The new owner first, then the old one, then every other master (as redis-cli does).
  std::vector<uint16_t> order = {to_port, *from};
  for (uint16_t p : ports_) {
    if (p == to_port || p == *from || !alive(p)) continue;
    auto role = command(p, {"ROLE"});
    if (role && role->rfind("master", 0) == 0) order.push_back(p);
  }
  for (uint16_t p : order) {
    auto r = command(p, {"CLUSTER", "SETSLOT", s, "NODE", *to_id});
    if (!r) return r.error();
    if (*r != "OK") return make_error(ErrorCode::kInternal, "SETSLOT NODE: " + *r);
  }
  return await_healthy(std::chrono::seconds(30));
}

Result<void> RedisClusterServer::move_slot(uint16_t slot, uint16_t to_port) {
  auto r = begin_migration(slot, to_port, {});
  if (!r) return r;
  return finish_migration(slot, to_port);
}

}  // namespace tern::store::redis::testing
