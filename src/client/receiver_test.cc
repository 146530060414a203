#include "client/receiver.h"

#include <algorithm>
#include <deque>
#include <random>

#include <gtest/gtest.h>

namespace tern::client {
namespace {

Message msg(std::string conv, Seq seq, std::string sender = "bob", uint32_t device = 1) {
  Message m;
  m.conversation_id = std::move(conv);
  m.seq = seq;
  m.sender = std::move(sender);
  m.sender_device = device;
  m.body = "m" + std::to_string(seq);
  return m;
}

// A server's log per conversation, a manual clock and the receiver under test.
struct Harness {
  std::map<std::string, std::vector<Message>> log;  // seq order
  std::map<std::string, Seq> join;                  // backfill serves nothing below
  std::vector<Message> delivered;
  std::vector<std::pair<std::string, Seq>> backfill_calls;
  std::deque<std::pair<Callback<HistoryPage>, Result<HistoryPage>>> answers;  // deferred backfill
  bool defer_backfill = false;
  std::deque<ErrorCode> backfill_failures;  // next backfill calls fail with these
  std::vector<std::function<void()>> timers;
  int ack_prompts = 0;
  std::unique_ptr<Receiver> r;

  explicit Harness(ReceiverOptions o = {}) {
    if (o.self_user.empty()) {
      o.self_user = "alice";
      o.self_device = 1;
    }
    ReceiverHooks h;
    h.deliver = [this](const Message& m) { delivered.push_back(m); };
    h.backfill = [this](const std::string& conv, Seq after, size_t limit, Callback<HistoryPage> cb) {
      backfill_calls.emplace_back(conv, after);
      Result<HistoryPage> res = page(conv, after, limit);
      if (defer_backfill) answers.emplace_back(std::move(cb), std::move(res));
      else cb(std::move(res));
    };
    h.schedule = [this](int64_t, std::function<void()> fn) { timers.push_back(std::move(fn)); };
    h.ack_pending = [this] { ++ack_prompts; };
    h.random = [] { return uint64_t{12345}; };
    r = std::make_unique<Receiver>(o, std::move(h));
  }

