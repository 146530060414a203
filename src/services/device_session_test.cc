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

#include "base/metrics.h"
#include "bus/local/local_bus.h"
#include "proto/server_frames.h"
#include "services/accounts.h"
#include "services/blocks.h"
#include "services/channel_api.h"
#include "services/presence.h"
#include "services/sequencer.h"
#include "services/service_context.h"
#include "services/tern_service.h"
#include "services/token.h"
#include "store/fs/fs_blob_store.h"
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

  // Reads of the membership and index rows made on a loop thread (Loops::here()), by name:
  // in Redis mode none of them may be made there.
  Result<std::optional<store::Conversation>> conversation(const std::string& id) override {
    note("conversation");
    conversation_gate.pass();
    return MemoryStore::conversation(id);
  }
  Gate conversation_gate;  // a membership snapshot's read (Directory::conversation on a miss)

  // The seqs of the cursor writes of `device` in `conversation`, in commit order.
  Result<void> commit(const store::Batch& batch, bool sync) override {
    auto r = MemoryStore::commit(batch, sync);
    if (r) {
      std::lock_guard lock(reads_mu_);
      for (const auto& op : batch.ops)
        if (const auto* c = std::get_if<store::SetCursor>(&op); c && c->device == cursor_device_ &&
                                                              c->conversation_id == cursor_conversation_)
          cursor_writes_.push_back(c->seq);
    }
    return r;
  }
  void record_cursors(const DeviceRef& device, const std::string& conversation_id) {
    std::lock_guard lock(reads_mu_);
    cursor_device_ = device;
    cursor_conversation_ = conversation_id;
  }
  std::vector<Seq> cursor_writes() {
    std::lock_guard lock(reads_mu_);
    return cursor_writes_;
  }
  Result<std::vector<store::UserConversation>> user_conversations(const std::string& user) override {
    note("user_conversations");
    return MemoryStore::user_conversations(user);
  }
  Result<std::optional<store::UserConversation>> user_conversation(const std::string& user,
                                                                   const std::string& conversation_id) override {
    note("user_conversation");
    return MemoryStore::user_conversation(user, conversation_id);
  }
  Result<Seq> head(const std::string& conversation_id) override {
    note("head");
    return MemoryStore::head(conversation_id);
  }
  Result<std::optional<DeviceRef>> find_token(const std::string& token_hash) override {
    note("find_token");
    return MemoryStore::find_token(token_hash);
  }
  Result<std::optional<std::string>> user_record(const std::string& user, const std::string& name) override {
    note("user_record");
    return MemoryStore::user_record(user, name);
  }
  Result<std::vector<std::pair<std::string, std::string>>> user_records(const std::string& user,
                                                                      const std::string& prefix,
                                                                      size_t limit) override {
    note("user_records");
    return MemoryStore::user_records(user, prefix, limit);
  }
  Result<std::vector<std::pair<std::string, uint64_t>>> user_media(const std::string& user, size_t limit) override {
    note("user_media");
    return MemoryStore::user_media(user, limit);
  }
  void count_loop_reads(const Loops* loops) { loops_ = loops; }
  std::vector<std::string> loop_reads() {
    std::lock_guard lock(reads_mu_);
    return loop_reads_;
  }
  void clear_loop_reads() {
    std::lock_guard lock(reads_mu_);
    loop_reads_.clear();
  }

 private:
  void note(const char* what) {
    const Loops* loops = loops_.load();
    if (!loops || loops->here() == Loops::kNone) return;
    std::lock_guard lock(reads_mu_);
    loop_reads_.push_back(what);
  }
  std::atomic<const Loops*> loops_{nullptr};
  std::mutex reads_mu_;
  std::vector<std::string> loop_reads_;
  DeviceRef cursor_device_;
  std::string cursor_conversation_;
  std::vector<Seq> cursor_writes_;
};

// DeviceSessionFixture's read_threads: reads in fibers on the loop (4), as ternd on Redis.
constexpr size_t kInFibers = 1000;

