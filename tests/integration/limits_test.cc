// Integration: each configurable limit of ternd, one test each: frame size, body size,
// members per group, devices per user, backfill page size, per-device send rate, and the
// bounded per-connection send queue (a consumer that cannot keep up is closed with 1008 and
// replays everything on reconnect).
#include <gtest/gtest.h>

#include <thread>

#include "support/server_test.h"

namespace tern::test {
namespace {

// Sends as fast as a test needs: the send limit and the frame limit (which charges big
// frames per KiB) lifted; the tests of those limits set them themselves.
const std::vector<std::string> kFastSend = {"--send-rate", "100000", "--send-burst", "100000",
                                            "--frame-rate", "1000000", "--frame-burst", "1000000"};

std::vector<std::string> with_fast_send(std::vector<std::string> args) {
  args.insert(args.end(), kFastSend.begin(), kFastSend.end());
  return args;
}

class TerndLimits : public ServerTest {
 protected:
  void start(std::vector<std::string> args) {
    ASSERT_NO_FATAL_FAILURE(start_server(std::move(args)));
    alice = api().must_register("alice");
    bob = api().must_register("bob");
    conv = api().must_direct(alice.token, "bob");
    ASSERT_FALSE(conv.empty());
  }
  Account alice, bob;
  std::string conv;
};

TEST_F(TerndLimits, OversizeFrameAffectsOnlyItsConnection) {
  ASSERT_NO_FATAL_FAILURE(start(with_fast_send({"--max-frame-bytes", "4096"})));
  Account alice2 = api().must_link(alice);
  Device victim(alice), other(alice2), db(bob);
  for (Device* d : {&victim, &other, &db}) ASSERT_TRUE(d->connect_synced(port()));

  // Just under the limit is fine.
  json::object small{{"type", "send"}, {"client_msg_id", "small"}, {"conversation_id", conv},
                     {"body", b64(std::string(2000, 'a'))}};
  ASSERT_TRUE(victim.send_json(small));
  auto ok = victim.wait_answer("small");
  ASSERT_TRUE(ok && type_of(*ok) == "sent") << (ok ? dump(*ok) : "none");
  const Seq head = seq_of(*ok);

  // Over it: an error frame (too_large) or the connection closed; nothing stored.
  json::object big{{"type", "send"}, {"client_msg_id", "big"}, {"conversation_id", conv},
                   {"body", b64("x")}, {"pad", std::string(8000, 'p')}};
  victim.send_json(big);
  std::vector<json::object> seen;
  auto answer = victim.read_until(
      [](const json::object& f) { return type_of(f) == "error" || type_of(f) == "sent"; }, ms(5000), &seen);
  if (answer) {
    EXPECT_EQ(type_of(*answer), "error") << dump(*answer);
    EXPECT_EQ(jstr(*answer, "code"), "too_large") << dump(*answer);
  } else {
    EXPECT_TRUE(victim.closed()) << "oversize frame got neither an error nor a close:\n" << dump_frames(seen);
  }
  EXPECT_EQ(api().head(alice.token, conv), head);

  // The other connections are untouched and still carry messages both ways.
  EXPECT_TRUE(other.is_open());
  EXPECT_TRUE(db.is_open());
  const Seq s = db.must_send(conv, "after-big", "still works");
  EXPECT_EQ(s, head + 1);
  for (Device* d : {&other}) {
    auto m = d->read_until([&](const json::object& f) { return type_of(f) == "message" && seq_of(f) == s; });
    EXPECT_TRUE(m) << d->account.key();
  }
  Device fresh(alice);
  EXPECT_TRUE(fresh.connect_synced(port()));
  EXPECT_EQ(api().healthz().status, 200);
}

TEST_F(TerndLimits, BodySizeLimitGivesTooLarge) {
  ASSERT_NO_FATAL_FAILURE(start(with_fast_send({"--max-body-bytes", "1024"})));
  Account bob2 = api().must_link(bob);
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  const Seq h0 = api().head(alice.token, conv);

  auto over = da.send_wait(conv, "over", std::string(1025, 'o'));
  ASSERT_TRUE(over);
  EXPECT_EQ(type_of(*over), "error") << dump(*over);
  EXPECT_EQ(jstr(*over, "code"), "too_large") << dump(*over);
  EXPECT_EQ(jstr(*over, "ref"), "over");

  auto at = da.send_wait(conv, "at-limit", std::string(1024, 'k'));
  ASSERT_TRUE(at);
  EXPECT_EQ(type_of(*at), "sent") << dump(*at);

  // Each entry of `bodies` is held to the same limit.
  ASSERT_TRUE(da.send_bodies(conv, "bodies-over", {{"bob:1", std::string(10, 'a')}, {"bob:2", std::string(1025, 'b')}}));
  auto bo = da.wait_answer("bodies-over");
  ASSERT_TRUE(bo);
  EXPECT_EQ(type_of(*bo), "error") << dump(*bo);
  EXPECT_EQ(jstr(*bo, "code"), "too_large") << dump(*bo);
  EXPECT_EQ(api().head(alice.token, conv), h0 + 1) << "refused sends must not be stored";
  EXPECT_TRUE(da.is_open());
}

TEST_F(TerndLimits, MembersPerGroup) {
  ASSERT_NO_FATAL_FAILURE(start({"--max-members", "3"}));
  api().must_register("carol");
  api().must_register("dave");
  auto too_many = api().create_group(alice.token, "big", {"bob", "carol", "dave"});
  EXPECT_EQ(too_many.status, 403) << too_many.body;
  EXPECT_EQ(too_many.error_code(), "limit_exceeded") << too_many.body;

  std::string g = api().must_group(alice.token, "fits", {"bob", "carol"});
  ASSERT_FALSE(g.empty());
  const Seq h = api().head(alice.token, g);
  auto add = api().add_members(alice.token, g, {"dave"});
  EXPECT_EQ(add.status, 403) << add.body;
  EXPECT_EQ(add.error_code(), "limit_exceeded") << add.body;
  EXPECT_EQ(api().head(alice.token, g), h) << "a refused change writes no system message";
  // Making room allows the add.
  ASSERT_EQ(api().remove_members(alice.token, g, {"carol"}).status, 200);
  EXPECT_EQ(api().add_members(alice.token, g, {"dave"}).status, 200);
}

TEST_F(TerndLimits, DevicesPerUser) {
  ASSERT_NO_FATAL_FAILURE(start({"--max-devices", "2"}));
  Account a2 = api().must_link(alice);
  EXPECT_EQ(a2.device, 2u);
  auto third = api().link_device(alice.token);
  EXPECT_EQ(third.status, 403) << third.body;
  EXPECT_EQ(third.error_code(), "limit_exceeded") << third.body;
  // Other users are unaffected.
  EXPECT_EQ(api().link_device(bob.token).status, 201);
}

TEST_F(TerndLimits, BackfillPageIsCapped) {
  ASSERT_NO_FATAL_FAILURE(start(with_fast_send({"--max-page", "5"})));
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  const Seq h0 = api().head(alice.token, conv);
  for (int i = 1; i <= 12; ++i) da.must_send(conv, "pg-" + std::to_string(i), "m");
  const Seq head = h0 + 12;

  auto big = api().messages(alice.token, conv, 0, 100);
  ASSERT_EQ(big.status, 200) << big.body;
  EXPECT_EQ(big.obj().at("messages").as_array().size(), 5u) << big.body;
  EXPECT_EQ(static_cast<Seq>(jint(big.obj(), "head")), head);
  auto none = api().messages(alice.token, conv);
  ASSERT_EQ(none.status, 200) << none.body;
  EXPECT_LE(none.obj().at("messages").as_array().size(), 5u) << none.body;
  auto three = api().messages(alice.token, conv, 0, 3);
  ASSERT_EQ(three.status, 200);
  EXPECT_EQ(three.obj().at("messages").as_array().size(), 3u);
  // Paging still reaches everything.
  Seq h = 0;
  auto all = api().backfill_all(alice.token, conv, 0, &h, 100);
  std::vector<Seq> seqs;
  for (const auto& m : all) seqs.push_back(seq_of(m));
  EXPECT_TRUE(dense_range(seqs, 1, head));
}

TEST_F(TerndLimits, EveryFrameTypeIsRateLimitedPerConnection) {
  ASSERT_NO_FATAL_FAILURE(start({"--frame-rate", "5", "--frame-burst", "5"}));
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(da.typing(conv, i % 2 == 0));
  int limited = 0;
  for (const auto& f : da.drain(ms(500))) limited += type_of(f) == "error" && jstr(f, "code") == "rate_limited";
  EXPECT_GE(limited, 10) << "typing frames beyond the burst must be refused";
  EXPECT_TRUE(da.is_open()) << "rate limiting refuses frames, it does not drop the connection";
  // A send refused by the frame limit still names itself (it is not parsed, but peeked at).
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(da.typing(conv, i % 2 == 0));  // empty the bucket again
  ASSERT_TRUE(da.send(conv, "over-frame-limit", "x"));
  auto refused = da.read_until([](const json::object& f) {
    return (type_of(f) == "error" && jstr(f, "ref") == "over-frame-limit") || type_of(f) == "sent";
  });
  ASSERT_TRUE(refused);
  EXPECT_EQ(jstr(*refused, "code"), "rate_limited") << dump(*refused);
  EXPECT_EQ(jstr(*refused, "ref"), "over-frame-limit") << dump(*refused);
  std::this_thread::sleep_for(ms(1200));
  EXPECT_GT(da.must_send(conv, "after-refill", "ok"), 0u);
}

TEST_F(TerndLimits, SendsBeyondTheInFlightBoundAreRefusedAtOnceWithRef) {
  ASSERT_NO_FATAL_FAILURE(start({"--max-inflight-per-connection", "2"}));
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  const Seq h0 = api().head(alice.token, conv);
  constexpr int kBurst = 60;
  for (int i = 0; i < kBurst; ++i) ASSERT_TRUE(da.send(conv, "if-" + std::to_string(i), "burst"));
  int sent = 0, overloaded = 0;
  std::set<std::string> answered, refused_ids;
  while (answered.size() < static_cast<size_t>(kBurst)) {
    auto a = da.read_until([](const json::object& f) { return type_of(f) == "sent" || type_of(f) == "error"; });
    ASSERT_TRUE(a) << "only " << answered.size() << " of " << kBurst << " sends answered";
    const std::string id = type_of(*a) == "sent" ? jstr(*a, "client_msg_id") : jstr(*a, "ref");
    EXPECT_TRUE(answered.insert(id).second) << "answered twice: " << dump(*a);
    if (type_of(*a) == "sent") {
      ++sent;
    } else {
      ASSERT_EQ(jstr(*a, "code"), "overloaded") << dump(*a);
      ++overloaded;
      refused_ids.insert(id);
    }
  }
  EXPECT_GE(sent, 2);
  EXPECT_GE(overloaded, 1) << "60 sends written at once cannot all fit in 2 in-flight slots";
  EXPECT_EQ(api().head(alice.token, conv), h0 + static_cast<Seq>(sent)) << "refused sends must not be stored";
  // A refused send retried with the same id goes through.
  auto retry = da.send_wait(conv, *refused_ids.begin(), "burst");
  ASSERT_TRUE(retry);
  EXPECT_EQ(type_of(*retry), "sent") << dump(*retry);
}

TEST_F(TerndLimits, SendRateLimitedPerDevice) {
  ASSERT_NO_FATAL_FAILURE(start({"--send-rate", "5", "--send-burst", "5"}));
  Account alice2 = api().must_link(alice);
  Device da(alice), da2(alice2);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(da2.connect_synced(port()));
  const Seq h0 = api().head(alice.token, conv);
  constexpr int kBurst = 20;
  for (int i = 0; i < kBurst; ++i) ASSERT_TRUE(da.send(conv, "rl-" + std::to_string(i), "burst"));
  // Refusals are immediate while `sent` waits for the disk: answers come in any order.
  int sent = 0, limited = 0;
  std::vector<json::object> answers;
  std::set<std::string> answered;
  while (answered.size() < static_cast<size_t>(kBurst)) {
    auto a = da.read_until([](const json::object& f) { return type_of(f) == "sent" || type_of(f) == "error"; });
    ASSERT_TRUE(a) << "only " << answered.size() << " of " << kBurst << " sends answered:\n" << dump_frames(answers);
    const std::string id = type_of(*a) == "sent" ? jstr(*a, "client_msg_id") : jstr(*a, "ref");
    EXPECT_TRUE(answered.insert(id).second) << "answered twice: " << dump(*a);
    if (type_of(*a) == "sent") {
      ++sent;
    } else if (jstr(*a, "code") == "rate_limited") {
      ++limited;
    } else {
      ADD_FAILURE() << dump(*a);
    }
    answers.push_back(*a);
  }
  EXPECT_GE(sent, 5) << "the burst allowance must be honoured:\n" << dump_frames(answers);
  EXPECT_GE(limited, 10) << dump_frames(answers);
  EXPECT_EQ(sent + limited, kBurst);
  EXPECT_EQ(api().head(alice.token, conv), h0 + static_cast<Seq>(sent)) << "rate-limited sends must not be stored";

  // The limit is per device: the other device sends at once.
  EXPECT_GT(da2.must_send(conv, "other-device", "fine"), 0u);
  // And tokens refill.
  std::this_thread::sleep_for(ms(1500));
  auto later = da.send_wait(conv, "rl-later", "refilled");
  ASSERT_TRUE(later);
  EXPECT_EQ(type_of(*later), "sent") << dump(*later);
  EXPECT_TRUE(da.is_open());
}

TEST_F(TerndLimits, SlowConsumerIsClosedAndReplaysOnReconnect) {
  // The queue bound applies to every connection, so the flooder keeps few answers in flight.
  ASSERT_NO_FATAL_FAILURE(start(with_fast_send({"--send-queue", "8", "--durability", "none"})));
  Device slow(bob);
  WsOptions o;
  o.receive_buffer_bytes = 4096;
  ASSERT_EQ(slow.connect(port(), o), 101);
  ASSERT_TRUE(slow.until_synced());
  slow.pause_reading();

  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  const Seq h0 = api().head(alice.token, conv);
  constexpr int kFlood = 400;
  const std::string body(16 * 1024, 'f');
  // Pipelined in windows so the sender itself never stalls on its own answers.
  Seq last = 0;
  constexpr int kWindow = 4;
  for (int start = 0; start < kFlood; start += kWindow) {
    for (int i = start; i < start + kWindow; ++i) ASSERT_TRUE(da.send(conv, "fl-" + std::to_string(i), body));
    for (int i = start; i < start + kWindow; ++i) {
      auto a = da.wait_answer("fl-" + std::to_string(i), ms(20000));
      ASSERT_TRUE(a && type_of(*a) == "sent") << "fl-" << i << ": " << (a ? dump(*a) : "no answer");
      last = std::max(last, seq_of(*a));
    }
  }
  ASSERT_EQ(last, h0 + kFlood);
  EXPECT_TRUE(da.is_open()) << "the flooding sender read everything and must stay connected";

  // The slow consumer was cut off: whatever it got is a clean prefix, then the close.
  slow.resume_reading();
  std::vector<json::object> got;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < until) {
    auto f = slow.read_frame(ms(1000));
    if (!f) {
      if (slow.closed()) break;
      continue;
    }
    got.push_back(std::move(*f));
  }
  ASSERT_TRUE(slow.closed()) << "a consumer that never read was not disconnected; it received "
                             << message_seqs(got, conv).size() << " of " << kFlood << " messages";
  auto seqs = message_seqs(got, conv);
  EXPECT_TRUE(contiguous(seqs));
  EXPECT_LT(seqs.size(), static_cast<size_t>(kFlood));
  if (slow.close_code()) {
    EXPECT_EQ(*slow.close_code(), 1008) << "slow consumer close code";
  }

  // On reconnect it replays everything (it never acked), then synced.
  Device again(bob);
  ASSERT_EQ(again.connect(port()), 101);
  std::vector<json::object> replay;
  auto synced = again.read_until("synced", ms(60000), &replay);
  auto rseqs = message_seqs(replay, conv);
  ASSERT_TRUE(synced) << "no synced after the replay; got " << rseqs.size() << " messages ("
                      << (rseqs.empty() ? 0 : rseqs.front()) << ".." << (rseqs.empty() ? 0 : rseqs.back()) << ")"
                      << (again.closed() ? ", then the connection was closed with code " +
                                               std::to_string(again.close_code().value_or(0))
                                         : std::string(", connection still open"));
  EXPECT_TRUE(dense_range(rseqs, 1, last)) << dump_frames(replay, 10);
  for (const auto& m : only_type(replay, "message", conv))
    if (seq_of(m) > h0) {
      ASSERT_EQ(unb64(jstr(m, "body")).size(), body.size());
    }
}

}  // namespace
}  // namespace tern::test
