// Unit tests of the delivery side (DeviceSession): the replay pump paced by a byte-bounded
// write queue, `synced` after the replay, nothing live before it, admission. A fake
// Connection stands in for the gateway (its queue drains only when the test says so); the
// rest is real: loops, group committer, sequencer, bus, on the in-memory store fake.
// Every test runs twice: store reads inline (the embedded store) and on reader threads (as
// with Redis: the session's reads complete later, through its loop).
#include "services/device_session.h"

#include <gtest/gtest.h>

#include <chrono>
#include <algorithm>
#include <future>
#include <mutex>

#include "bus/local/local_bus.h"
#include "proto/server_frames.h"
#include "services/accounts.h"
#include "services/presence.h"
#include "services/sequencer.h"
#include "services/service_context.h"
#include "store/memory/memory_store.h"

namespace tern::services {
namespace {

using namespace std::chrono_literals;

// A connection whose socket is as slow as the test wants: frames stay queued until drain().
class FakeConnection final : public gateway::Connection {
 public:
  FakeConnection(Loops& loops, size_t limit) : loops_(loops), limit_(limit) {}

  bool send(std::shared_ptr<const std::string> frame) override {
    if (closed_) return false;
    if (queued_ > 0 && queued_ + frame->size() > limit_) {
      overflowed_ = true;
      closed_ = true;
      return false;
    }
    queued_ += frame->size();
    peak_ = std::max(peak_, queued_);
    pending_.push_back(std::move(frame));
    return true;
  }
  size_t queued_bytes() const override { return queued_; }
  size_t queue_limit_bytes() const override { return limit_; }
  void close(uint16_t code, std::string) override {
    closed_ = true;
    close_code_ = code;
  }
  void post(std::function<void()> fn) override { loops_.post(0, std::move(fn)); }
  uint64_t id() const override { return 1; }
  size_t loop_index() const override { return 0; }

  // "The socket took everything": returns the frames written since the last drain.
  std::vector<std::string> drain() {
    std::vector<std::string> out;
    for (auto& f : pending_) out.push_back(*f);
    pending_.clear();
    queued_ = 0;
    return out;
  }
  size_t peak() const { return peak_; }
  bool overflowed() const { return overflowed_; }
  uint16_t close_code() const { return close_code_; }

 private:
  Loops& loops_;
  const size_t limit_;
  std::vector<std::shared_ptr<const std::string>> pending_;
  size_t queued_ = 0;
  size_t peak_ = 0;
  bool closed_ = false;
  bool overflowed_ = false;
  uint16_t close_code_ = 0;
};

// A one-time gate in a store read, as a slow remote store would make a read wait: once
// armed, the call after `skip` more calls waits in pass() until open().
class Gate {
 public:
  void arm(int skip = 0) {
    std::lock_guard lock(mu_);
    armed_ = true;
    skip_ = skip;
  }
  void pass() {
    {
      std::lock_guard lock(mu_);
      if (!armed_) return;
      if (skip_ > 0) {
        --skip_;
        return;
      }
      armed_ = false;
    }
    arrived_.set_value();
    opened_.wait();
  }
  void open() {
    std::call_once(open_once_, [&] { open_.set_value(); });
  }
  // Whether the held call reached the gate within 10 s.
  bool await_arrived() { return arrived_future_.wait_for(10s) == std::future_status::ready; }

