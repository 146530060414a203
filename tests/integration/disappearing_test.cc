// Integration: disappearing messages against the real ternd (issue 11). The per-conversation
// timer is a sequenced system message that every device sees at the same seq and that caps
// the ttl of later sends; after expiry a message is a tombstone in live delivery, replay and
// backfill (seqs stay dense), and its payload leaves the server's disk within the sweep
// bound.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "support/media_http.h"
#include "support/trio_test.h"

namespace tern::test {
namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

HttpResult set_timer(uint16_t port, const Account& a, const std::string& conv, int64_t seconds) {
  return http_request(port, "PUT", "/v1/conversations/" + conv + "/timer",
                      R"({"seconds":)" + std::to_string(seconds) + "}", a.token);
}

json::object send_ttl(std::string_view conv, std::string_view cmid, std::string_view body, int64_t ttl) {
  return {{"type", "send"}, {"client_msg_id", cmid}, {"conversation_id", conv}, {"body", b64(body)}, {"ttl", ttl}};
}

using TerndDisappearing = TrioTest;

TEST_F(TerndDisappearing, TimerChangeInTheMiddleOfAConversation) {
  ASSERT_NO_FATAL_FAILURE(start());
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  const Seq s1 = da.must_send(direct, "m-1", "before");

  auto t = set_timer(port(), alice, direct, 3600);
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(jint(t.obj(), "seconds"), 3600);
  std::vector<json::object> seen_by_alice;  // frames alice's device got while sending
  const Seq s3 = da.must_send(direct, "m-2", "during", &seen_by_alice);
  auto off = set_timer(port(), bob, direct, 0);  // either member of a direct chat may
  ASSERT_EQ(off.status, 200) << off.body;
  const Seq s5 = da.must_send(direct, "m-3", "after", &seen_by_alice);
  ASSERT_EQ(s3, s1 + 2);
  ASSERT_EQ(s5, s1 + 4);

  // Every device sees the timer at the same seqs, the acting device included.
  for (Device* d : {&da, &db}) {
    auto frames = d == &db ? d->collect_messages(direct, s5) : only_type(seen_by_alice, "message", direct);
    std::map<Seq, json::object> by_seq;
    for (auto& f : frames) by_seq[seq_of(f)] = f;
    // The acting device: wire-v1 orders a conversation's messages, not a send's `sent` among
    // them, so the `sent` of s5 may come before bob's change (s1 + 3) is delivered (a session
    // catching up reads it from the store first). Read on until it came (in order: s1 + 1
    // came before it).
    if (d == &da && !by_seq.count(s1 + 3))
      for (auto& f : da.collect_messages(direct, s1 + 3)) by_seq[seq_of(f)] = f;
    ASSERT_TRUE(by_seq.count(s1 + 1)) << dump_frames(frames);
    const auto& sys = by_seq[s1 + 1].at("system").as_object();
    EXPECT_EQ(jstr(sys, "action"), "timer");
    EXPECT_EQ(jstr(sys, "by"), "alice");
    EXPECT_EQ(jint(sys, "seconds"), 3600);
    ASSERT_TRUE(by_seq.count(s1 + 3));
    EXPECT_EQ(jint(by_seq[s1 + 3].at("system").as_object(), "seconds"), 0);
  }
  // The log: only the message sent while the timer was on carries expires_at = ts + 1 h.
  auto log = api().backfill_all(alice.token, direct);
  ASSERT_EQ(log.size(), 5u);
  EXPECT_FALSE(log[0].contains("expires_at"));
  EXPECT_EQ(jint(log[2], "expires_at"), jint(log[2], "ts") + 3600 * 1000);
  EXPECT_FALSE(log[4].contains("expires_at"));
  // The timer caps a longer ttl a client asks for, not a shorter one.
  ASSERT_EQ(set_timer(port(), alice, direct, 60).status, 200);
  ASSERT_TRUE(da.send_json(send_ttl(direct, "m-4", "x", 7200)));
  ASSERT_EQ(type_of(*da.wait_answer("m-4")), "sent");
  ASSERT_TRUE(da.send_json(send_ttl(direct, "m-5", "x", 30)));
  ASSERT_EQ(type_of(*da.wait_answer("m-5")), "sent");
  log = api().backfill_all(alice.token, direct, s5 + 1);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(jint(log[0], "expires_at") - jint(log[0], "ts"), 60 * 1000);
  EXPECT_EQ(jint(log[1], "expires_at") - jint(log[1], "ts"), 30 * 1000);
  // Setting the same value again sequences nothing.
  const Seq head = api().head(alice.token, direct);
  ASSERT_EQ(set_timer(port(), alice, direct, 60).status, 200);
  EXPECT_EQ(api().head(alice.token, direct), head);
}

TEST_F(TerndDisappearing, WhoMaySetTheTimer) {
  ASSERT_NO_FATAL_FAILURE(start());
  const std::string group = api().must_group(alice.token, "g", {"bob"});
  EXPECT_EQ(set_timer(port(), bob, group, 60).status, 403);    // a member, not an admin
  EXPECT_EQ(set_timer(port(), carol, group, 60).status, 403);  // not a member
  EXPECT_EQ(set_timer(port(), carol, direct, 60).status, 403);
  EXPECT_EQ(set_timer(port(), alice, "g-000000000000000000000000", 60).status, 403);  // unknown: same answer
  EXPECT_EQ(set_timer(port(), alice, group, -1).status, 400);
  EXPECT_EQ(set_timer(port(), alice, group, 365LL * 24 * 3600 + 1).status, 400);
  EXPECT_EQ(http_request(port(), "PUT", "/v1/conversations/" + group + "/timer", "{}", alice.token).status, 400);
  EXPECT_EQ(http_request(port(), "PUT", "/v1/conversations/" + group + "/timer", R"({"seconds":60})", "").status, 401);
  EXPECT_EQ(set_timer(port(), alice, group, 60).status, 200);
}

TEST_F(TerndDisappearing, ExpiredMessagesAreGoneFromLiveReplayBackfillAndDisk) {
  ASSERT_NO_FATAL_FAILURE(start({"--sweep-interval-ms", "200"}));
  const std::string canary = "DISAPPEAR-canary-q8Rz2LmW";
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  const Seq before = da.must_send(direct, "k-0", "kept before");
  ASSERT_TRUE(da.send_json(send_ttl(direct, "x-1", canary, 2)));
  auto sent = da.wait_answer("x-1");
  ASSERT_TRUE(sent);
  ASSERT_EQ(type_of(*sent), "sent") << dump(*sent);
  const Seq gone = seq_of(*sent);
  const int64_t expires_at = jint(*sent, "ts") + 2000;
  const Seq after = da.must_send(direct, "k-1", "kept after");

  // Before expiry the payload is delivered (replay) and is on disk (the WAL at least; on
  // --store redis, Redis's AOF).
  auto replay = db.connect_synced(port());
  ASSERT_TRUE(replay);
  auto msgs = only_type(*replay, "message", direct);
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(unb64(jstr(msgs[1], "body")), canary);
  db.close();
  const std::string stored = b64(canary);
  EXPECT_FALSE(files_containing(server_->disk_dirs(), stored).empty());

  // After expiry: replay, backfill and a live connection see a tombstone in its place.
  ASSERT_TRUE(eventually([&] { return now_ms() > expires_at + 50; }, ms(10000)));
  Device db2(bob);
  auto replay2 = db2.connect_synced(port());
  ASSERT_TRUE(replay2);
  auto again = only_type(*replay2, "message", direct);
  EXPECT_TRUE(dense_range(message_seqs(again, direct), before, after));
  for (const auto& m : again) {
    if (seq_of(m) != gone) continue;
    EXPECT_TRUE(jbool(m, "expired")) << dump(m);
    EXPECT_EQ(jstr(m, "body"), "");
  }
  auto log = api().backfill_all(bob.token, direct);
  ASSERT_EQ(log.size(), 3u);
  EXPECT_TRUE(jbool(log[1], "expired"));
  EXPECT_EQ(jstr(log[1], "body"), "");
  EXPECT_EQ(unb64(jstr(log[2], "body")), "kept after");
  for (const auto& m : log) EXPECT_EQ(dump(m).find(stored), std::string::npos);

  // And the disk: within the sweep bound no file under the data directory holds it (on
  // --store redis: after the AOF rewrite the erase asks for, docs/scaling.md).
  std::vector<std::string> holders;
  EXPECT_TRUE(eventually(
      [&] {
        holders = files_containing(server_->disk_dirs(), stored);
        return holders.empty();
      },
      ms(15000)))
      << (holders.empty() ? "" : holders.front());
  // Nor the logs.
  const std::string root = std::filesystem::path(server_->data_dir()).parent_path().string();
  EXPECT_TRUE(files_containing(root, canary).empty());
  // The message kept its seq; the others kept their payload.
  auto after_log = api().backfill_all(alice.token, direct);
  ASSERT_EQ(after_log.size(), 3u);
  EXPECT_EQ(unb64(jstr(after_log[0], "body")), "kept before");
  EXPECT_TRUE(jbool(after_log[1], "expired"));
  // Survives a restart: the payload does not come back from anywhere.
  ASSERT_NO_FATAL_FAILURE(restart_server(true));
  auto reopened = api().backfill_all(bob.token, direct);
  ASSERT_EQ(reopened.size(), 3u);
  EXPECT_TRUE(jbool(reopened[1], "expired"));
  EXPECT_TRUE(files_containing(server_->disk_dirs(), stored).empty());
}

TEST_F(TerndDisappearing, LiveDeliveryAfterExpiryIsATombstone) {
  ASSERT_NO_FATAL_FAILURE(start());
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(da.send_json(send_ttl(direct, "t-1", "short-lived", 1)));
  auto sent = da.wait_answer("t-1");
  ASSERT_TRUE(sent);
  ASSERT_EQ(type_of(*sent), "sent");
  const int64_t expires_at = jint(*sent, "ts") + 1000;
  ASSERT_TRUE(eventually([&] { return now_ms() > expires_at + 50; }, ms(10000)));
  // Bob comes online after it expired: what reaches him is the tombstone.
  auto frames = db.connect_synced(port());
  ASSERT_TRUE(frames);
  auto msgs = only_type(*frames, "message", direct);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_TRUE(jbool(msgs[0], "expired"));
  EXPECT_EQ(jstr(msgs[0], "body"), "");
}

}  // namespace
}  // namespace tern::test