class DeviceSessionFixture {
 protected:
  explicit DeviceSessionFixture(size_t read_threads)
      : loops_(1),
        admission_(loops_.size()),
        committer_(store_, true, 100000, 256, &loops_),
        directory_(store_, 1000),
        reads_(loops_, read_threads == kInFibers ? 0 : read_threads, read_threads == kInFibers ? 4 : 0),
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
    options_.read_threads = read_threads;  // Presence reads on its loader thread with reader threads
    store_.count_loop_reads(&loops_);
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
    store_.conversation_gate.open();
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

  // The seqs of the message frames written to bob's connection until `last` (or 10 s).
  // Bounded in time, not in rounds: each round is one quick trip to the loop, and the commit
  // that lets the message out may take a while on a loaded machine.
  std::vector<Seq> written_until(Seq last) {
    std::vector<Seq> out;
    for (const auto until = std::chrono::steady_clock::now() + 10s;
         (out.empty() || out.back() < last) && std::chrono::steady_clock::now() < until;) {
      on_loop([&] {
        for (auto& f : conn_->drain())
          if (Seq s = seq_of(f)) out.push_back(s);
      });
    }
    return out;
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

// Reads on reader threads only: what a loop does while a connect waits for the store.
class DeviceSessionOffloadedTest : public DeviceSessionFixture, public ::testing::Test {
 protected:
  DeviceSessionOffloadedTest() : DeviceSessionFixture(2) {}
  // A public channel of alice's (empty: none created), bob connected and synced.
  std::string channel_with_bob_connected() {
    std::promise<Result<ConversationInfo>> created;
    sequencer_.create_conversation(DeviceRef{"alice", 1}, proto::CreateConversationRequest{true, "ch", {}, true, true},
                                   [&](Result<ConversationInfo> r) { created.set_value(r); });
    auto ch = created.get_future().get();
    EXPECT_TRUE(ch);
    connect_bob(1 << 20);
    drain_until_synced();
    return ch ? ch->conversation_id : "";
  }
  // `user`'s row of `channel` (joined at 1, left at `left_seq`, 0: still in) written to the
  // store behind the session's back, as another node would.
  void put_subscription(const std::string& user, const std::string& channel, Seq left_seq) {
    store::Batch b;
    b.add(store::PutSubscription{user, store::UserConversation{channel, 1, left_seq, true}});
    ASSERT_TRUE(store_.commit(b, true).ok());
  }
  // Bob's frame `type` (ack or read) of `seq` on the session's loop, the loop reads counted
  // from here.
  void mark_on_loop(const std::string& type, const std::string& channel, Seq seq) {
    store_.clear_loop_reads();
    on_loop([&] {
      session_->on_text(R"({"type":")" + type + R"(","conversation_id":")" + channel + R"(","seq":)" +
                        std::to_string(seq) + "}");
    });
  }
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
                  proto::SendFrame{"direct-away", direct->conversation_id, std::string("aGk="), {}, {}, {}, false, {}},
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

// Frames published to a user, as a bus endpoint sees them (any thread).
class RecordingEndpoint final : public bus::Endpoint {
 public:
  void notify(std::shared_ptr<const bus::Notification> n) override {
    if (!n->frame) return;
    std::lock_guard lock(mu_);
    frames_.push_back(*n->frame);
  }
  void replaced() override {}
  // Whether a frame containing `needle` arrived within 10 s.
  bool await(const std::string& needle) {
    for (const auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
      {
        std::lock_guard lock(mu_);
        for (const auto& f : frames_)
          if (f.find(needle) != std::string::npos) return true;
      }
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  size_t count(const std::string& needle) {
    std::lock_guard lock(mu_);
    return static_cast<size_t>(std::count_if(frames_.begin(), frames_.end(), [&](const std::string& f) {
      return f.find(needle) != std::string::npos;
    }));
  }
  // Whether `n` frames containing `needle` arrived within 10 s.
  bool await_count(const std::string& needle, size_t n) {
    for (const auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
      if (count(needle) >= n) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> frames_;
};

// Drains bob's connection until a frame containing `needle` was written (bounded).
bool await_written(DeviceSessionFixture& f, const std::function<std::vector<std::string>()>& drain,
                   const std::string& needle) {
  (void)f;
  for (const auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
    for (const auto& frame : drain())
      if (frame.find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

// Whether the device's stored cursor of `conv` became `want` within 10 s (acks commit later).
bool await_cursor(store::Store& s, const DeviceRef& device, const std::string& conv, Seq want) {
  for (const auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
    auto c = s.cursor(device, conv);
    if (c && *c == want) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

// A typing frame whose conversation snapshot was evicted from the Directory: in Redis mode
// the snapshot is read on Presence's loader thread, not on the session's loop, and the frame
// is relayed afterwards; a typing frame naming an unknown conversation gets its error frame.
TEST_F(DeviceSessionOffloadedTest, ATypingFrameOnAColdConversationReadsNothingOnTheLoop) {
  auto alice = std::make_shared<RecordingEndpoint>();
  bus_.attach(DeviceRef{"alice", 1}, alice);
  connect_bob(1 << 20);
  drain_until_synced();
  directory_.forget_conversation(conv_);
  store_.clear_loop_reads();
  on_loop([&] { session_->on_text(R"({"type":"typing","conversation_id":")" + conv_ + R"(","active":true})"); });
  EXPECT_TRUE(alice->await(R"("type":"typing")")) << "the typing frame was not relayed";
  EXPECT_TRUE(store_.loop_reads().empty()) << store_.loop_reads().front() << " read on the loop";
  EXPECT_NE(directory_.cached_conversation(conv_), nullptr) << "the snapshot was read into the cache";
  on_loop([&] { session_->on_text(R"({"type":"typing","conversation_id":"g-unknown","active":true})"); });
  auto drain = [&] {
    std::vector<std::string> out;
    on_loop([&] { out = conn_->drain(); });
    return out;
  };
  EXPECT_TRUE(await_written(*this, drain, R"("type":"error")")) << "no error for an unknown conversation";
  EXPECT_TRUE(store_.loop_reads().empty()) << store_.loop_reads().front() << " read on the loop";
}

// The same in a direct conversation, whose relay consults both users' block lists: lists not
// in the cache are read on the loader thread too, and the frame is relayed afterwards.
TEST_F(DeviceSessionOffloadedTest, ATypingFrameWithColdBlockListsReadsNothingOnTheLoop) {
  Blocks blocks(store_, committer_, 100);
  presence_.set_privacy(nullptr, &blocks);
  std::promise<Result<ConversationInfo>> created;
  sequencer_.create_conversation(DeviceRef{"alice", 1}, proto::CreateConversationRequest{false, "", {"bob"}},
                                 [&](Result<ConversationInfo> r) { created.set_value(r); });
  auto direct = created.get_future().get();
  ASSERT_TRUE(direct) << direct.error().message;
  auto alice = std::make_shared<RecordingEndpoint>();
  bus_.attach(DeviceRef{"alice", 1}, alice);
  connect_bob(1 << 20);
  drain_until_synced();
  store_.clear_loop_reads();
  on_loop([&] {
    session_->on_text(R"({"type":"typing","conversation_id":")" + direct->conversation_id + R"(","active":true})");
  });
  const bool relayed = alice->await(R"("type":"typing")");
  presence_.set_privacy(nullptr, nullptr);
  EXPECT_TRUE(relayed) << "the typing frame was not relayed";
  EXPECT_TRUE(store_.loop_reads().empty()) << store_.loop_reads().front() << " read on the loop";
  EXPECT_TRUE(blocks.cached("alice") && blocks.cached("bob")) << "both block lists were read into the cache";
}

// Channels: an ack of a channel the session does not follow, joins, leaves, info and an
// admin's changes. The subscribers' index rows, the joiner's user index and the head are read
// on reader threads, never on a loop; the answers are the same as with inline reads.
TEST_F(DeviceSessionOffloadedTest, ChannelAcksJoinsLeavesAndChangesReadNoRowOnALoop) {
  const std::string channel = channel_with_bob_connected();
  ASSERT_FALSE(channel.empty());
  auto drain = [&] {
    std::vector<std::string> out;
    on_loop([&] { out = conn_->drain(); });
    return out;
  };

  // Not a subscriber: refused as before (forbidden), without a read on a loop.
  mark_on_loop("ack", channel, 1);
  EXPECT_TRUE(await_written(*this, drain, R"("code":"forbidden")")) << "a stranger's ack was not refused";
  EXPECT_TRUE(store_.loop_reads().empty()) << store_.loop_reads().front() << " read on a loop";

  // Bob's subscription row is written to the store behind the session's back (as on another
  // node, before its notice arrives): the session does not follow the channel. A post, then
  // bob's read marker: it moves the cursor, with the row read on a reader thread.
  ASSERT_NO_FATAL_FAILURE(put_subscription("bob", channel, 0));
  std::promise<Result<SentInfo>> posted;
  sequencer_.send(DeviceRef{"alice", 1}, proto::SendFrame{"post", channel, std::string("aGk="), {}, {}, {}, false, {}}, 0,
                  [&](Result<SentInfo> r) { posted.set_value(std::move(r)); });
  auto post = posted.get_future().get();
  ASSERT_TRUE(post);
  mark_on_loop("read", channel, post->seq);
  EXPECT_TRUE(await_cursor(store_, DeviceRef{"bob", 1}, channel, post->seq))
      << "the subscriber's read marker did not move its cursor";
  EXPECT_TRUE(store_.loop_reads().empty()) << store_.loop_reads().front() << " read on a loop";
  for (const auto& f : drain()) EXPECT_EQ(f.find(R"("type":"error")"), std::string::npos) << f;

  // Joins (through the sequencer, as POST /v1/channels/{id}/join does): a new user's, again
  // (the same joined_seq), and bob's, whose row is there already.
  {
    store::Batch b;
    b.add(store::PutUser{"carol", 1});
    b.add(store::PutDevice{DeviceRef{"carol", 1}, "tok-carol"});
    ASSERT_TRUE(store_.commit(b, true).ok());
  }
  auto join = [&](const char* user) {
    std::promise<Result<SubscriptionInfo>> p;
    sequencer_.join_channel(DeviceRef{user, 1}, channel, [&](Result<SubscriptionInfo> r) { p.set_value(r); });
    return p.get_future().get();
  };
  store_.clear_loop_reads();
  auto joined = join("carol");
  ASSERT_TRUE(joined) << joined.error().message;
  EXPECT_EQ(joined->joined_seq, post->seq + 1);
  EXPECT_EQ(joined->subscribers, 2u);
  auto again = join("carol");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->joined_seq, joined->joined_seq);
  EXPECT_EQ(again->subscribers, 2u);
  auto bob = join("bob");
  ASSERT_TRUE(bob) << bob.error().message;
  EXPECT_EQ(bob->joined_seq, 1u);
  // The channel's info (GET /v1/conversations/{id}, here from the test's thread as from a
  // reader thread): its committed head is not read on the channel's loop.
  {
    KeyedRateLimiter limiter(1, 1, 16);
    ChannelApi api(ctx_, limiter);
    std::promise<gateway::HttpResponse> p;
    api.info(DeviceRef{"carol", 1}, channel, [&](gateway::HttpResponse r) { p.set_value(std::move(r)); });
    auto info = p.get_future().get();
    EXPECT_EQ(info.status, 200) << info.body;
    EXPECT_NE(info.body.find(R"("head":)" + std::to_string(post->seq)), std::string::npos) << info.body;
  }
  // Leaves: carol's, then again (not subscribed any more: nothing changes).
  for (int i = 0; i < 2; ++i) {
    std::promise<Result<uint64_t>> p;
    sequencer_.leave_channel(DeviceRef{"carol", 1}, channel, [&](Result<uint64_t> r) { p.set_value(r); });
    auto left = p.get_future().get();
    ASSERT_TRUE(left) << left.error().message;
    EXPECT_EQ(*left, 1u);
  }
  EXPECT_TRUE(store_.loop_reads().empty()) << store_.loop_reads().front() << " read on a loop";

  // An admin's changes: carol added and removed as a subscriber, a non-admin refused, carol
  // named an admin.
  auto subscribers = [&](const char* actor, std::vector<std::string> add, std::vector<std::string> remove) {
    std::promise<Result<uint64_t>> p;
    sequencer_.change_subscribers(DeviceRef{actor, 1}, channel, proto::MembersRequest{std::move(add), std::move(remove)},
                                  [&](Result<uint64_t> r) { p.set_value(r); });
    return p.get_future().get();
  };
  store_.clear_loop_reads();
  auto added = subscribers("alice", {"carol"}, {});
  ASSERT_TRUE(added) << added.error().message;
  EXPECT_EQ(*added, 2u);
  auto removed = subscribers("alice", {}, {"carol"});
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_EQ(*removed, 1u);
  auto refused = subscribers("bob", {"carol"}, {});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kForbidden) << "bob is a subscriber: told it may not";
  std::promise<Result<std::vector<std::string>>> named;
  sequencer_.change_admins(DeviceRef{"alice", 1}, channel, proto::MembersRequest{{"carol"}, {}},
                           [&](Result<std::vector<std::string>> r) { named.set_value(r); });
  auto admins = named.get_future().get();
  ASSERT_TRUE(admins) << admins.error().message;
  EXPECT_EQ(*admins, (std::vector<std::string>{"alice", "carol"}));
  EXPECT_TRUE(store_.loop_reads().empty()) << store_.loop_reads().front() << " read on a loop";
}

// A former subscriber's ack of a channel the session does not follow: the session reads the
// row (left_seq set) on a reader thread and hands it to the sequencer with the ack, which
// clamps the cursor to left_seq without reading the row again. With the sequencer reading it
// again this records 1 read on a loop (the index row).
TEST_F(DeviceSessionOffloadedTest, AFormerSubscribersChannelAckReadsNoRowOnALoop) {
  const std::string channel = channel_with_bob_connected();
  ASSERT_FALSE(channel.empty());
  auto post = [&](const std::string& cmid) {
    std::promise<Result<SentInfo>> posted;
    sequencer_.send(DeviceRef{"alice", 1}, proto::SendFrame{cmid, channel, std::string("aGk="), {}, {}, {}, false, {}}, 0,
                    [&](Result<SentInfo> r) { posted.set_value(std::move(r)); });
    return posted.get_future().get();
  };
  auto first = post("p-1");
  ASSERT_TRUE(first) << first.error().message;
  auto second = post("p-2");
  ASSERT_TRUE(second) << second.error().message;
  // Bob was subscribed from seq 1 and left after the first post (written behind the
  // session's back, as on another node): his view ends there.
  ASSERT_NO_FATAL_FAILURE(put_subscription("bob", channel, first->seq));
  mark_on_loop("ack", channel, second->seq);
  EXPECT_TRUE(await_cursor(store_, DeviceRef{"bob", 1}, channel, first->seq))
      << "the former subscriber's ack did not move its cursor to left_seq";
  EXPECT_TRUE(store_.loop_reads().empty()) << store_.loop_reads().front() << " read on a loop";
  auto drain = [&] {
    std::vector<std::string> out;
    on_loop([&] { out = conn_->drain(); });
    return out;
  };
  for (const auto& f : drain()) EXPECT_EQ(f.find(R"("type":"error")"), std::string::npos) << f;
  auto c = store_.cursor(DeviceRef{"bob", 1}, channel);
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, first->seq) << "the cursor went beyond left_seq";
}

// A media upload's body decision (its bearer token check and the user's quota, store reads)
// is made on a reader thread in Redis mode, never on the HTTP session's loop; a bad token is
// refused from there as well.
TEST_F(DeviceSessionOffloadedTest, AnUploadsBodyDecisionReadsNothingOnTheLoop) {
  auto blobs = store::FsBlobStore::open_at(::testing::TempDir() + "edgereads-media-" + std::to_string(getpid()));
  ASSERT_TRUE(blobs) << blobs.error().message;
  {
    store::Batch b;
    b.add(store::PutDevice{DeviceRef{"bob", 2}, hash_token("upload-secret")});
    ASSERT_TRUE(store_.commit(b, true).ok());
  }
  bus::LocalBus bus;
  ServiceOptions o;
  o.read_threads = 2;
  TernService service(loops_, store_, bus, o, "", blobs->get());
  auto decide = [&](const std::string& token) {
    gateway::HttpRequest head;
    head.method = "POST";
    head.path = "/v1/media";
    head.bearer_token = token;
    head.content_length = 10;
    auto p = std::make_shared<std::promise<gateway::BodyDecision>>();
    loops_.post(0, [&service, head, p] { service.decide_body(head, [p](gateway::BodyDecision d) { p->set_value(std::move(d)); }); });
    auto f = p->get_future();
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  };
  store_.clear_loop_reads();
  {
    auto d = decide("upload-secret");
    EXPECT_TRUE(std::holds_alternative<std::shared_ptr<gateway::BodySink>>(d)) << "the upload is streamed";
  }  // the sink is dropped unfinished
  auto refused = decide("wrong");
  ASSERT_TRUE(std::holds_alternative<gateway::HttpResponse>(refused));
  EXPECT_EQ(std::get<gateway::HttpResponse>(refused).status, 401);
  EXPECT_TRUE(store_.loop_reads().empty()) << store_.loop_reads().front() << " read on the loop";
  service.stop();
}

// Acks waiting behind an ack's membership read (Redis mode, the snapshot not cached): while
// that read is held, the next kMaxWaitingAcks acks wait in order without an answer; the ones
// beyond are answered `overloaded` at once (no `ref`: ack errors carry none, protocol.md
// §5.2) and never applied. Once the read is back the waiting acks run in arrival order: the
// cursor is a blind put, so the recorded cursor writes show both the order and the absence
// of the refused acks (given seqs that no waiting ack has).
TEST_F(DeviceSessionOffloadedTest, AcksBeyondTheWaitingBoundAreOverloadedAndTheRestRunInOrder) {
  constexpr size_t kWaiting = DeviceSession::kMaxWaitingAcks;
  constexpr size_t kBeyond = 5;
  constexpr Seq kTop = kWaiting + 2;  // the held ack's seq; the waiting ones count down to 2
  for (Seq s = 2; s <= kTop; ++s) send("alice", "m" + std::to_string(s));  // 1 is the creation
  connect_bob(1 << 20);
  drain_until_synced();
  store_.record_cursors(DeviceRef{"bob", 1}, conv_);
  directory_.forget_conversation(conv_);  // the ack's membership is read on a reader thread
  store_.conversation_gate.arm();
  auto ack = [&](Seq seq) {
    session_->on_text(R"({"type":"ack","conversation_id":")" + conv_ + R"(","seq":)" + std::to_string(seq) + "}");
  };
  on_loop([&] { ack(kTop); });
  ASSERT_TRUE(store_.conversation_gate.await_arrived()) << "the ack's membership read never came";
  std::vector<std::string> written;
  on_loop([&] {
    for (Seq s = kTop - 1; s >= 2; --s) ack(s);   // kWaiting acks: they wait
    for (size_t i = 0; i < kBeyond; ++i) ack(1);  // beyond the bound
    written = conn_->drain();
  });
  ASSERT_EQ(written.size(), kBeyond) << "only the acks beyond the bound are answered while the read is held";
  for (const auto& f : written) {
    EXPECT_NE(f.find(R"("type":"error")"), std::string::npos) << f;
    EXPECT_NE(f.find(R"("code":"overloaded")"), std::string::npos) << f;
    EXPECT_EQ(f.find(R"("ref")"), std::string::npos) << "an ack's error carries no ref: " << f;
  }
  EXPECT_TRUE(store_.cursor_writes().empty()) << "an ack ran before its membership read was back";
  store_.conversation_gate.open();
  // The read's answer hands the held ack and then every waiting one to the sequencer in one
  // loop turn; the held ack's cursor write comes after that turn.
  std::vector<Seq> writes;
  for (const auto until = std::chrono::steady_clock::now() + 20s;
       writes.empty() && std::chrono::steady_clock::now() < until;) {
    writes = store_.cursor_writes();
    if (writes.empty()) std::this_thread::sleep_for(5ms);
  }
  ASSERT_FALSE(writes.empty()) << "the held ack never ran";
  // A last ack, with the snapshot cached now, goes straight to the sequencer, behind the
  // waiting ones (one conversation's acks run in order there): once its seq is written,
  // everything before it was.
  on_loop([&] { ack(kTop); });
  for (const auto until = std::chrono::steady_clock::now() + 20s;
       (writes.empty() || writes.back() != kTop || writes.size() < kWaiting + 2) && std::chrono::steady_clock::now() < until;) {
    writes = store_.cursor_writes();
    if (writes.size() < kWaiting + 2) std::this_thread::sleep_for(5ms);
  }
  std::vector<Seq> expected;
  for (Seq s = kTop; s >= 2; --s) expected.push_back(s);  // the held ack, then the waiting ones
  expected.push_back(kTop);                               // the last ack
  EXPECT_EQ(writes, expected);
  auto c = store_.cursor(DeviceRef{"bob", 1}, conv_);
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, kTop);
  std::vector<std::string> later;
  on_loop([&] { later = conn_->drain(); });
  for (const auto& f : later) EXPECT_EQ(f.find(R"("type":"error")"), std::string::npos) << f;
}

// Typing frames on a cache miss (Redis mode) queue for Presence's loader thread: while it is
// held in the snapshot's read, kMaxPendingLoads more wait; the ones beyond are dropped
// (typing is lossy: no error) and counted in tern_typing_dropped_total. Once the read is
// back, the held frame and every waiting one are relayed (interval 0: nothing coalesced).
TEST_F(DeviceSessionOffloadedTest, TypingBeyondTheLoadersQueueIsDroppedAndCounted) {
  options_.typing_interval_ms = 0;
  constexpr size_t kWaiting = Presence::kMaxPendingLoads;
  constexpr size_t kBeyond = 7;
  const std::string typing = R"("type":"typing")";
  Counter& dropped = MetricsRegistry::global().counter("tern_typing_dropped_total", "");
  auto alice = std::make_shared<RecordingEndpoint>();
  bus_.attach(DeviceRef{"alice", 1}, alice);
  const DeviceRef bob{"bob", 1};
  directory_.forget_conversation(conv_);
  store_.conversation_gate.arm();
  ASSERT_TRUE(presence_.typing(bob, conv_, true));
  ASSERT_TRUE(store_.conversation_gate.await_arrived()) << "the loader never read the snapshot";
  const uint64_t before = dropped.value();
  for (size_t i = 0; i < kWaiting + kBeyond; ++i) ASSERT_TRUE(presence_.typing(bob, conv_, true));
  EXPECT_EQ(dropped.value() - before, kBeyond);
  EXPECT_EQ(alice->count(typing), 0u) << "relayed while the loader was held";
  store_.conversation_gate.open();
  EXPECT_TRUE(alice->await_count(typing, kWaiting + 1)) << alice->count(typing) << " relayed";
  // One more on a miss queues behind anything left: once it is relayed, the loader ran all
  // that was queued before it.
  directory_.forget_conversation(conv_);
  ASSERT_TRUE(presence_.typing(bob, conv_, false));
  EXPECT_TRUE(alice->await(R"("active":false)"));
  EXPECT_EQ(alice->count(typing), kWaiting + 2);
  EXPECT_EQ(dropped.value() - before, kBeyond);
}

}  // namespace
}  // namespace tern::services
