// Unit tests of the delivery side (DeviceSession): the replay pump paced by a byte-bounded
// write queue, `synced` after the replay, nothing live before it, admission. A fake
// Connection stands in for the gateway (its queue drains only when the test says so); the
// rest is real: loops, group committer, sequencer, bus, on the in-memory store fake.
// Every test runs three times: store reads inline (the embedded store), on reader threads and
// in fibers on the loop (as with Redis: the session's reads complete later, through its loop).
// The fixture: device_session_fixture.h; reads on reader threads only:
// device_session_offloaded_test.cc.
#include "services/device_session.h"

#include <gtest/gtest.h>

#include "services/device_session_fixture.h"

namespace tern::services {
namespace {

using namespace sessiontest;

// Parameter: reader threads of StoreReads (0: inline, as on the embedded store), or kInFibers.
class DeviceSessionTest : public DeviceSessionFixture, public ::testing::TestWithParam<size_t> {
 protected:
  DeviceSessionTest() : DeviceSessionFixture(GetParam()) {}
};

INSTANTIATE_TEST_SUITE_P(Reads, DeviceSessionTest, ::testing::Values(size_t{0}, size_t{2}, kInFibers),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           if (info.param == kInFibers) return std::string("InFibers");
                           return info.param == 0 ? std::string("Inline") : std::string("ReaderThreads");
                         });


TEST_P(DeviceSessionTest, ReplayIsPacedByTheQueueAndEndsWithSynced) {
  constexpr int kOffline = 300;  // sent while bob is away: seqs 2..301 (1 is the creation)
  for (int i = 0; i < kOffline; ++i) send("alice", "m" + std::to_string(i));
  constexpr size_t kLimit = 4096;  // a few dozen frames: the replay must pause many times
  connect_bob(kLimit);
  expect_replayed_in_order(drain_until_synced(), kOffline + 1);
  EXPECT_FALSE(conn_->overflowed()) << "the replay must never overflow the queue it paces itself by";
  EXPECT_LE(conn_->peak(), kLimit);
}

// A replay hides a message whose expiry passed on the bus's clock (on Redis: the one the nodes
// share), whatever this node's own clock says: two nodes whose clocks disagree hand out a
// disappearing message's payload until the same moment.
TEST_P(DeviceSessionTest, AReplayHidesAMessageExpiredOnTheBusClock) {
  std::promise<Result<SentInfo>> p;
  auto f = p.get_future();
  sequencer_.send(DeviceRef{"alice", 1}, proto::SendFrame{"gone", conv_, std::string("c2VjcmV0"), {}, {}, 60, false, {}, {}},
                  0, [&p](Result<SentInfo> r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(f.get());
  const Seq kept = send("alice", "kept");
  skew_us_ = 120'000'000;  // the bus's clock is now 2 min past the send: past its 60 s
  connect_bob(1 << 20);
  const auto frames = drain_until_synced();
  expect_replayed_in_order(frames, kept);
  size_t expired = 0;
  for (const auto& frame : frames) {
    EXPECT_EQ(frame.find("c2VjcmV0"), std::string::npos) << "the expired payload went out: " << frame;
    if (frame.find(R"("expired":true)") != std::string::npos) ++expired;
  }
  EXPECT_EQ(expired, 1u);
}

// Replay pages ask for what fits the write queue at the size of the frames already read: the
// first (size unknown) for at most kFirstPage messages, the next ones for about the queue's
// room in 16 KiB messages, not for replay_page (256) of them. A page of big messages that
// asked for 256 read ~4 MB here to write ~0.75 MB: with 60 KiB messages, four devices that
// connect and never read made the store read ~60 MB (a probe's p99 went from 2 to ~80 ms on
// Redis, AdversarialGateway.ConnectionsThatNeverReadPinBoundedMemory). Small messages still
// fill replay_page.
TEST_P(DeviceSessionTest, ReplayPagesAskForWhatFitsTheQueueAtTheSizeOfTheFramesRead) {
  constexpr int kBig = 120;  // seqs 2..121, 16 KiB of payload each
  const std::string body(16 * 1024, 'A');
  for (int i = 0; i < kBig; ++i) {
    std::promise<Result<SentInfo>> p;
    auto f = p.get_future();
    sequencer_.send(DeviceRef{"alice", 1},
                    proto::SendFrame{"big" + std::to_string(i), conv_, body, {}, {}, {}, false, {}, {}}, 0,
                    [&p](Result<SentInfo> r) { p.set_value(std::move(r)); });
    ASSERT_TRUE(f.get());
  }
  constexpr size_t kLimit = 1 << 20;
  connect_bob(kLimit);
  expect_replayed_in_order(drain_until_synced(), kBig + 1);
  const std::vector<size_t> limits = store_.page_limits();
  ASSERT_GE(limits.size(), 2u);
  EXPECT_LE(limits.front(), DeviceSession::kFirstPage) << "the first page, before any frame's size is known";
  const size_t fits = kLimit / (16 * 1024);  // the whole queue's worth: more than the room
  for (size_t i = 1; i < limits.size(); ++i) EXPECT_LE(limits[i], fits) << "page " << i;
}

// A store read failing in the middle of a replay closes the connection (1011) instead of
// skipping the conversation and saying `synced` with messages missing.
TEST_P(DeviceSessionTest, AReadFailureDuringReplayClosesInsteadOfSayingSynced) {
  for (int i = 0; i < 200; ++i) send("alice", "m" + std::to_string(i));  // seqs 2..201
  connect_bob(4096);  // the replay pauses after a few dozen frames
  std::vector<std::string> frames;
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       frames.empty() && std::chrono::steady_clock::now() < until;)
    on_loop([&] { frames = conn_->drain(); });
  ASSERT_FALSE(frames.empty());
  store_.fail_reads(true);
  // The next page's read fails (with reader threads, a read already under way may still
  // succeed first: bounded in time).
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       conn_->close_code() == 0 && std::chrono::steady_clock::now() < until;)
    on_loop([&] {
      session_->on_writable();
      for (auto& f : conn_->drain()) frames.push_back(std::move(f));
    });
  store_.fail_reads(false);
  EXPECT_EQ(conn_->close_code(), 1011);
  for (const auto& f : frames) EXPECT_EQ(f.find(R"("type":"synced")"), std::string::npos) << f;
  EXPECT_LT(frames.size(), 201u) << "the replay stopped";
}

TEST_P(DeviceSessionTest, NothingLiveBeforeSyncedAndNothingLostAcrossIt) {
  for (int i = 0; i < 100; ++i) send("alice", "old" + std::to_string(i));  // seqs 2..101
  connect_bob(2048);
  // While the replay waits for the socket, new messages are committed and published.
  for (int i = 0; i < 20; ++i) send("alice", "new" + std::to_string(i));  // seqs 102..121
  auto frames = drain_until_synced();
  std::vector<Seq> before_synced;
  for (const auto& f : frames)
    if (Seq s = seq_of(f)) before_synced.push_back(s);
  // Then live: the next message is written as soon as it is committed.
  const Seq live = send("alice", "live");
  std::vector<Seq> after = written_until(live);
  std::vector<Seq> all = before_synced;
  all.insert(all.end(), after.begin(), after.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(live));
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], i + 1);
}