  Result<HistoryPage> page(const std::string& conv, Seq after, size_t limit) {
    if (!backfill_failures.empty()) {
      ErrorCode c = backfill_failures.front();
      backfill_failures.pop_front();
      return make_error(c, "injected");
    }
    HistoryPage p;
    for (const auto& m : log[conv]) {
      if (m.seq <= after || m.seq < join[conv]) continue;
      if (p.messages.size() >= limit) break;
      p.messages.push_back(m);
    }
    p.head = log[conv].empty() ? 0 : log[conv].back().seq;
    return p;
  }
  // Adds 1..n to conv's log.
  void fill(const std::string& conv, Seq n, Seq from = 1) {
    for (Seq s = from; s <= n; ++s) log[conv].push_back(msg(conv, s));
  }
  const Message& at(const std::string& conv, Seq seq) { return log[conv].at(seq - log[conv].front().seq); }
  void run_timers() {
    for (int round = 0; round < 100 && !timers.empty(); ++round) {
      auto t = std::move(timers);
      timers.clear();
      for (auto& f : t) f();
    }
  }
  void answer_all() {
    while (!answers.empty()) {
      auto [cb, res] = std::move(answers.front());
      answers.pop_front();
      cb(std::move(res));
    }
  }
  std::vector<Seq> seqs(const std::string& conv) const {
    std::vector<Seq> out;
    for (const auto& m : delivered)
      if (m.conversation_id == conv) out.push_back(m.seq);
    return out;
  }
};

std::vector<Seq> range(Seq a, Seq b) {
  std::vector<Seq> v;
  for (Seq s = a; s <= b; ++s) v.push_back(s);
  return v;
}

TEST(Receiver, InOrderAndRepeatsDropped) {
  Harness h;
  h.fill("c", 5);
  for (Seq s : {1, 2, 2, 3, 1, 4, 5, 5}) h.r->on_message(h.at("c", s));
  EXPECT_EQ(h.seqs("c"), range(1, 5));
  EXPECT_EQ(h.r->stats().duplicates, 3u);
  EXPECT_TRUE(h.backfill_calls.empty());
  EXPECT_EQ(h.r->last_handed("c"), 5u);
}

TEST(Receiver, ReorderWithinGraceNeedsNoBackfill) {
  Harness h;
  h.fill("c", 4);
  h.r->on_message(h.at("c", 1));
  h.r->on_message(h.at("c", 3));
  h.r->on_message(h.at("c", 4));
  EXPECT_EQ(h.seqs("c"), range(1, 1));
  EXPECT_EQ(h.r->buffered("c"), 2u);
  h.r->on_message(h.at("c", 2));
  EXPECT_EQ(h.seqs("c"), range(1, 4));
  h.run_timers();  // the grace timer finds no hole
  EXPECT_TRUE(h.backfill_calls.empty());
}

TEST(Receiver, GapFilledByBackfillBeforeHandOver) {
  Harness h;
  h.fill("c", 5);
  h.r->on_message(h.at("c", 1));
  h.r->on_message(h.at("c", 5));
  EXPECT_EQ(h.seqs("c"), range(1, 1));  // 5 waits for 2..4
  h.run_timers();
  ASSERT_EQ(h.backfill_calls.size(), 1u);
  EXPECT_EQ(h.backfill_calls[0].second, 1u);  // after_seq = the last handed over
  EXPECT_EQ(h.seqs("c"), range(1, 5));
  h.fill("c", 6, 6);
  h.r->on_message(h.at("c", 6));
  EXPECT_EQ(h.seqs("c"), range(1, 6));
  EXPECT_EQ(h.r->stats().gaps_accepted, 0u);
}

TEST(Receiver, GapFilledPageByPage) {
  ReceiverOptions o;
  o.backfill_page = 2;
  o.gap_grace_ms = 0;  // at once
  Harness h(o);
  h.fill("c", 10);
  h.r->on_message(h.at("c", 1));
  h.r->on_message(h.at("c", 10));
  EXPECT_EQ(h.seqs("c"), range(1, 10));
  EXPECT_GE(h.backfill_calls.size(), 4u);
}

TEST(Receiver, LiveMessagesDuringBackfillAreNotRepeated) {
  Harness h;
  h.fill("c", 8);
  h.defer_backfill = true;
  h.r->on_message(h.at("c", 1));
  h.r->on_message(h.at("c", 4));
  h.run_timers();
  ASSERT_EQ(h.answers.size(), 1u);
  // While the request is out, the hole partly fills and more arrives.
  h.r->on_message(h.at("c", 2));
  h.r->on_message(h.at("c", 5));
  h.answer_all();
  for (Seq s = 6; s <= 8; ++s) h.r->on_message(h.at("c", s));
  h.run_timers();
  h.answer_all();
  EXPECT_EQ(h.seqs("c"), range(1, 8));
}

TEST(Receiver, FirstMessageSeenIsTheBase) {
  Harness h;
  h.fill("c", 12);
  h.r->on_message(h.at("c", 10));  // joined late or acked 9 in an earlier life
  h.r->on_message(h.at("c", 11));
  EXPECT_EQ(h.seqs("c"), range(10, 11));
  EXPECT_TRUE(h.backfill_calls.empty());
}

TEST(Receiver, HoleBeforeTheJoinSeqIsAccepted) {
  Harness h;
  h.fill("c", 9);
  h.join["c"] = 8;          // removed and added again at 8: nothing before it is served
  h.r->set_cursor("c", 3);  // what we had the first time
  h.r->on_message(h.at("c", 9));
  h.run_timers();
  EXPECT_EQ(h.seqs("c"), (std::vector<Seq>{8, 9}));
  EXPECT_EQ(h.r->stats().gaps_accepted, 1u);
}

TEST(Receiver, EmptyBackfillAcceptsTheHole) {
  Harness h;
  h.r->on_message(msg("c", 1));
  h.r->on_message(msg("c", 4));  // the log is empty: nothing to fill with
  h.run_timers();
  EXPECT_EQ(h.seqs("c"), (std::vector<Seq>{1, 4}));
  EXPECT_EQ(h.r->stats().gaps_accepted, 1u);
}

TEST(Receiver, TransientBackfillErrorsAreRetriedPermanentOnesAccepted) {
  Harness h;
  h.fill("c", 5);
  h.backfill_failures = {ErrorCode::kOverloaded, ErrorCode::kRateLimited};
  h.r->on_message(h.at("c", 1));
  h.r->on_message(h.at("c", 5));
  h.run_timers();
  EXPECT_EQ(h.backfill_calls.size(), 3u);
  EXPECT_EQ(h.seqs("c"), range(1, 5));
  EXPECT_EQ(h.r->stats().gaps_accepted, 0u);

  Harness g;
  g.fill("d", 5);
  g.backfill_failures = {ErrorCode::kForbidden};  // removed from the conversation
  g.r->on_message(g.at("d", 1));
  g.r->on_message(g.at("d", 5));
  g.run_timers();
  EXPECT_EQ(g.seqs("d"), (std::vector<Seq>{1, 5}));
}

TEST(Receiver, StalledBackfillResumesOnRetryGaps) {
  ReceiverOptions o;
  o.backfill_retry = {10, 10, 2};
  Harness h(o);
  h.fill("c", 4);
  h.backfill_failures = {ErrorCode::kOverloaded, ErrorCode::kOverloaded, ErrorCode::kOverloaded};
  h.r->on_message(h.at("c", 1));
  h.r->on_message(h.at("c", 4));
  h.run_timers();
  EXPECT_EQ(h.seqs("c"), range(1, 1));  // gave up for now, nothing handed out of order
  h.r->retry_gaps();                    // reconnected
  h.run_timers();
  EXPECT_EQ(h.seqs("c"), range(1, 4));
}

TEST(Receiver, ReplyHeldUntilItsTargetIsHandedOver) {
  Harness h;
  h.fill("c", 3);
  h.log["c"][2].reply_to = 2;  // 3 replies to 2
  h.defer_backfill = true;
  h.r->on_message(h.at("c", 1));
  h.r->on_message(h.at("c", 3));
  h.run_timers();
  EXPECT_EQ(h.seqs("c"), range(1, 1));  // the reply waits
  h.r->on_message(h.at("c", 2));
  EXPECT_EQ(h.seqs("c"), range(1, 3));
  ASSERT_EQ(h.delivered.back().reply_to, 2u);
  h.answer_all();  // the late backfill answer repeats nothing
  EXPECT_EQ(h.seqs("c"), range(1, 3));
}

TEST(Receiver, ReplyToOlderThanTheBaseIsNotWaitedFor) {
  Harness h;
  Message m = msg("c", 20);
  m.reply_to = 4;  // before anything this device will ever get
  h.r->on_message(m);
  EXPECT_EQ(h.seqs("c"), (std::vector<Seq>{20}));
  Message bogus = msg("c", 21);
  bogus.reply_to = 30;  // cannot precede it
  h.r->on_message(bogus);
  EXPECT_EQ(h.seqs("c"), (std::vector<Seq>{20, 21}));
}

TEST(Receiver, OwnSendsFillTheirSlots) {
  Harness g;
  g.fill("c", 2);
  g.log["c"].push_back(msg("c", 3, "alice", 1));
  g.fill("c", 5, 4);
  g.r->on_message(g.at("c", 1));
  g.r->on_message(g.at("c", 2));
  g.r->on_message(g.at("c", 4));  // our 3's `sent` is late
  g.r->on_own_sent("c", 3);
  g.r->on_message(g.at("c", 5));
  g.run_timers();
  EXPECT_TRUE(g.backfill_calls.empty());
  EXPECT_EQ(g.seqs("c"), (std::vector<Seq>{1, 2, 4, 5}));
  EXPECT_EQ(g.r->stats().own_filled, 1u);
}

TEST(Receiver, OwnDeviceMessagesFromBackfillAreNotHandedButSystemOnesAre) {
  Harness h;
  h.fill("c", 1);
  h.log["c"].push_back(msg("c", 2, "alice", 1));  // this device's, `sent` lost with a crash
  Message sys = msg("c", 3, "alice", 1);
  sys.system_json = R"({"added":["dave"]})";
  h.log["c"].push_back(sys);
  h.log["c"].push_back(msg("c", 4, "alice", 2));  // alice's other device: handed over
  h.fill("c", 5, 5);
  h.r->on_message(h.at("c", 1));
  h.r->on_message(h.at("c", 5));
  h.run_timers();
  EXPECT_EQ(h.seqs("c"), (std::vector<Seq>{1, 3, 4, 5}));
}

TEST(Receiver, OwnSentBeforeTheBaseIsKnown) {
  Harness h;
  h.r->on_own_sent("c", 2);  // we sent 2 before anything of c arrived
  h.r->on_message(msg("c", 1));
  h.r->on_message(msg("c", 3));
  h.run_timers();
  EXPECT_EQ(h.seqs("c"), (std::vector<Seq>{1, 3}));
  EXPECT_TRUE(h.backfill_calls.empty());
}

TEST(Receiver, AcksAreCumulativeAndCoalesced) {
  Harness h;
  h.fill("a", 3);
  h.fill("b", 2);
  for (Seq s = 1; s <= 3; ++s) h.r->on_message(h.at("a", s));
  h.r->on_message(h.at("b", 1));
  h.r->on_message(h.at("b", 2));
  EXPECT_EQ(h.ack_prompts, 1);  // one prompt for the whole batch
  auto acks = h.r->take_acks();
  std::sort(acks.begin(), acks.end());
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[0], (std::pair<std::string, Seq>{"a", 3}));
  EXPECT_EQ(acks[1], (std::pair<std::string, Seq>{"b", 2}));
  EXPECT_TRUE(h.r->take_acks().empty());
  h.r->on_message(h.at("a", 2));  // a replay after reconnect: ack again so the server moves on
  acks = h.r->take_acks();
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].second, 3u);
}

