// Test support for the channel tests on several nodes (integration_test_redis,
// integration_test_redis_cluster): many joins of one channel at once through several ternd.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "support/server_test.h"

namespace tern::test {

// Every port shows `owner`'s channel with `count` subscribers within 5 s (a node's copy of the
// record is refreshed by a change's announcement).
inline void expect_count_shown(const std::vector<uint16_t>& ports, const std::string& channel, const Account& owner,
                               int64_t count) {
  for (size_t p = 0; p < ports.size(); ++p) {
    int64_t shown = -1;
    for (int i = 0; i < 100 && shown != count; ++i) {
      if (i) std::this_thread::sleep_for(ms(50));
      auto r = http_request(ports[p], "GET", "/v1/conversations/" + channel, std::nullopt, owner.token);
      ASSERT_EQ(r.status, 200) << r.body;
      shown = jint(r.obj(), "subscribers");
    }
    EXPECT_EQ(shown, count) << "through port " << p;
  }
}

// Every user of `users` joins `owner`'s public channel `channel` (its owner its only
// subscriber) at once, user i through ports[i % ports.size()]. Expects the answers to be the
// counts 2 to users.size() + 1, each once (no two joins counted from the same copy, none
// left uncounted), and every port to show the last count within 5 s.
inline void expect_joins_at_once_each_counted(const std::vector<uint16_t>& ports, const std::vector<Account>& users,
                                              const std::string& channel, const Account& owner) {
  ASSERT_FALSE(ports.empty());
  std::vector<int64_t> answers(users.size(), -1);
  std::latch start(static_cast<std::ptrdiff_t>(users.size()));
  std::vector<std::thread> joiners;
  for (size_t i = 0; i < users.size(); ++i)
    joiners.emplace_back([&, i] {
      start.arrive_and_wait();  // all at once
      auto r = http_request(ports[i % ports.size()], "POST", "/v1/conversations/" + channel + "/join", "{}",
                            users[i].token);
      if (r.status == 200) answers[i] = jint(r.obj(), "subscribers");
      else ADD_FAILURE() << "join " << i << ": " << r.status << " " << r.body;
    });
  for (auto& th : joiners) th.join();
  std::sort(answers.begin(), answers.end());
  std::vector<int64_t> want;
  const auto last = static_cast<int64_t>(users.size()) + 1;
  for (int64_t n = 2; n <= last; ++n) want.push_back(n);
  EXPECT_EQ(answers, want) << "two joins counted from the same copy, or a join not counted";
  expect_count_shown(ports, channel, owner, last);
}

}  // namespace tern::test