// missed() (another node's older connection of the device got events meanwhile): messages
// committed while no notification reached the session are read from the store, in a
// conversation it has a position in and in one new to it; nothing is written twice.
TEST_P(DeviceSessionTest, MissedReadsTheInboxAgainAndCatchesUp) {
  connect_bob(1 << 20);
  auto replay = drain_until_synced();
  // Notifications go elsewhere: bob's session is off the bus while alice sends.
  on_loop([&] { bus_.detach(DeviceRef{"bob", 1}, session_.get()); });
  const Seq in_group = send("alice", "while-away");
  std::promise<Result<ConversationInfo>> created;
  sequencer_.create_conversation(DeviceRef{"alice", 1}, proto::CreateConversationRequest{false, "", {"bob"}},
                                 [&](Result<ConversationInfo> r) { created.set_value(r); });
  auto direct = created.get_future().get();
  ASSERT_TRUE(direct) << direct.error().message;
  std::promise<Result<SentInfo>> sent;
  sequencer_.send(DeviceRef{"alice", 1},
                  proto::SendFrame{"direct-away", direct->conversation_id, std::string("aGk="), {}, {}, {}, false, {}, {}},
                  0, [&](Result<SentInfo> r) { sent.set_value(std::move(r)); });
  auto direct_seq = sent.get_future().get();
  ASSERT_TRUE(direct_seq) << direct_seq.error().message;
  on_loop([&] { bus_.attach(DeviceRef{"bob", 1}, session_); });
  std::vector<std::string> before;
  on_loop([&] { before = conn_->drain(); });
  for (const auto& f : before) EXPECT_EQ(seq_of(f), 0u) << "nothing was notified: " << f;

  session_->missed();
  std::map<std::string, std::vector<Seq>> got;  // conversation → seqs written
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       (got[conv_].empty() || got[direct->conversation_id].empty()) && std::chrono::steady_clock::now() < until;) {
    on_loop([&] {
      for (auto& f : conn_->drain()) {
        auto frame = proto::parse_server_frame(f);
        if (!frame) continue;
        if (auto* m = std::get_if<proto::MessageEvent>(&*frame)) got[m->conversation_id].push_back(m->seq);
      }
      session_->on_writable();
    });
  }
  EXPECT_EQ(got[conv_], std::vector<Seq>{in_group}) << "the group message, once";
  EXPECT_EQ(got[direct->conversation_id], std::vector<Seq>{direct_seq->seq}) << "the new conversation's, once";

  // Missed again with nothing new: nothing is written.
  session_->missed();
  const Seq live = send("alice", "live-after");
  const std::vector<Seq> after = written_until(live);
  EXPECT_EQ(after, std::vector<Seq>{live}) << "no repeat, and the next message live";
}

TEST_P(DeviceSessionTest, ASendBeyondTheInFlightBoundIsRefusedWithItsRef) {
  options_.max_inflight_sends_per_connection = 1;
  connect_bob(1 << 20);
  drain_until_synced();
  std::vector<std::string> answers;
  on_loop([&] {
    // Two sends in one loop turn: the first is in flight (the commit has not come back)
    // when the second arrives.
    session_->on_text(R"({"type":"send","client_msg_id":"s1","conversation_id":")" + conv_ + R"(","body":"aGk="})");
    session_->on_text(R"({"type":"send","client_msg_id":"s2","conversation_id":")" + conv_ + R"(","body":"aGk="})");
  });
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       answers.size() < 2 && std::chrono::steady_clock::now() < until;)
    on_loop([&] {
      for (auto& f : conn_->drain())
        if (f.find(R"("type":"sent")") != std::string::npos || f.find(R"("type":"error")") != std::string::npos)
          answers.push_back(f);
    });
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_NE(answers[0].find(R"("code":"overloaded")"), std::string::npos) << answers[0];
  EXPECT_NE(answers[0].find(R"("ref":"s2")"), std::string::npos) << answers[0];
  EXPECT_NE(answers[1].find(R"("client_msg_id":"s1")"), std::string::npos) << answers[1];
}


}  // namespace
}  // namespace tern::services