 private:
  std::mutex mu_;
  bool armed_ = false;
  int skip_ = 0;
  std::promise<void> arrived_;
  std::future<void> arrived_future_ = arrived_.get_future();
  std::promise<void> open_;
  std::shared_future<void> opened_ = open_.get_future().share();
  std::once_flag open_once_;
};

// The memory store with a gate on inbox() (a connect's first read) and one on
// read_messages() (replay pages).
class GatedStore final : public store::MemoryStore {
 public:
  Result<std::vector<std::pair<std::string, Seq>>> inbox(const DeviceRef& device) override {
    inbox_gate.pass();
    return MemoryStore::inbox(device);
  }
  Result<std::vector<store::StoredMessage>> read_messages(const std::string& conversation_id, Seq after_seq,
                                                          size_t limit) override {
    page_gate.pass();
    return MemoryStore::read_messages(conversation_id, after_seq, limit);
  }
  Gate inbox_gate;
  Gate page_gate;
};

class DeviceSessionFixture {
 protected:
  explicit DeviceSessionFixture(size_t read_threads)
      : loops_(1),
        admission_(loops_.size()),
        committer_(store_, true, 100000, 256, &loops_),
        directory_(store_, 1000),
        reads_(loops_, read_threads),
        accounts_(store_, committer_, directory_, options_),
        sequencer_(loops_, store_, reads_, committer_, directory_, bus_, options_),
        presence_(loops_.context(0), store_, committer_, directory_, bus_, options_),
        fanout_(loops_, std::chrono::milliseconds(options_.fanout_batch_ms)),
        ctx_{options_, loops_, admission_, store_, reads_, committer_, directory_, bus_, sequencer_, presence_, accounts_,
             draining_, fanout_} {
    store::Batch b;
    for (const char* u : {"alice", "bob"}) {
      b.add(store::PutUser{u, 1});
      b.add(store::PutDevice{DeviceRef{u, 1}, std::string("tok-") + u});
    }
    EXPECT_TRUE(store_.commit(b, true).ok());
    loops_.start();
    committer_.start();
    std::promise<Result<ConversationInfo>> p;
    auto f = p.get_future();
    sequencer_.create_conversation(DeviceRef{"alice", 1}, proto::CreateConversationRequest{true, "g", {"bob"}},
                                   [&p](Result<ConversationInfo> r) { p.set_value(r); });
    auto r = f.get();
    EXPECT_TRUE(r);
    conv_ = r->conversation_id;
  }
  virtual ~DeviceSessionFixture() {
    store_.inbox_gate.open();  // a test that failed early may leave a read at a gate
    store_.page_gate.open();
    on_loop([&] {
      if (session_) session_->on_close();
    });
    reads_.stop();
    committer_.stop();
    loops_.stop();
    loops_.join();
  }

  // Runs fn on loop 0 (where the session lives) and waits for it.
  void on_loop(std::function<void()> fn) {
    std::promise<void> done;
    loops_.post(0, [&] {
      fn();
      done.set_value();
    });
    ASSERT_EQ(done.get_future().wait_for(10s), std::future_status::ready);
  }

  Seq send(const std::string& user, const std::string& cmid) {
    std::promise<Result<SentInfo>> p;
    auto f = p.get_future();
    sequencer_.send(DeviceRef{user, 1}, proto::SendFrame{cmid, conv_, std::string("aGk="), {}, {}, {}, false, {}}, 0,
                    [&p](Result<SentInfo> r) { p.set_value(std::move(r)); });
    auto r = f.get();
    EXPECT_TRUE(r);
    return r ? r->seq : 0;
  }

  // Connects bob's device with a write queue of `limit` bytes.
  void connect_bob(size_t limit) {
    conn_ = std::make_shared<FakeConnection>(loops_, limit);
    on_loop([&] {
      session_ = std::make_shared<DeviceSession>(ctx_, conn_, DeviceRef{"bob", 1});
      session_->start();
    });
  }

  // Drains the fake socket and resumes the session until `synced` went out (bounded).
  std::vector<std::string> drain_until_synced() {
    std::vector<std::string> all;
    for (const auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
      bool synced = false;
      on_loop([&] {
        for (auto& f : conn_->drain()) {
          synced = synced || f.find(R"("type":"synced")") != std::string::npos;
          all.push_back(std::move(f));
        }
        session_->on_writable();
      });
      if (synced) return all;
    }
    ADD_FAILURE() << "no synced within 20 s of drains";
    return all;
  }

