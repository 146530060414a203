// Test support: a real `ternd` child process on 127.0.0.1, started on port 0 (or a given
// port, to restart on the same address), SIGKILLed and restarted on the same data
// directory. Finds the binary through $TERN_BIN_DIR (set by ctest), else build/bin.
// Not part of the SDK. Not thread-safe: one test thread drives it.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace tern::client::testing {

// Path of a binary built by the project ($TERN_BIN_DIR, then build/bin), or empty.
std::string find_binary(const std::string& name);
// find_binary("ternd").
std::string find_ternd();
// A fresh directory under the system temp dir (removed by the caller if wanted).
std::string make_temp_dir(const std::string& prefix);

class TerndProcess {
 public:
  // `extra_args`: more ternd flags (e.g. --tls-cert FILE --tls-key FILE).
  TerndProcess(std::string binary, std::string data_dir, std::vector<std::string> extra_args = {});
  ~TerndProcess();
  TerndProcess(const TerndProcess&) = delete;
  TerndProcess& operator=(const TerndProcess&) = delete;

  // Starts and waits (at most 20 s) for "listening 127.0.0.1:PORT". port 0 picks one the
  // first time, free and below the kernel's ephemeral range so that no other process gets it
  // by connecting while this ternd is down; later starts reuse the port found then.
  Result<void> start(uint16_t port = 0);
  // For the next start(): ternd's --log-level (default "warn").
  void set_log_level(std::string level) { log_level_ = std::move(level); }
  // Where the child's output goes: data_dir + ".stdout" / ".stderr".
  std::string stdout_path() const { return data_dir_ + ".stdout"; }
  std::string stderr_path() const { return data_dir_ + ".stderr"; }
  // The last ~1,500 characters of that stderr (every run's, appended), for a test's failure.
  std::string stderr_tail() const;
  void kill9();  // SIGKILL and reap
  void stop();   // SIGTERM, then SIGKILL after 5 s
  bool running() const { return pid_ > 0; }
  uint16_t port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& data_dir() const { return data_dir_; }

 private:
  std::string binary_;
  std::string data_dir_;
  std::vector<std::string> extra_args_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string log_level_ = "warn";
};

}  // namespace tern::client::testing
