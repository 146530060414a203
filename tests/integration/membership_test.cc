// Integration: groups, admin-only membership changes, system messages with their own seq
// reaching every member device (the acting one included), and membership rule 6: an added
// member sees from its join seq on; a removed member gets its removal and nothing after.
#include <gtest/gtest.h>

#include "support/server_test.h"

namespace tern::test {
namespace {

std::set<std::string> members_of(const HttpResult& r) {
  std::set<std::string> out;
  if (const auto* v = r.obj().if_contains("members"); v && v->is_array())
    for (const auto& e : v->as_array())
      if (e.is_string()) out.insert(std::string(e.as_string()));
  return out;
}

bool is_system(const json::object& m) {
  const auto* s = m.if_contains("system");
  return s && s->is_object();
}

class TerndMembership : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_server({"--send-rate", "100000", "--send-burst", "100000"}));
    alice = api().must_register("alice");
    bob = api().must_register("bob");
    carol = api().must_register("carol");
    dave = api().must_register("dave");
    group = api().must_group(alice.token, "team", {"bob", "carol"});
    ASSERT_FALSE(group.empty());
  }
  Account alice, bob, carol, dave;
  std::string group;
};

TEST_F(TerndMembership, AdminAddsMemberAndEveryDeviceGetsTheSystemMessage) {
  Account alice2 = api().must_link(alice);
  Device da(alice), da2(alice2), db(bob), dc(carol), dd(dave);
  for (Device* d : {&da, &da2, &db, &dc, &dd}) ASSERT_TRUE(d->connect_synced(port())) << d->account.key();
  const Seq h0 = api().head(alice.token, group);

  auto r = api().add_members(alice.token, group, {"dave"});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(members_of(r), (std::set<std::string>{"alice", "bob", "carol", "dave"})) << r.body;
  const Seq s = api().head(alice.token, group);
  EXPECT_EQ(s, h0 + 1) << "the membership change takes exactly one seq";

  // The acting device (alice:1, whose token made the request) included. (Earlier seqs
  // arriving first are tolerated here; replay completeness is tested elsewhere.)
  for (Device* d : {&da, &da2, &db, &dc, &dd}) {
    std::vector<json::object> seen;
    auto m = d->read_until([&](const json::object& f) { return type_of(f) == "message" && seq_of(f) >= s; },
                           kDefaultTimeout, &seen);
    ASSERT_TRUE(m) << d->account.key() << " got no system message:\n" << dump_frames(seen);
    EXPECT_EQ(jstr(*m, "conversation_id"), group);
    EXPECT_EQ(seq_of(*m), s) << d->account.key() << ": " << dump(*m);
    EXPECT_TRUE(is_system(*m)) << d->account.key() << ": " << dump(*m);
  }
  // The new member can send at once and everyone else receives it.
  Seq s2 = dd.must_send(group, "hi-dave", "hello team");
  EXPECT_EQ(s2, s + 1);
  for (Device* d : {&da, &da2, &db, &dc}) {
    auto m = d->read_until([&](const json::object& f) { return type_of(f) == "message" && seq_of(f) >= s2; });
    ASSERT_TRUE(m) << d->account.key();
    EXPECT_EQ(seq_of(*m), s2);
    EXPECT_EQ(jstr(*m, "sender"), "dave");
  }
}

