// Issue 8, items 1 and 12: presence_subscribe must not cost in proportion to the subscriber's
// conversations (it froze the node: 28,000 self-only groups × 256 users per frame), and a
// subscription must not outlive the last conversation the two users share.
#include <gtest/gtest.h>

#include "harm.h"

namespace tern::test {
namespace {

class AdversarialPresence : public ServerTest {};

// Bound: probe p99 (send→deliver and /healthz) ≤ 2 × unloaded + 50 ms while four connections
// of a user with 3,000 self-only groups send presence_subscribe frames of 256 users as fast as
// the frame limit lets them for 5 s.
TEST_F(AdversarialPresence, SubscribeCostDoesNotGrowWithSubscriberConversations) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args(setup_friendly({{"max_conversations_per_user", "100000"}}))));
  Probe probe(api(), port());
  ASSERT_TRUE(probe.ready());
  Account mallory = api().must_register("mallory");

  // Thousands of groups holding only the attacker (bounded in count and time).
  constexpr int kGroups = 3000;
  std::atomic<int> created{0};
  {
    std::vector<std::thread> workers;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(8);
    for (int w = 0; w < 4; ++w)
      workers.emplace_back([&] {
        while (created.load() < kGroups && std::chrono::steady_clock::now() < until) {
          auto r = api().create_group(mallory.token, "solo", {"mallory"});
          if (r.status != 201) return;
          ++created;
        }
      });
    for (auto& t : workers) t.join();
  }
  ASSERT_GE(created.load(), 1000) << "setup: the attacker could not create its groups";

  std::vector<std::string> targets;
  for (int i = 0; i < 256; ++i) targets.push_back("nobody-" + std::to_string(i));
  std::vector<std::unique_ptr<Device>> conns;
  conns.push_back(std::make_unique<Device>(mallory));
  for (int i = 0; i < 3; ++i) conns.push_back(std::make_unique<Device>(api().must_link(mallory)));
  for (auto& c : conns) ASSERT_TRUE(c->connect_synced(port()));

  const HarmStats base = probe.measure(ms(2000));
  HarmStats loaded;
  {
    std::vector<std::unique_ptr<AttackThread>> attackers;
    for (auto& c : conns) {
      Device* d = c.get();
      attackers.push_back(std::make_unique<AttackThread>([d, &targets](const std::atomic<bool>& stop) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(8);
        for (int i = 0; i < 6000 && !stop.load() && std::chrono::steady_clock::now() < until; ++i) {
          d->presence_subscribe(targets);
          while (d->read_frame(ms(0))) {
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(1));  // ≈ the 1000/s frame limit
        }
      }));
    }
    loaded = probe.measure(ms(5000));
  }
  expect_harm_bounded(base, loaded, "presence_subscribe from a user with " + std::to_string(created.load()) + " groups");
}

bool presence_of(const json::object& f, std::string_view user) {
  return type_of(f) == "presence" && jstr(f, "user") == user;
}

// Privacy bound: after carol is removed from the only group she shares with bob, she learns
// nothing more about bob's presence (no frame when he comes online or goes offline, no answer
// to a new subscription). Eve, removed from the same group but still sharing another one with
// bob, keeps hers; dave, still a member, sees the events (so they did happen).
TEST_F(AdversarialPresence, SubscriptionEndsWhenTheLastSharedConversationEnds) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args(setup_friendly())));
  Account alice = api().must_register("alice");
  Account bob = api().must_register("bob");
  Account carol = api().must_register("carol");
  Account dave = api().must_register("dave");
  Account eve = api().must_register("eve");
  const std::string group = api().must_group(alice.token, "g", {"bob", "carol", "dave", "eve"});
  const std::string other = api().must_group(bob.token, "other", {"eve"});
  ASSERT_FALSE(group.empty());
  ASSERT_FALSE(other.empty());
  // Issue 12: bob shows his presence to everyone he shares a conversation with (the rule
  // this test is about), not only to accepted direct contacts.
  ASSERT_EQ(api().set_presence_visibility(bob.token, "everyone").status, 200);

  Device dc(carol), dd(dave), de(eve);
  for (Device* d : {&dc, &dd, &de}) {
    ASSERT_TRUE(d->connect_synced(port()));
    ASSERT_TRUE(d->presence_subscribe({"bob"}));
    auto p = d->read_until([](const json::object& f) { return presence_of(f, "bob"); });
    ASSERT_TRUE(p) << d->account.key() << " got no presence for bob before the removal";
  }
  auto rm = api().remove_members(alice.token, group, {"carol", "eve"});
  ASSERT_EQ(rm.status, 200) << rm.body;
  for (Device* d : {&dc, &dd, &de}) d->drain(ms(300));

  Device db(bob);
  ASSERT_TRUE(db.connect_synced(port()));
  auto seen_dave = dd.read_until([](const json::object& f) { return presence_of(f, "bob") && jbool(f, "online"); });
  ASSERT_TRUE(seen_dave) << "dave (still a member) saw bob come online";
  auto seen_eve = de.read_until([](const json::object& f) { return presence_of(f, "bob") && jbool(f, "online"); });
  EXPECT_TRUE(seen_eve) << "eve still shares 'other' with bob and keeps her subscription";
  db.close();
  ASSERT_TRUE(dd.read_until([](const json::object& f) { return presence_of(f, "bob") && !jbool(f, "online", true); }));

  ASSERT_TRUE(dc.presence_subscribe({"bob"}));
  for (const auto& f : dc.drain(ms(800)))
    EXPECT_FALSE(presence_of(f, "bob")) << "carol, no longer sharing a conversation with bob, learned " << dump(f);
}

// Per-user cap: a user's connections together hold at most max_presence_subscriptions_per_user.
TEST_F(AdversarialPresence, SubscriptionsAreCappedPerUser) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args(setup_friendly({{"max_presence_subscriptions_per_user", "3"}}))));
  Account alice = api().must_register("alice");
  std::vector<std::string> friends;
  for (int i = 0; i < 4; ++i) friends.push_back("f" + std::to_string(i));
  for (const auto& f : friends)  // issue 12: visible to everyone sharing a conversation
    ASSERT_EQ(api().set_presence_visibility(api().must_register(f).token, "everyone").status, 200);
  ASSERT_FALSE(api().must_group(alice.token, "all", friends).empty());
  Device d1(alice), d2(api().must_link(alice));
  ASSERT_TRUE(d1.connect_synced(port()));
  ASSERT_TRUE(d2.connect_synced(port()));
  ASSERT_TRUE(d1.presence_subscribe({"f0", "f1"}));
  EXPECT_EQ(only_type(d1.drain(ms(500)), "presence").size(), 2u);
  ASSERT_TRUE(d2.presence_subscribe({"f2", "f3"}));
  auto e = d2.read_until("error", ms(3000));
  ASSERT_TRUE(e) << "a fourth subscription of the same user must be refused";
  EXPECT_EQ(jstr(*e, "code"), "limit_exceeded") << dump(*e);
}

}  // namespace
}  // namespace tern::test
