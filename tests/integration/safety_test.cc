// Integration (issue 12): blocking, abuse reports and the per-user invite limit, against the
// real ternd. The rules are in src/services/blocks.h and docs/protocol.md ("Safety").
#include <gtest/gtest.h>

#include "support/server_test.h"

namespace tern::test {
namespace {

class Safety : public ServerTest {};

bool typing_of(const json::object& f, std::string_view user) {
  return type_of(f) == "typing" && jstr(f, "user") == user;
}

TEST_F(Safety, BlockedUsersDirectSendsAreWithheldWithoutTellingThem) {
  ASSERT_NO_FATAL_FAILURE(start_server());
  Account alice = api().must_register("alice");
  Account bob = api().must_register("bob");
  Account bob2 = api().must_link(bob);
  const std::string conv = api().must_direct(alice.token, "bob");
  const std::string group = api().must_group(alice.token, "g", {"bob"});
  Device da(alice), db(bob), db2(bob2);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  ASSERT_TRUE(db2.connect_synced(port()));
  ASSERT_EQ(db.must_send(conv, "b-1", "hello"), 1u);
  ASSERT_EQ(da.collect_messages(conv, 1).size(), 1u);
  ASSERT_TRUE(da.ack(conv, 1));

  // Block: 204, listed; unknown users and oneself are refused.
  EXPECT_EQ(http_request(port(), "PUT", "/v1/blocks/bob", std::nullopt, alice.token).status, 204);
  EXPECT_EQ(http_request(port(), "PUT", "/v1/blocks/nobody", std::nullopt, alice.token).status, 404);
  EXPECT_EQ(http_request(port(), "PUT", "/v1/blocks/alice", std::nullopt, alice.token).status, 400);
  EXPECT_EQ(http_request(port(), "PUT", "/v1/blocks/bob", std::nullopt, "").status, 401);
  auto listed = http_request(port(), "GET", "/v1/blocks", std::nullopt, alice.token);
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(dump(listed.obj().at("blocked")), R"(["bob"])");

  // bob's send is answered as usual (seq 2) and reaches his other device intact...
  auto sent = db.send_wait(conv, "b-2", "are you there");
  ASSERT_TRUE(sent);
  ASSERT_EQ(type_of(*sent), "sent") << dump(*sent);
  EXPECT_EQ(seq_of(*sent), 2u);
  auto copy = db2.collect_messages(conv, 2);
  ASSERT_FALSE(copy.empty());
  EXPECT_EQ(unb64(jstr(copy.back(), "body")), "are you there");
  EXPECT_FALSE(copy.back().contains("withheld_from")) << dump(copy.back());
  EXPECT_FALSE(copy.back().contains("withheld")) << dump(copy.back());
  // ...while alice gets nothing live. A group message sent after it does reach her (groups
  // are unaffected), and since frames to one device keep their order, the withheld message
  // would have come before it.
  ASSERT_GT(db.must_send(group, "g-1", "in the group"), 0u);
  auto until_group = da.read_until([&](const json::object& f) { return type_of(f) == "message" && jstr(f, "conversation_id") == group; });
  ASSERT_TRUE(until_group);
  // Typing in the direct conversation is not relayed either way; in the group it is.
  ASSERT_TRUE(db.typing(conv, true));
  ASSERT_TRUE(da.typing(conv, true));
  ASSERT_TRUE(db.typing(group, true));
  auto group_typing = da.read_until([&](const json::object& f) { return typing_of(f, "bob"); });
  ASSERT_TRUE(group_typing);
  EXPECT_EQ(jstr(*group_typing, "conversation_id"), group) << "typing from a blocked user in the direct conversation";
  // (a frame read by the read_until calls above is checked here too)
  for (const auto& f : da.drain(ms(300)))
    EXPECT_FALSE(jstr(f, "conversation_id") == conv) << "alice got " << dump(f);
  for (const auto& f : db.drain(ms(300)))
    EXPECT_FALSE(typing_of(f, "alice") && jstr(f, "conversation_id") == conv) << "bob got " << dump(f);

  // Backfill: alice sees a tombstone at seq 2 (dense seqs), bob the message itself.
  auto mine = api().backfill_all(alice.token, conv);
  ASSERT_EQ(mine.size(), 2u);
  EXPECT_EQ(seq_of(mine[1]), 2u);
  EXPECT_TRUE(jbool(mine[1], "withheld")) << dump(mine[1]);
  EXPECT_EQ(jstr(mine[1], "body"), "");
  auto theirs = api().backfill_all(bob.token, conv);
  ASSERT_EQ(theirs.size(), 2u);
  EXPECT_EQ(unb64(jstr(theirs[1], "body")), "are you there");
  EXPECT_FALSE(theirs[1].contains("withheld_from")) << dump(theirs[1]);

  // The blocker cannot send there until it unblocks (only it is told).
  auto refused = da.send_wait(conv, "a-1", "hi");
  ASSERT_TRUE(refused);
  EXPECT_EQ(jstr(*refused, "code"), "forbidden") << dump(*refused);

  // No receipt for the withheld message ever reaches bob while blocked.
  for (const auto& f : db.drain(ms(300))) EXPECT_NE(type_of(f), "receipt") << dump(f);

  // A reconnect of alice replays nothing of it (no inbox mark).
  da.close();
  Device da2(alice);
  auto replay = da2.connect_synced(port());
  ASSERT_TRUE(replay);
  for (const auto& f : *replay) EXPECT_FALSE(jstr(f, "conversation_id") == conv && type_of(f) == "message") << dump(f);

  // Unblock: messages flow again.
  EXPECT_EQ(http_request(port(), "DELETE", "/v1/blocks/bob", std::nullopt, alice.token).status, 204);
  EXPECT_EQ(dump(http_request(port(), "GET", "/v1/blocks", std::nullopt, alice.token).obj().at("blocked")), "[]");
  ASSERT_EQ(db.must_send(conv, "b-3", "hello again"), 3u);
  auto got = da2.collect_messages(conv, 3);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(unb64(jstr(got.back(), "body")), "hello again");
  EXPECT_EQ(da2.must_send(conv, "a-2", "hi"), 4u);
}

TEST_F(Safety, BlocksSurviveARestart) {
  ASSERT_NO_FATAL_FAILURE(start_server());
  Account alice = api().must_register("alice");
  Account bob = api().must_register("bob");
  const std::string conv = api().must_direct(bob.token, "alice");
  ASSERT_EQ(http_request(port(), "PUT", "/v1/blocks/bob", std::nullopt, alice.token).status, 204);
  ASSERT_NO_FATAL_FAILURE(restart_server());
  EXPECT_EQ(dump(http_request(port(), "GET", "/v1/blocks", std::nullopt, alice.token).obj().at("blocked")), R"(["bob"])");
  Device db(bob);
  ASSERT_TRUE(db.connect_synced(port()));
  ASSERT_EQ(db.must_send(conv, "b-1", "x"), 1u);
  auto mine = api().backfill_all(alice.token, conv);
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_TRUE(jbool(mine[0], "withheld")) << dump(mine[0]);
}

TEST_F(Safety, ReportIsStoredWithItsOpaqueAttachmentAndBounded) {
  ASSERT_NO_FATAL_FAILURE(start_server({"--max-report-bytes", "1024", "--report-burst", "2", "--report-rate", "0.001"}));
  Account alice = api().must_register("alice");
  Account bob = api().must_register("bob");
  Account carol = api().must_register("carol");
  const std::string conv = api().must_direct(bob.token, "alice");
  const std::string attachment = b64(std::string(600, '\x7f'));
  auto body = [&](std::string c, std::string reason, std::optional<std::string> att) {
    json::object o{{"conversation_id", c}, {"reason", reason}};
    if (att) o["attachment"] = *att;
    return json::serialize(o);
  };
  // Refusals: not a member (same answer as an unknown id), bad base64, too large, malformed.
  auto stranger = http_request(port(), "POST", "/v1/reports", body(conv, "spam", std::nullopt), carol.token);
  auto unknown = http_request(port(), "POST", "/v1/reports",
                              body("d-0123456789abcdef0123456789abcdef", "spam", std::nullopt), carol.token);
  EXPECT_EQ(stranger.status, unknown.status);
  EXPECT_EQ(stranger.body, unknown.body);
  EXPECT_EQ(http_request(port(), "POST", "/v1/reports", body(conv, "spam", "***"), alice.token).status, 400);
  auto big = http_request(port(), "POST", "/v1/reports", body(conv, "spam", b64(std::string(1025, 'x'))), alice.token);
  EXPECT_EQ(big.status, 413) << big.body;
  EXPECT_EQ(http_request(port(), "POST", "/v1/reports", body(conv, "", std::nullopt), alice.token).status, 400);
  EXPECT_EQ(http_request(port(), "POST", "/v1/reports", "{", alice.token).status, 400);
  EXPECT_EQ(http_request(port(), "POST", "/v1/reports", body(conv, "spam", std::nullopt), "").status, 401);

  auto ok = http_request(port(), "POST", "/v1/reports", body(conv, "spam", attachment), alice.token);
  ASSERT_EQ(ok.status, 201) << ok.body;
  const int64_t id = jint(ok.obj(), "report_id");
  EXPECT_GE(id, 1);
  auto second = http_request(port(), "POST", "/v1/reports", body(conv, "again", std::nullopt), alice.token);
  ASSERT_EQ(second.status, 201) << second.body;
  EXPECT_EQ(jint(second.obj(), "report_id"), id + 1);
  // Rate: the burst of 2 is spent.
  auto third = http_request(port(), "POST", "/v1/reports", body(conv, "more", std::nullopt), alice.token);
  EXPECT_EQ(third.status, 429) << third.body;
  // The log names the report, never its reason or attachment.
  const std::string log = logs(100000);  // every node's: the report may have gone to either
  EXPECT_NE(log.find("event=report_filed id=" + std::to_string(id)), std::string::npos) << log;
  EXPECT_EQ(log.find("spam"), std::string::npos);
  EXPECT_EQ(log.find(attachment.substr(0, 40)), std::string::npos);
}

TEST_F(Safety, GroupInvitesAreLimitedPerUser) {
  ASSERT_NO_FATAL_FAILURE(start_server({"--invite-rate", "0.001", "--invite-burst", "3"}));
  Account alice = api().must_register("alice");
  for (const char* u : {"u1", "u2", "u3", "u4"}) api().must_register(u);
  const std::string group = api().must_group(alice.token, "g", {});
  ASSERT_FALSE(group.empty());
  EXPECT_EQ(api().add_members(alice.token, group, {"u1", "u2"}).status, 200);
  EXPECT_EQ(api().add_members(alice.token, group, {"u3"}).status, 200);
  auto limited = api().add_members(alice.token, group, {"u4"});
  EXPECT_EQ(limited.status, 429) << limited.body;
  EXPECT_EQ(limited.error_code(), "rate_limited");
  // A new group's members are invites too.
  EXPECT_EQ(api().create_group(alice.token, "g2", {"u4"}).status, 429);
  // Removing members is not an invite.
  EXPECT_EQ(api().remove_members(alice.token, group, {"u1"}).status, 200);
}

}  // namespace
}  // namespace tern::test