TEST_F(TerndMembership, OnlyTheAdminChangesMembers) {
  auto add = api().add_members(bob.token, group, {"dave"});
  EXPECT_EQ(add.status, 403) << add.body;
  EXPECT_EQ(add.error_code(), "forbidden") << add.body;
  auto rm = api().remove_members(bob.token, group, {"carol"});
  EXPECT_EQ(rm.status, 403) << rm.body;
  EXPECT_EQ(rm.error_code(), "forbidden") << rm.body;
  // A non-member is refused too.
  auto outsider = api().add_members(dave.token, group, {"dave"});
  EXPECT_EQ(outsider.status, 403) << outsider.body;
  EXPECT_EQ(outsider.error_code(), "forbidden") << outsider.body;
  // Nothing changed: no system message was written.
  const Seq h = api().head(alice.token, group);
  auto ok = api().add_members(alice.token, group, {"dave"});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(api().head(alice.token, group), h + 1);

  // An unknown conversation answers like one the caller is not in (issue 8).
  auto unknown_conv = api().add_members(alice.token, "no-such-conversation", {"dave"});
  EXPECT_EQ(unknown_conv.status, 403) << unknown_conv.body;
  EXPECT_EQ(unknown_conv.error_code(), "forbidden") << unknown_conv.body;
  auto unknown_user = api().add_members(alice.token, group, {"nobody"});
  EXPECT_EQ(unknown_user.status, 404) << unknown_user.body;
  EXPECT_EQ(unknown_user.error_code(), "not_found") << unknown_user.body;
}

TEST_F(TerndMembership, AddedMemberSeesFromItsJoinSeqOn) {
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  for (int i = 1; i <= 3; ++i) da.must_send(group, "before-" + std::to_string(i), "before dave");
  auto r = api().add_members(alice.token, group, {"dave"});
  ASSERT_EQ(r.status, 200) << r.body;
  const Seq join = api().head(alice.token, group);
  const Seq after = da.must_send(group, "after-1", "after dave");
  ASSERT_EQ(after, join + 1);

  // Replay starts at the join message.
  Device dd(dave);
  auto replay = dd.connect_synced(port());
  ASSERT_TRUE(replay);
  auto msgs = only_type(*replay, "message", group);
  EXPECT_TRUE(dense_range(message_seqs(*replay, group), join, after)) << dump_frames(*replay);
  if (!msgs.empty()) {
    EXPECT_TRUE(is_system(msgs.front())) << dump(msgs.front());
  }

  // Backfill from 0 starts at the join seq too.
  auto page = api().messages(dave.token, group, 0, 100);
  ASSERT_EQ(page.status, 200) << page.body;
  std::vector<Seq> seqs;
  for (const auto& m : page.obj().at("messages").as_array()) seqs.push_back(seq_of(m.as_object()));
  EXPECT_TRUE(dense_range(seqs, join, after)) << page.body;
  auto first = api().messages(dave.token, group, 0, 1);
  ASSERT_EQ(first.status, 200);
  ASSERT_EQ(first.obj().at("messages").as_array().size(), 1u) << first.body;
  EXPECT_EQ(seq_of(first.obj().at("messages").as_array()[0].as_object()), join) << first.body;
  // Asking explicitly for earlier seqs still gives nothing before the join.
  auto early = api().messages(dave.token, group, 1, 2);
  ASSERT_EQ(early.status, 200);
  for (const auto& m : early.obj().at("messages").as_array())
    EXPECT_GE(seq_of(m.as_object()), join) << early.body;
  // The listing shows the group to dave.
  auto list = api().list_conversations(dave.token);
  EXPECT_NE(list.body.find(group), std::string::npos) << list.body;
}

