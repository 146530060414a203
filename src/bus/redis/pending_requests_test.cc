// PendingRequests: a request is ended once (by its reply, or its deadline), the ids are never
// reused, and past() names only the requests whose deadline came, with the earliest still
// ahead.
#include "bus/redis/pending_requests.h"

#include <gtest/gtest.h>

namespace tern::bus {
namespace {

using namespace std::chrono_literals;
using Clock = PendingRequests::Clock;

TEST(PendingRequests, ARequestIsTakenOnceAndIdsAreNotReused) {
  PendingRequests requests;
  std::vector<std::string> answers;
  auto reply = [&](Result<std::string> r) { answers.push_back(r ? *r : "error"); };
  const auto t0 = Clock::now();
  const uint64_t a = requests.add("n1", t0 + 1s, reply);
  const uint64_t b = requests.add("n2", t0 + 1s, reply);
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
  EXPECT_EQ(requests.size(), 2u);
  auto taken = requests.take(a);
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->node, "n1");
  taken->reply(std::string("ok"));
  EXPECT_FALSE(requests.take(a).has_value()) << "a late reply finds nothing";
  const uint64_t c = requests.add("n1", t0 + 1s, reply);
  EXPECT_NE(c, a);
  EXPECT_NE(c, b);
  EXPECT_EQ(requests.size(), 2u);
  EXPECT_EQ(answers, std::vector<std::string>{"ok"});
}

TEST(PendingRequests, PastNamesTheRequestsDueAndTheEarliestDeadlineAhead) {
  PendingRequests requests;
  const auto t0 = Clock::now();
  auto none = [](Result<std::string>) {};
  const uint64_t due = requests.add("n1", t0 + 10ms, none);
  requests.add("n2", t0 + 50ms, none);
  requests.add("n3", t0 + 30ms, none);
  auto later = t0 + 1h;
  auto past = requests.past(t0 + 20ms, later);
  ASSERT_EQ(past.size(), 1u);
  EXPECT_EQ(past[0], (std::pair<uint64_t, std::string>{due, "n1"}));
  EXPECT_EQ(later, t0 + 30ms);
  EXPECT_EQ(requests.size(), 3u) << "past() keeps them: the caller takes each";
  auto sooner = t0 + 5ms;  // already earlier than any deadline ahead: left as it is
  EXPECT_EQ(requests.past(t0 + 20ms, sooner).size(), 1u);
  EXPECT_EQ(sooner, t0 + 5ms);
  auto last = t0 + 1h;
  EXPECT_EQ(requests.past(t0 + 60ms, last).size(), 3u);
  EXPECT_EQ(last, t0 + 1h) << "nothing ahead";
}

}  // namespace
}  // namespace tern::bus
