#include "base/thread_name.h"

#include <pthread.h>

#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace tern {
namespace {

std::string name_in_thread(const std::string& name) {
  std::string seen;
  std::thread t([&] {
    set_thread_name(name);
    char buf[32] = {};
    if (pthread_getname_np(pthread_self(), buf, sizeof buf) == 0) seen = buf;
  });
  t.join();
  return seen;
}

TEST(ThreadName, NamesTheCallingThread) { EXPECT_EQ(name_in_thread("tern-commit"), "tern-commit"); }

TEST(ThreadName, ANameOverFifteenBytesIsCutNotRefused) {
  EXPECT_EQ(name_in_thread("tern-a-very-long-role-name"), "tern-a-very-lon");
}

}  // namespace
}  // namespace tern