TEST_F(TerndMembership, RemovedMemberGetsItsRemovalAndNothingAfter) {
  Device da(alice), db(bob), dc(carol);
  for (Device* d : {&da, &db, &dc}) ASSERT_TRUE(d->connect_synced(port()));
  const Seq before = da.must_send(group, "pre", "carol still here");
  for (Device* d : {&db, &dc}) ASSERT_FALSE(d->collect_messages(group, before).empty());

  auto r = api().remove_members(alice.token, group, {"carol"});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(members_of(r), (std::set<std::string>{"alice", "bob"})) << r.body;
  const Seq removal = api().head(alice.token, group);
  EXPECT_EQ(removal, before + 1);

  // Everyone, carol and the acting device included, gets the removal message.
  for (Device* d : {&da, &db, &dc}) {
    std::vector<json::object> seen;
    auto m = d->read_until("message", kDefaultTimeout, &seen);
    ASSERT_TRUE(m) << d->account.key() << ":\n" << dump_frames(seen);
    EXPECT_EQ(seq_of(*m), removal) << dump(*m);
    EXPECT_TRUE(is_system(*m)) << dump(*m);
  }
  const Seq later = da.must_send(group, "post", "carol is gone");
  auto bm = db.read_until("message");
  ASSERT_TRUE(bm);
  EXPECT_EQ(seq_of(*bm), later);
  for (const auto& f : dc.drain(ms(700)))
    EXPECT_FALSE(type_of(f) == "message" && jstr(f, "conversation_id") == group)
        << "removed member received " << dump(f);

  // From now on carol is refused like any non-member.
  auto bf = api().messages(carol.token, group, 0, 100);
  EXPECT_EQ(bf.status, 403) << bf.body;
  EXPECT_EQ(bf.error_code(), "forbidden") << bf.body;
  auto e = dc.send_wait(group, "carol-tries", "let me in");
  ASSERT_TRUE(e) << "no answer to a non-member send";
  EXPECT_EQ(type_of(*e), "error") << dump(*e);
  EXPECT_EQ(jstr(*e, "code"), "forbidden") << dump(*e);
  EXPECT_EQ(jstr(*e, "ref"), "carol-tries");
  EXPECT_EQ(api().head(alice.token, group), later) << "the refused send must not be stored";

  // Her replay on reconnect ends at the removal.
  dc.close();
  auto replay = dc.connect_synced(port());
  ASSERT_TRUE(replay);
  for (Seq s : message_seqs(*replay, group)) EXPECT_LE(s, removal) << dump_frames(*replay);
  // And the listing no longer offers her anything new to read.
  EXPECT_EQ(api().add_members(carol.token, group, {"carol"}).status, 403);
}

TEST_F(TerndMembership, ReAddedMemberSeesFromTheNewJoinOnly) {
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_EQ(api().remove_members(alice.token, group, {"carol"}).status, 200);
  const Seq removal = api().head(alice.token, group);
  const Seq gap = da.must_send(group, "while-away", "carol must never see this");
  ASSERT_EQ(api().add_members(alice.token, group, {"carol"}).status, 200);
  const Seq rejoin = api().head(alice.token, group);
  ASSERT_EQ(rejoin, gap + 1);
  Device dc(carol);
  auto replay = dc.connect_synced(port());
  ASSERT_TRUE(replay);
  for (const auto& m : only_type(*replay, "message", group)) {
    EXPECT_NE(seq_of(m), gap) << "message sent while carol was out reached her: " << dump(m);
    EXPECT_TRUE(seq_of(m) <= removal || seq_of(m) >= rejoin) << dump(m);
  }
  auto page = api().messages(carol.token, group, 0, 100);
  ASSERT_EQ(page.status, 200) << page.body;
  for (const auto& m : page.obj().at("messages").as_array())
    EXPECT_NE(seq_of(m.as_object()), gap) << page.body;
}

TEST_F(TerndMembership, LastAdminLeavingHandsTheGroupToTheLongestStandingMember) {
  ASSERT_EQ(api().remove_members(alice.token, group, {"alice"}).status, 200);
  // alice is gone; bob and carol joined together at seq 1, so one of them is admin now and
  // the group can still change. (Only an admin may add members.)
  auto by_bob = api().add_members(bob.token, group, {"dave"});
  auto by_carol = api().add_members(carol.token, group, {"dave"});
  EXPECT_TRUE(by_bob.status == 200 || by_carol.status == 200) << by_bob.body << " / " << by_carol.body;
  EXPECT_FALSE(by_bob.status == 200 && by_carol.status == 200 &&
               members_of(by_bob) != members_of(by_carol));
  EXPECT_EQ(api().add_members(alice.token, group, {"dave"}).status, 403) << "a removed admin is not an admin";
}

}  // namespace
}  // namespace tern::test
