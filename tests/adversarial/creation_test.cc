// Issue 8, item 5: conversation creation was unlimited (≈ 2,800 groups/s per user) and
// GET /v1/conversations unpaged (28,000 entries = 10.9 MB per call). Now: a per-user creation
// rate (--create-rate 1/s, --create-burst 20 → 429 rate_limited), a per-user total
// (--max-conversations-per-user 10000 → 403 limit_exceeded) and a paged list.
#include <gtest/gtest.h>

#include <set>

#include "harm.h"

namespace tern::test {
namespace {

class AdversarialCreation : public ServerTest {};

// Bounds: with the default rate (1/s, burst 20), one user creating groups as fast as it can
// for 3 s gets at most 20 + 1 × elapsed + 1 of them, the rest answered 429 rate_limited; the
// probe's p99 stays within 2 × unloaded + 50 ms meanwhile.
TEST_F(AdversarialCreation, CreationIsRateLimitedPerUser) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args({{"register_rate", "1000000.0"}, {"register_burst", "1000000.0"},
                                                    {"durability", "\"none\""}})));
  Probe probe(api(), port());
  ASSERT_TRUE(probe.ready());
  Account mallory = api().must_register("mallory");
  const HarmStats base = probe.measure(ms(2000));

  std::atomic<int> created{0}, limited{0}, other{0};
  std::string other_body;
  const auto t0 = std::chrono::steady_clock::now();
  HarmStats loaded;
  {
    std::vector<std::unique_ptr<AttackThread>> attackers;
    for (int w = 0; w < 2; ++w)
      attackers.push_back(std::make_unique<AttackThread>([&](const std::atomic<bool>& stop) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
        for (int i = 0; i < 20000 && !stop.load() && std::chrono::steady_clock::now() < until; ++i) {
          auto r = api().create_group(mallory.token, "spam", {"mallory"});
          if (r.status == 201) ++created;
          else if (r.status == 429 && r.error_code() == "rate_limited") ++limited;
          else if (other++ == 0) other_body = std::to_string(r.status) + " " + r.body;
        }
      }));
    loaded = probe.measure(ms(3000));
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LE(created.load(), 20 + static_cast<int>(elapsed) + 1)
      << "groups created by one user in " << elapsed << " s (limited: " << limited.load() << ")";
  EXPECT_GT(limited.load(), 0) << "no 429 rate_limited seen";
  EXPECT_EQ(other.load(), 0) << other_body;
  expect_harm_bounded(base, loaded, "conversation creation flood");
}

// Bound: with --max-conversations-per-user 30, the 31st creation is refused with
// 403 limit_exceeded and nothing is created.
TEST_F(AdversarialCreation, ConversationsPerUserAreCapped) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args(setup_friendly({{"max_conversations_per_user", "30"}}))));
  Account mallory = api().must_register("mallory");
  api().must_register("bob");
  int created = 0;
  HttpResult last;
  for (int i = 0; i < 40; ++i) {
    last = api().create_group(mallory.token, "g", {"mallory"});
    if (last.status == 201) ++created;
    else break;
  }
  EXPECT_EQ(created, 30);
  EXPECT_EQ(last.status, 403) << last.body;
  EXPECT_EQ(last.error_code(), "limit_exceeded") << last.body;
  auto direct = api().create_direct(mallory.token, "bob");
  EXPECT_EQ(direct.status, 403) << "a direct conversation counts too: " << direct.body;
}

// Bound: no answer of GET /v1/conversations holds more than 100 entries by default (1000 with
// ?limit=), and paging with `next` yields every conversation exactly once.
TEST_F(AdversarialCreation, ConversationListIsPaged) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args(setup_friendly())));
  Account alice = api().must_register("alice");
  std::set<std::string> mine;
  for (int i = 0; i < 250; ++i) {
    auto id = api().must_group(alice.token, "g", {"alice"});
    ASSERT_FALSE(id.empty());
    mine.insert(id);
  }
  auto first = api().list_conversations(alice.token);
  ASSERT_EQ(first.status, 200) << first.body.substr(0, 300);
  const auto& convs = first.obj().at("conversations").as_array();
  EXPECT_LE(convs.size(), 100u) << "an unpaged list answer holds " << convs.size() << " entries";
  EXPECT_FALSE(jstr(first.obj(), "next").empty()) << "a partial page must carry `next`";

  std::set<std::string> seen;
  std::string after;
  for (int page = 0; page < 20; ++page) {
    std::string target = "/v1/conversations?limit=70" + (after.empty() ? std::string() : "&after=" + after);
    auto r = http_request(port(), "GET", target, std::nullopt, alice.token);
    ASSERT_EQ(r.status, 200) << r.body.substr(0, 300);
    const auto& items = r.obj().at("conversations").as_array();
    EXPECT_LE(items.size(), 70u);
    for (const auto& it : items) {
      const std::string id = jstr(it.as_object(), "conversation_id");
      EXPECT_TRUE(seen.insert(id).second) << "listed twice: " << id;
    }
    after = jstr(r.obj(), "next");
    if (after.empty()) break;
  }
  EXPECT_EQ(seen, mine);
  auto big = http_request(port(), "GET", "/v1/conversations?limit=5000", std::nullopt, alice.token);
  ASSERT_EQ(big.status, 200);
  EXPECT_EQ(big.obj().at("conversations").as_array().size(), 250u) << "limit is clamped to 1000, not to 100";
  EXPECT_TRUE(jstr(big.obj(), "next").empty());
}

}  // namespace
}  // namespace tern::test