TEST(Receiver, NoAckBeforeHandOver) {
  Harness h;
  h.fill("c", 3);
  h.defer_backfill = true;
  h.r->on_message(h.at("c", 1));
  (void)h.r->take_acks();
  h.r->on_message(h.at("c", 3));
  EXPECT_TRUE(h.r->take_acks().empty());  // 3 is not handed over yet
}

TEST(Receiver, BoundedBufferStillDeliversEverythingInOrder) {
  ReceiverOptions o;
  o.max_buffered = 3;
  o.backfill_page = 4;
  Harness h(o);
  h.fill("c", 30);
  h.defer_backfill = true;
  h.r->on_message(h.at("c", 1));
  for (Seq s = 3; s <= 30; ++s) h.r->on_message(h.at("c", s));  // 2 lost on the way
  EXPECT_LE(h.r->buffered("c"), 3u);
  EXPECT_GT(h.r->stats().overflow_dropped, 0u);
  for (int i = 0; i < 50 && (!h.timers.empty() || !h.answers.empty()); ++i) {
    h.run_timers();
    h.answer_all();
  }
  EXPECT_EQ(h.seqs("c"), range(1, 30));
}

TEST(Receiver, RandomReplayStormsDeliverEachMessageOnceInOrder) {
  std::mt19937_64 rng(2024);
  for (int round = 0; round < 20; ++round) {
    ReceiverOptions o;
    o.backfill_page = 1 + rng() % 7;
    Harness h(o);
    const std::vector<std::string> convs{"x", "y", "z"};
    for (const auto& c : convs) h.fill(c, 60);
    // Connections that each replay from a random earlier point, drop messages at random,
    // and stop early: what reconnects and a lossy path look like to the receiver.
    for (int conn = 0; conn < 6; ++conn) {
      for (const auto& c : convs) {
        Seq from = 1 + rng() % 60;
        Seq to = std::min<Seq>(60, from + rng() % 30);
        for (Seq s = from; s <= to; ++s)
          if (rng() % 4 != 0) h.r->on_message(h.at(c, s));
      }
      if (rng() % 2) h.run_timers();
    }
    for (const auto& c : convs) h.r->on_message(h.at(c, 60));
    h.run_timers();
    for (const auto& c : convs) {
      auto got = h.seqs(c);
      ASSERT_FALSE(got.empty());
      // From the first message seen (the base) to 60, each once, ascending.
      EXPECT_EQ(got, range(got.front(), 60)) << "conversation " << c << " round " << round;
    }
  }
}

}  // namespace
}  // namespace tern::client