  // `synced` last, after seqs 1..n, in order, each once.
  static void expect_replayed_in_order(const std::vector<std::string>& frames, size_t n) {
    ASSERT_FALSE(frames.empty());
    EXPECT_NE(frames.back().find(R"("type":"synced")"), std::string::npos) << "synced comes last";
    std::vector<Seq> seqs;
    for (const auto& f : frames)
      if (Seq s = seq_of(f)) seqs.push_back(s);
    ASSERT_EQ(seqs.size(), n);
    for (size_t i = 0; i < seqs.size(); ++i) ASSERT_EQ(seqs[i], i + 1) << "in order, each once";
  }

  static Seq seq_of(const std::string& frame) {
    auto f = proto::parse_server_frame(frame);
    if (!f) return 0;
    if (auto* m = std::get_if<proto::MessageEvent>(&*f)) return m->seq;
    return 0;
  }

  GatedStore store_;
  ServiceOptions options_;
  std::atomic<bool> draining_{false};
  Loops loops_;
  Admission admission_;
  GroupCommitter committer_;
  Directory directory_;
  StoreReads reads_;
  bus::LocalBus bus_;
  Accounts accounts_;
  Sequencer sequencer_;
  Presence presence_;
  LiveFanout fanout_;
  ServiceContext ctx_;
  std::string conv_;
  std::shared_ptr<FakeConnection> conn_;
  std::shared_ptr<DeviceSession> session_;
};

// Parameter: reader threads of StoreReads (0: inline, as on the embedded store).
class DeviceSessionTest : public DeviceSessionFixture, public ::testing::TestWithParam<size_t> {
 protected:
  DeviceSessionTest() : DeviceSessionFixture(GetParam()) {}
};

INSTANTIATE_TEST_SUITE_P(Reads, DeviceSessionTest, ::testing::Values(size_t{0}, size_t{2}),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return info.param == 0 ? std::string("Inline") : std::string("ReaderThreads");
                         });

// Reads on reader threads only: what a loop does while a connect waits for the store.
class DeviceSessionOffloadedTest : public DeviceSessionFixture, public ::testing::Test {
 protected:
  DeviceSessionOffloadedTest() : DeviceSessionFixture(2) {}
};

TEST_P(DeviceSessionTest, ReplayIsPacedByTheQueueAndEndsWithSynced) {
  constexpr int kOffline = 300;  // sent while bob is away: seqs 2..301 (1 is the creation)
  for (int i = 0; i < kOffline; ++i) send("alice", "m" + std::to_string(i));
  constexpr size_t kLimit = 4096;  // a few dozen frames: the replay must pause many times
  connect_bob(kLimit);
  expect_replayed_in_order(drain_until_synced(), kOffline + 1);
  EXPECT_FALSE(conn_->overflowed()) << "the replay must never overflow the queue it paces itself by";
  EXPECT_LE(conn_->peak(), kLimit);
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
  std::vector<Seq> after;
  // Bounded in time, not in rounds: each round is one quick trip to the loop, and the commit
  // that lets the message out may take a while on a loaded machine.
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       (after.empty() || after.back() < live) && std::chrono::steady_clock::now() < until;) {
    on_loop([&] {
      for (auto& f : conn_->drain())
        if (Seq s = seq_of(f)) after.push_back(s);
    });
  }
  std::vector<Seq> all = before_synced;
  all.insert(all.end(), after.begin(), after.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(live));
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], i + 1);
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

