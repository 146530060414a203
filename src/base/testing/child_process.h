// Test support: starting a child process (a server, the CLI) from a test process safely.
//
// A test process is multi-threaded (SDK clients, readers of a pty), and the child of fork()
// in a multi-threaded process may make only async-signal-safe calls until it execs: a
// malloc there can wait forever for an allocator lock that another thread held at the fork.
// (AddressSanitizer's allocator in GCC 12 does not release its locks in the child; a ternd
// restarted under a reconnecting client hung before exec and failed a CI run.) So an
// ExecPlan builds everything exec needs - argv, envp, the executable's path - before the
// fork, and the child only duplicates descriptors, closes the rest and execs.
//
// Ownership: an ExecPlan owns its strings and the arrays pointing into them; the descriptors
// given to it stay the caller's (the child gets copies). Thread affinity: build and spawn on
// one thread; exec_in_child() only in the child of fork()/forkpty().
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace tern::test_support {

class ExecPlan {
 public:
  // argv[0]: a path, or a name looked up in $PATH now. `set_env`: "NAME=value" entries that
  // replace or add to this process's environment in the child's.
  explicit ExecPlan(std::vector<std::string> argv, const std::vector<std::string>& set_env = {});
  ExecPlan(const ExecPlan&) = delete;
  ExecPlan& operator=(const ExecPlan&) = delete;

  // The child's stdin / stdout / stderr: a descriptor of this process (copied with dup2), or
  // -1 to inherit this process's. Every other descriptor is closed in the child.
  ExecPlan& stdin_from(int fd) { fds_[0] = fd; return *this; }
  ExecPlan& stdout_to(int fd) { fds_[1] = fd; return *this; }
  ExecPlan& stderr_to(int fd) { fds_[2] = fd; return *this; }
  // The child is SIGKILLed when the thread that spawned it ends (prctl PR_SET_PDEATHSIG):
  // a server of a test that crashed does not outlive it.
  ExecPlan& die_with_parent() { die_with_parent_ = true; return *this; }

  // fork() and exec: the child's pid, or -1 (errno set) if fork failed. A child that cannot
  // exec exits with status 127.
  pid_t spawn() const;
  // In the child of fork()/forkpty(): redirects, closes every descriptor above 2, execs.
  // Async-signal-safe calls only; exits with 127 if exec fails.
  [[noreturn]] void exec_in_child() const noexcept;

 private:
  std::vector<std::string> argv_;
  pid_t parent_;  // the process that built the plan, which forks
  std::string path_;
  std::vector<std::string> env_;
  std::vector<char*> argv_ptrs_, env_ptrs_;
  int fds_[3] = {-1, -1, -1};
  bool die_with_parent_ = false;
};

}  // namespace tern::test_support
