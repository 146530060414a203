// ExecPlan: what the child gets (argv found through $PATH, the environment with overrides,
// its redirections, no other descriptor of the parent) and how it fails (exit 127).
#include "base/testing/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

namespace tern::test_support {
namespace {

struct Ran {
  int status = -1;
  std::string out;
};

// Runs the plan with stdout on a pipe; reads until EOF (at most 20 s) and reaps the child.
Ran run(ExecPlan& plan) {
  int p[2];
  EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
  plan.stdout_to(p[1]);
  const pid_t pid = plan.spawn();
  ::close(p[1]);
  Ran r;
  EXPECT_GT(pid, 0);
  if (pid <= 0) {
    ::close(p[0]);
    return r;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd f{p[0], POLLIN, 0};
    if (::poll(&f, 1, 100) <= 0) continue;
    char buf[1024];
    const ssize_t n = ::read(p[0], buf, sizeof buf);
    if (n <= 0) break;
    r.out.append(buf, static_cast<size_t>(n));
  }
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(ExecPlan, TheChildGetsItsArgvEnvironmentAndRedirectionsOnly) {
  ::setenv("TERN_EXEC_PLAN_KEPT", "kept", 1);
  ::setenv("TERN_EXEC_PLAN_REPLACED", "old", 1);
  // A descriptor of the parent without O_CLOEXEC: the child must not have it.
  const int leaked = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaked, 3);
  // "sh" has no slash: found through $PATH before the fork.
  ExecPlan plan({"sh", "-c",
                 "echo \"$0|$TERN_EXEC_PLAN_KEPT|$TERN_EXEC_PLAN_REPLACED|$TERN_EXEC_PLAN_ADDED\"; "
                 "if [ -e /proc/self/fd/" + std::to_string(leaked) + " ]; then echo leaked; fi",
                 "name"},
                {"TERN_EXEC_PLAN_REPLACED=new", "TERN_EXEC_PLAN_ADDED=added"});
  const Ran r = run(plan);
  ::close(leaked);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "name|kept|new|added\n");
}

TEST(ExecPlan, AProgramThatCannotBeExecutedExitsWith127) {
  ExecPlan missing({"tern-no-such-program-anywhere"});
  EXPECT_EQ(run(missing).status, 127);
  ExecPlan not_executable({"/dev/null"});
  EXPECT_EQ(run(not_executable).status, 127);
}

}  // namespace
}  // namespace tern::test_support