namespace tern::services {
namespace {

// A connect whose first store read waits (a slow remote store) does not hold its loop: other
// work on the loop runs meanwhile, and messages published meanwhile are delivered in order
// once the reads are done, after the replay and before nothing of it.
TEST_F(DeviceSessionOffloadedTest, TheLoopRunsWhileAConnectWaitsForTheStore) {
  for (int i = 0; i < 50; ++i) send("alice", "old" + std::to_string(i));  // seqs 2..51
  store_.inbox_gate.arm();
  connect_bob(4096);  // start() returns: its inbox read waits at the gate on a reader thread
  ASSERT_TRUE(store_.inbox_gate.await_arrived()) << "the connect's inbox read never came";
  // The loop is free: a task posted to it runs (on_loop waits at most 10 s), and the
  // sequencer, which runs on the same loop, commits and publishes new messages.
  std::vector<std::string> early;
  on_loop([&] { early = conn_->drain(); });
  EXPECT_TRUE(early.empty()) << "nothing is written before the connect's reads are done";
  for (int i = 0; i < 5; ++i) send("alice", "meanwhile" + std::to_string(i));  // seqs 52..56
  store_.inbox_gate.open();
  expect_replayed_in_order(drain_until_synced(), 56);
  EXPECT_FALSE(conn_->overflowed());
}

// The connection closed while its connect's reads were under way: their late result is
// dropped (nothing written), and the read lets go of the session.
TEST_F(DeviceSessionOffloadedTest, AConnectClosedDuringItsReadsWritesNothingLater) {
  for (int i = 0; i < 10; ++i) send("alice", "old" + std::to_string(i));
  store_.inbox_gate.arm();
  connect_bob(1 << 20);
  ASSERT_TRUE(store_.inbox_gate.await_arrived());
  on_loop([&] { session_->on_close(); });
  store_.inbox_gate.open();
  // The read's completion held the last other reference: it is released once it ran.
  bool released = false;
  for (const auto until = std::chrono::steady_clock::now() + 10s; !released && std::chrono::steady_clock::now() < until;)
    on_loop([&] { released = session_.use_count() == 1; });
  EXPECT_TRUE(released) << "a reference is still held after the read completed";
  std::vector<std::string> frames;
  on_loop([&] { frames = conn_->drain(); });
  EXPECT_TRUE(frames.empty()) << frames.size() << " frames written after on_close";
}

// With reader threads the position can move during a page's read: here the device's own
// message, sent while the page that holds it is read, is stepped over, so the whole page is
// behind the position when it lands. The replay goes on with the next page and ends with
// `synced` by itself, not waiting for an on_writable() that an unfilled queue never brings.
TEST_F(DeviceSessionOffloadedTest, APageOvertakenDuringItsReadDoesNotStallTheReplay) {
  options_.replay_page = 1;  // one message per page
  send("alice", "a");        // seq 2 (1 is the creation)
  store_.page_gate.arm(2);   // pages: [1], [2], then the read after seq 2 waits
  connect_bob(1 << 20);
  ASSERT_TRUE(store_.page_gate.await_arrived());
  // Bob's own message takes seq 3 while that read waits.
  on_loop([&] {
    session_->on_text(R"({"type":"send","client_msg_id":"own","conversation_id":")" + conv_ + R"(","body":"aGk="})");
  });
  std::vector<std::string> frames;
  auto have = [&](const char* type) {
    return std::any_of(frames.begin(), frames.end(),
                       [&](const std::string& f) { return f.find(type) != std::string::npos; });
  };
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       !have(R"("type":"sent")") && std::chrono::steady_clock::now() < until;)
    on_loop([&] {
      for (auto& f : conn_->drain()) frames.push_back(std::move(f));
    });
  ASSERT_TRUE(have(R"("type":"sent")"));
  store_.page_gate.open();
  // Only drains from here on: no on_writable() (the queue never reached its limit).
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       !have(R"("type":"synced")") && std::chrono::steady_clock::now() < until;)
    on_loop([&] {
      for (auto& f : conn_->drain()) frames.push_back(std::move(f));
    });
  EXPECT_TRUE(have(R"("type":"synced")")) << "the replay stalled";
  std::vector<Seq> seqs;
  for (const auto& f : frames)
    if (Seq s = seq_of(f)) seqs.push_back(s);
  EXPECT_EQ(seqs, (std::vector<Seq>{1, 2})) << "its own message is not sent back to it";
}

}  // namespace
}  // namespace tern::services
