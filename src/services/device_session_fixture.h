// What the DeviceSession tests share (device_session_test.cc,
// device_session_offloaded_test.cc): a fake Connection whose queue drains only when the test
// says so, a store whose reads can be held at a gate and that counts the reads made on a loop,
// and the fixture that builds the rest for real (loops, group committer, sequencer, bus) on
// the in-memory store fake. Ownership: each test owns its fixture. Thread-safety: the fake
// connection and the gated store are used from the loops, the readers and the test thread
// (their own mutexes and atomics).
#pragma once
#include <gtest/gtest.h>

#include "services/device_session.h"

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

namespace tern::services::sessiontest {

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
    {
      std::lock_guard lock(limits_mu_);
      page_limits_.push_back(limit);
    }
    return MemoryStore::read_messages(conversation_id, after_seq, limit);
  }
  Gate inbox_gate;
  Gate page_gate;
  // The `limit` of every read_messages() so far (replay pages ask for what fits the queue).
  std::vector<size_t> page_limits() {
    std::lock_guard lock(limits_mu_);
    return page_limits_;
  }

  // Reads of the membership and index rows made on a loop thread (Loops::here()), by name:
  // in Redis mode none of them may be made there.
  Result<std::optional<store::Conversation>> conversation(const std::string& id) override {
    note("conversation");
    if (!in_batch_) ++conversation_calls;
    conversation_gate.pass();
    return MemoryStore::conversation(id);
  }
  Gate conversation_gate;  // a membership snapshot's read (Directory::conversation on a miss)
  // Calls of the reads a connect's opening batches (session_reads_test.cc): snapshots one by
  // one (outside conversations_of) and together, cursors one by one and together.
  Result<std::vector<std::optional<store::Conversation>>> conversations_of(const std::vector<std::string>& ids) override {
    ++conversations_of_calls;
    in_batch_ = true;  // the contract's default answers through conversation()
    auto r = MemoryStore::conversations_of(ids);
    in_batch_ = false;
    return r;
  }
  Result<Seq> cursor(const DeviceRef& device, const std::string& conversation_id) override {
    if (!in_batch_) ++cursor_calls;
    return MemoryStore::cursor(device, conversation_id);
  }
  Result<std::vector<Seq>> cursors(const DeviceRef& device, const std::vector<std::string>& conversation_ids) override {
    ++cursors_calls;
    in_batch_ = true;
    auto r = MemoryStore::cursors(device, conversation_ids);
    in_batch_ = false;
    return r;
  }
  Result<std::vector<store::ReceiptState>> receipts(const std::string& conversation_id) override {
    if (!in_batch_) ++receipts_calls;
    return MemoryStore::receipts(conversation_id);
  }
  Result<std::vector<std::vector<store::ReceiptState>>> receipts_of(const std::vector<std::string>& ids) override {
    ++receipts_of_calls;
    in_batch_ = true;
    auto r = MemoryStore::receipts_of(ids);
    in_batch_ = false;
    return r;
  }
  std::atomic<int> receipts_calls{0};
  std::atomic<int> receipts_of_calls{0};
  std::atomic<int> conversation_calls{0};
  std::atomic<int> conversations_of_calls{0};
  std::atomic<int> cursor_calls{0};
  std::atomic<int> cursors_calls{0};

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
  std::mutex limits_mu_;
  std::vector<size_t> page_limits_;
  void note(const char* what) {
    const Loops* loops = loops_.load();
    if (!loops || loops->here() == Loops::kNone) return;
    std::lock_guard lock(reads_mu_);
    loop_reads_.push_back(what);
  }
  static inline thread_local bool in_batch_ = false;  // within conversations_of() or cursors() on this thread
  std::atomic<const Loops*> loops_{nullptr};
  std::mutex reads_mu_;
  std::vector<std::string> loop_reads_;
  DeviceRef cursor_device_;
  std::string cursor_conversation_;
  std::vector<Seq> cursor_writes_;
};

// DeviceSessionFixture's read_threads: reads in fibers on the loop (4), as ternd on Redis.
inline constexpr size_t kInFibers = 1000;

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
    sequencer_.send(DeviceRef{user, 1}, proto::SendFrame{cmid, conv_, std::string("aGk="), {}, {}, {}, false, {}, {}}, 0,
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
  std::atomic<int64_t> skew_us_{0};  // the bus's clock minus the system's
  bus::LocalBus bus_{[this] { return tern::wall_us() + skew_us_.load(); }};
  Accounts accounts_;
  Sequencer sequencer_;
  Presence presence_;
  LiveFanout fanout_;
  ServiceContext ctx_;
  std::string conv_;
  std::shared_ptr<FakeConnection> conn_;
  std::shared_ptr<DeviceSession> session_;
};

}  // namespace tern::services::sessiontest
