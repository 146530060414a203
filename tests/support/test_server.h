// TestServer: runs the real `ternd` binary as a child process on a loopback port with a
// temporary data directory, for integration tests. Owns the child process and the temp
// directory (removed on destruction unless keep_data()). The child's stdout/stderr go to
// files in the temp directory so a failing test can show the server log.
// Thread affinity: one owning thread (the test body); port()/url() may be read from any
// thread while the server runs.
#pragma once
#include <sys/types.h>

#include <csignal>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace tern::test {

// Path of the ternd binary: $TERN_BIN_DIR/ternd; "" if TERN_BIN_DIR is not set.
std::string ternd_path();
// Whether this process runs its servers on the Redis test backend (support/redis_backend.cc:
// $TERN_TEST_REDIS_URL is set).
bool on_redis_backend();

class TestServer {
 public:
  // `args` are extra ternd flags (e.g. {"--max-page", "5"}); --listen and --data are added,
  // and `--store redis --redis $TERN_TEST_REDIS_URL` when that variable is set and `args`
  // name no --store of their own (a second deployment on another Redis), then the flags of
  // $TERN_TEST_TERND_ARGS (space-separated; set by hand to run a suite in another mode).
  explicit TestServer(std::vector<std::string> args = {});
  ~TestServer();
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  // Starts ternd on 127.0.0.1:0 and waits (bounded) for its "listening 127.0.0.1:PORT" line.
  // Returns false (see error()) if the binary is missing, exits early or never prints it.
  bool start(std::chrono::milliseconds deadline = std::chrono::seconds(30));
  // Starts again on the same data dir, preferring the previous port; falls back to port 0
  // when the old port cannot be bound. The previous process must be stopped.
  bool restart(std::chrono::milliseconds deadline = std::chrono::seconds(30));

  // Sends `sig` (default SIGKILL) and reaps the child (bounded). Returns the raw wait status
  // interpretation: exit code, or 128+signal; -1 if it could not be reaped.
  int kill(int sig = SIGKILL);
  // SIGTERM, then waits up to `deadline` for exit; returns the exit code (0 = clean drain),
  // 128+signal when killed by a signal, or -1 on timeout (the child is then SIGKILLed).
  int terminate(std::chrono::milliseconds deadline = std::chrono::seconds(20));
  // True while the child has not exited (non-blocking check; reaps it if it has).
  bool running();

  uint16_t port() const { return port_; }
  std::string host() const { return "127.0.0.1"; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& data_dir() const { return data_dir_; }
  // Every directory where this server's data lands on disk: data_dir(), and on
  // `--store redis` from the test backend (support/redis_backend.cc) the Redis data directory
  // ($TERN_TEST_REDIS_DIR, its AOF): what a "nothing of it is on disk" check must search.
  std::vector<std::string> disk_dirs() const;
  pid_t pid() const { return pid_; }
  const std::string& error() const { return error_; }
  void keep_data(bool keep) { keep_ = keep; }
  // "NAME=value" entries added to the server's environment from the next start() on (e.g. a
  // preloaded libfaketime: a node whose clock is off).
  void set_env(std::vector<std::string> env) { env_ = std::move(env); }
  // Tail of the server's stdout+stderr logs (for failure messages).
  std::string log_tail(size_t max_bytes = 4000) const;
  // Waits up to `deadline` for `text` in the server's logs (a line a thread other than the
  // one the test observes writes), `times` times; true once it is there.
  bool await_log(const std::string& text, std::chrono::milliseconds deadline = std::chrono::seconds(5),
                 size_t times = 1) const;
  // How many times `text` is in the server's logs now.
  size_t log_count(const std::string& text) const;

 private:
  bool launch(uint16_t port, std::chrono::milliseconds deadline);
  int reap(std::chrono::milliseconds deadline);

  std::vector<std::string> args_;
  std::vector<std::string> env_;
  std::string root_;      // temp root: data/, stdout.log, stderr.log
  std::string data_dir_;
  std::string error_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  int last_status_ = -1;
  bool keep_ = false;
};

}  // namespace tern::test
