// Test support: a real redis-server child process on 127.0.0.1 with its data (AOF,
// `appendfsync always`) in a temp directory, on a free port; stop, SIGKILL and restart on
// the same port and directory. redis-server comes from Debian (scripts/setup.sh); if it is
// missing, start() fails (tests fail, never skip). Not thread-safe: one test thread drives it.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/testing/loopback_port.h"
#include "store/redis/redis_connection.h"

namespace tern::store::redis::testing {

class TestCerts;

// The loopback port helpers (base/testing/loopback_port.h), by the names these tests use.
using tern::test_support::free_loopback_port;
using tern::test_support::port_free;

class RedisServer {
 public:
  // Makes the temp directory; start() launches. `extra_args` go after the default ones on
  // redis-server's command line (e.g. {"--replicaof", "127.0.0.1", "<port>"}).
  RedisServer();
  explicit RedisServer(std::vector<std::string> extra_args);
  // A server that lets nobody in without `login`: requirepass (no user), or the ACL user
  // alone (the default user off). The helper's own checks log in with it.
  RedisServer(std::vector<std::string> extra_args, RedisCredentials login);
  ~RedisServer();  // stops the server and removes the directory
  // Before start(): the server speaks TLS only, on its port (`--port 0 --tls-port`), with
  // `certs`'s server certificate, and asks clients for a certificate signed by its CA. The
  // helper's own checks connect with `login`'s TLS (give it one: RedisCredentials::tls).
  void serve_tls(const TestCerts& certs);
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Starts and waits (at most 10 s) until it answers PING, and checks that the server that
  // answers is this child (INFO's process_id). The first start picks a free port below the
  // ephemeral range, again if another test's server took it meanwhile (tests run in
  // parallel); later starts reuse it.
  Result<void> start();
  void stop();   // SIGTERM (Redis flushes and exits), reap
  void kill9();  // SIGKILL, reap: what was acknowledged is in the AOF (appendfsync always)
  // SIGSTOP / SIGCONT: a server that still accepts connections (the kernel does) but answers
  // nothing, as a hung node; its peers keep it listed until their own timeouts.
  void freeze();
  void thaw();
  bool running() const { return pid_ > 0; }
  uint16_t port() const { return port_; }
  std::string url() const { return (tls_args_.empty() ? "redis://127.0.0.1:" : "rediss://127.0.0.1:") + std::to_string(port_); }
  const std::string& dir() const { return dir_; }

 private:
  Result<void> launch();  // on port_

  std::vector<std::string> extra_args_;
  std::vector<std::string> tls_args_;  // serve_tls()
  RedisCredentials login_;
  std::string dir_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
};

}  // namespace tern::store::redis::testing
