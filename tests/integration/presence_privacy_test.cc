// Integration (issue 12): who sees whose presence and last seen. By default only accepted
// contacts (a direct conversation the subject created or sent in); `everyone` widens it to
// every user sharing a conversation, `nobody` closes it, a user who hides theirs sees nobody's,
// and last seen is kept to the minute. Rules: src/services/presence_privacy.h.
//
// Absence is checked by order, not by waiting: subscriptions on one connection are answered
// in order, so once the answer to a later subscription (to a visible user) has arrived, an
// answer to the earlier one would have come before it.
#include <gtest/gtest.h>

#include "support/server_test.h"

namespace tern::test {
namespace {

class PresencePrivacy : public ServerTest {
 protected:
  bool presence_of(const json::object& f, std::string_view user) {
    return type_of(f) == "presence" && jstr(f, "user") == user;
  }
  // Users who show their presence to everyone and share a group with `members`: ordering
  // points (a subscription is answered once, so each check uses a fresh marker).
  void make_markers(const std::vector<std::string>& members) {
    for (int i = 0; i < 16; ++i) {
      Account m = api().must_register("marker" + std::to_string(i));
      ASSERT_EQ(api().set_presence_visibility(m.token, "everyone").status, 200);
      api().must_group(m.token, "m", members);
    }
  }
  std::string next_marker() { return "marker" + std::to_string(marker_++); }
  int marker_ = 0;

