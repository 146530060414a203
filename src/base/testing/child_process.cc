#include "base/testing/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

extern char** environ;

namespace tern::test_support {
namespace {

// argv[0] as execvp would find it, resolved before the fork (execvp may allocate).
std::string resolve(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = dirs.find(':', start);
    std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return name;  // exec fails in the child: exit 127, as execvp would
}

}  // namespace

ExecPlan::ExecPlan(std::vector<std::string> argv, const std::vector<std::string>& set_env)
    : argv_(std::move(argv)), parent_(::getpid()) {
  path_ = argv_.empty() ? std::string() : resolve(argv_[0]);
  for (char** e = environ; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    const size_t name_len = eq ? static_cast<size_t>(eq - *e) : std::strlen(*e);
    bool replaced = false;
    for (const auto& s : set_env)
      replaced = replaced || (s.size() > name_len && s[name_len] == '=' && s.compare(0, name_len, *e, name_len) == 0);
    if (!replaced) env_.emplace_back(*e);
  }
  env_.insert(env_.end(), set_env.begin(), set_env.end());
  for (auto& a : argv_) argv_ptrs_.push_back(a.data());
  argv_ptrs_.push_back(nullptr);
  for (auto& e : env_) env_ptrs_.push_back(e.data());
  env_ptrs_.push_back(nullptr);
}

pid_t ExecPlan::spawn() const {
  const pid_t pid = ::fork();
  if (pid == 0) exec_in_child();
  return pid;
}

void ExecPlan::exec_in_child() const noexcept {
  if (die_with_parent_) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent_) ::_exit(127);  // the parent died before prctl
  }
  for (int target = 0; target < 3; ++target)
    if (fds_[target] >= 0 && fds_[target] != target) ::dup2(fds_[target], target);
  // dup2 clears O_CLOEXEC on the copy; a redirection to the same number keeps the original.
  for (int target = 0; target < 3; ++target)
    if (fds_[target] == target) {
      const int flags = ::fcntl(target, F_GETFD);
      if (flags >= 0) ::fcntl(target, F_SETFD, flags & ~FD_CLOEXEC);
    }
  // Nothing of the test process (its clients' sockets, a pty, pipes) lives on in the child.
  ::syscall(SYS_close_range, 3U, ~0U, 0U);
  if (!path_.empty()) ::execve(path_.c_str(), argv_ptrs_.data(), env_ptrs_.data());
  ::_exit(127);
}

}  // namespace tern::test_support
