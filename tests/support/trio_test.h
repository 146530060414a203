// TrioTest: a ServerTest with three registered users (alice, bob, carol) and alice's direct
// conversation with bob, the cast of the media and disappearing-messages tests.
// Thread affinity: the test thread.
#pragma once
#include <string>
#include <vector>

#include "support/server_test.h"

namespace tern::test {

class TrioTest : public ServerTest {
 protected:
  // Use as ASSERT_NO_FATAL_FAILURE(start({...ternd flags})).
  void start(std::vector<std::string> args = {}) {
    ASSERT_NO_FATAL_FAILURE(start_server(std::move(args)));
    alice = api().must_register("alice");
    bob = api().must_register("bob");
    carol = api().must_register("carol");
    direct = api().must_direct(alice.token, "bob");
    ASSERT_FALSE(direct.empty());
  }
  Account alice, bob, carol;
  std::string direct;
};

}  // namespace tern::test