  // Subscribes `d` to `hidden`, then to a fresh marker (visible), and reports whether a
  // presence frame of `hidden` came before the marker's. An answer made on the presence
  // loader's thread (the subject's policy was not cached) is handed to the connection's loop
  // as a task, so an answer made on that loop right after it can overtake it: a second
  // marker, subscribed once the first arrived, comes after any such task.
  ::testing::AssertionResult sees(Device& d, const std::string& hidden) {
    const std::string marker = next_marker();
    if (!d.presence_subscribe({hidden}) || !d.presence_subscribe({marker}))
      return ::testing::AssertionFailure() << "subscribe failed";
    std::vector<json::object> seen;
    auto m = d.read_until([&](const json::object& f) { return presence_of(f, marker); }, kDefaultTimeout, &seen);
    if (!m) return ::testing::AssertionFailure() << "no presence of the marker " << marker << ": " << dump_frames(seen);
    const std::string second = next_marker();
    if (!d.presence_subscribe({second})) return ::testing::AssertionFailure() << "subscribe failed";
    auto m2 = d.read_until([&](const json::object& f) { return presence_of(f, second); }, kDefaultTimeout, &seen);
    if (!m2) return ::testing::AssertionFailure() << "no presence of the marker " << second << ": " << dump_frames(seen);
    for (const auto& f : seen)
      if (presence_of(f, hidden)) return ::testing::AssertionSuccess() << dump(f);
    return ::testing::AssertionFailure() << d.account.user << " got no presence of " << hidden;
  }
};

TEST_F(PresencePrivacy, ContactsByDefaultAMessageRequestIsAcceptedWhenAnswered) {
  ASSERT_NO_FATAL_FAILURE(start_server());
  Account alice = api().must_register("alice");
  Account bob = api().must_register("bob");
  ASSERT_NO_FATAL_FAILURE(make_markers({"alice", "bob"}));
  auto get = http_request(port(), "GET", "/v1/privacy", std::nullopt, alice.token);
  ASSERT_EQ(get.status, 200);
  EXPECT_EQ(jstr(get.obj(), "presence"), "contacts");

  // alice writes to bob: she accepted, bob did not (yet).
  const std::string conv = api().must_direct(alice.token, "bob");
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  ASSERT_GT(da.must_send(conv, "a-1", "hi bob"), 0u);
  EXPECT_TRUE(sees(db, "alice")) << "bob should see alice: she wrote to him";
  EXPECT_FALSE(sees(da, "bob")) << "a stranger alice wrote to must not be followed";
  // bob answers: now alice may see him.
  ASSERT_GT(db.must_send(conv, "b-1", "hi alice"), 0u);
  EXPECT_TRUE(sees(da, "bob"));
  // And the subscription carries his going offline, with last seen to the minute.
  db.close();
  auto off = da.read_until([&](const json::object& f) { return presence_of(f, "bob") && !jbool(f, "online", true); });
  ASSERT_TRUE(off);
  EXPECT_GT(jint(*off, "last_seen"), 0) << dump(*off);
  EXPECT_EQ(jint(*off, "last_seen") % 60000, 0) << dump(*off);
  // Acceptance is durable (a clean restart: last seen itself is best effort, not fsynced
  // before it is told).
  da.close();
  ASSERT_NO_FATAL_FAILURE(restart_server(/*graceful=*/true));
  Device da2(alice);
  ASSERT_TRUE(da2.connect_synced(port()));
  auto after = [&] {
    EXPECT_TRUE(da2.presence_subscribe({"bob"}));
    return da2.read_until([&](const json::object& f) { return presence_of(f, "bob"); });
  }();
  ASSERT_TRUE(after) << "alice lost bob's acceptance across a restart";
  EXPECT_EQ(jint(*after, "last_seen"), jint(*off, "last_seen"));
}

TEST_F(PresencePrivacy, EveryoneSharesWithGroupMembersNobodyWithNoOne) {
  ASSERT_NO_FATAL_FAILURE(start_server());
  Account carol = api().must_register("carol");
  Account dave = api().must_register("dave");
  api().must_group(carol.token, "g", {"dave"});
  ASSERT_NO_FATAL_FAILURE(make_markers({"carol", "dave"}));
  Device dc(carol), dd(dave);
  ASSERT_TRUE(dc.connect_synced(port()));
  ASSERT_TRUE(dd.connect_synced(port()));
  // contacts: a group is not an accepted direct conversation.
  EXPECT_FALSE(sees(dc, "dave"));
  // everyone: any shared conversation.
  auto put = api().set_presence_visibility(dave.token, "everyone");
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(jstr(put.obj(), "presence"), "everyone");
  EXPECT_TRUE(sees(dc, "dave"));
  // nobody: carol's live subscription ends (dave's going offline is not told), new ones see nothing.
  ASSERT_EQ(api().set_presence_visibility(dave.token, "nobody").status, 200);
  dd.close();
  const std::string point = next_marker();  // an ordering point after dave left
  ASSERT_TRUE(dc.presence_subscribe({point}));
  std::vector<json::object> seen;
  ASSERT_TRUE(dc.read_until([&](const json::object& f) { return presence_of(f, point); }, kDefaultTimeout, &seen));
  for (const auto& f : seen) EXPECT_FALSE(presence_of(f, "dave") && !jbool(f, "online", true)) << dump(f);
  EXPECT_FALSE(sees(dc, "dave"));
  // Bad values are refused.
  EXPECT_EQ(api().set_presence_visibility(dave.token, "friends").status, 400);
  EXPECT_EQ(http_request(port(), "PUT", "/v1/privacy", std::string("[]"), dave.token).status, 400);
  EXPECT_EQ(http_request(port(), "GET", "/v1/privacy", std::nullopt, "").status, 401);
}

TEST_F(PresencePrivacy, WhoHidesTheirsSeesNobodys) {
  ASSERT_NO_FATAL_FAILURE(start_server());
  Account erin = api().must_register("erin");
  Account frank = api().must_register("frank");
  ASSERT_NO_FATAL_FAILURE(make_markers({"erin"}));
  api().must_direct(frank.token, "erin");  // frank accepted: erin may see him
  Device de(erin);
  ASSERT_TRUE(de.connect_synced(port()));
  EXPECT_TRUE(sees(de, "frank"));
  ASSERT_EQ(api().set_presence_visibility(erin.token, "nobody").status, 200);
  Device de2(erin);
  ASSERT_TRUE(de2.connect_synced(port()));
  // The markers show theirs to everyone, but erin hides hers: she sees no one. Her own
  // presence is the ordering point (always visible to herself).
  ASSERT_TRUE(de2.presence_subscribe({"frank", next_marker()}));
  ASSERT_TRUE(de2.presence_subscribe({"erin"}));
  std::vector<json::object> seen;
  ASSERT_TRUE(de2.read_until([&](const json::object& f) { return presence_of(f, "erin"); }, kDefaultTimeout, &seen));
  for (const auto& f : seen) EXPECT_NE(type_of(f), "presence") << dump(f);
}

TEST_F(PresencePrivacy, BlockedUserSeesNoPresenceOfTheBlocker) {
  ASSERT_NO_FATAL_FAILURE(start_server());
  Account gina = api().must_register("gina");
  Account hank = api().must_register("hank");
  ASSERT_NO_FATAL_FAILURE(make_markers({"hank"}));
  api().must_direct(gina.token, "hank");
  Device dh(hank);
  ASSERT_TRUE(dh.connect_synced(port()));
  EXPECT_TRUE(sees(dh, "gina"));
  ASSERT_EQ(http_request(port(), "PUT", "/v1/blocks/hank", std::nullopt, gina.token).status, 204);
  // The live subscription ended: gina coming online is not told.
  Device dg(gina);
  ASSERT_TRUE(dg.connect_synced(port()));
  const std::string point = next_marker();
  ASSERT_TRUE(dh.presence_subscribe({point}));
  std::vector<json::object> seen;
  ASSERT_TRUE(dh.read_until([&](const json::object& f) { return presence_of(f, point); }, kDefaultTimeout, &seen));
  for (const auto& f : seen) EXPECT_FALSE(presence_of(f, "gina")) << dump(f);
  Device dh2(hank);
  ASSERT_TRUE(dh2.connect_synced(port()));
  EXPECT_FALSE(sees(dh2, "gina"));
}

}  // namespace
}  // namespace tern::test
