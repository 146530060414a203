// Unit tests of several nodes sequencing one conversation on one shared store: each "node"
// is a full Sequencer (its loops, group committer, directory, bus) on its own MemoryStore,
// and the MemoryStores share one State with dense appends on, as RedisStore does for ternd.
// A node whose head was behind (another node appended first) must sequence its sends again
// without any client-visible failure (GroupCommitter::kBehind, Sender::kMaxAttempts).
#include <gtest/gtest.h>

#include <atomic>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <unistd.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "bus/local/local_bus.h"
#include "proto/frames.h"
#include "services/accounts.h"
#include "services/media.h"
#include "services/sequencer.h"
#include "store/fs/fs_blob_store.h"
#include "store/memory/memory_store.h"

namespace tern::services {
namespace {

using namespace std::chrono_literals;

// A MemoryStore whose commit() can be held at a gate: while the gate is closed each commit
// waits until the test lets it through (one at a time), so a test decides how the committer's
// commits interleave with the work on the loops.
class GatedStore : public store::MemoryStore {
 public:
  using MemoryStore::MemoryStore;
  Result<void> commit(const store::Batch& batch, bool sync) override {
    {
      std::unique_lock lock(mu_);
      if (closed_) {
        const int me = arrived_++;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !closed_ || released_ > me; });
      }
      // A shared store out of reach: nothing of the batch is applied.
      if (unavailable_) return make_error(ErrorCode::kUnavailable, "injected: store out of reach");
    }
    return MemoryStore::commit(batch, sync);
  }
  void set_unavailable(bool on) {
    std::lock_guard lock(mu_);
    unavailable_ = on;
  }
  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  void open() {
    std::lock_guard lock(mu_);
    closed_ = false;
    cv_.notify_all();
  }
  // Lets the oldest held commit through.
  void release_one() {
    std::lock_guard lock(mu_);
    ++released_;
    cv_.notify_all();
  }
  // Whether `n` commits reached the closed gate within 10 s.
  bool await_arrived(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return arrived_ >= n; });
  }
  // Reads made on one of `loops`' threads (set by the node): with reader threads, none.
  Loops* loops = nullptr;
  std::atomic<int> reads_on_loops{0};
  void note() {
    if (loops && loops->here() != Loops::kNone) ++reads_on_loops;
  }
  Result<std::vector<uint32_t>> devices(const std::string& user) override {
    note();
    ++devices_calls;
    return MemoryStore::devices(user);
  }
  // One call for several users: a store over the network pipelines it (counted on its own).
  Result<std::vector<std::vector<uint32_t>>> devices_of(const std::vector<std::string>& users) override {
    note();
    ++devices_of_calls;
    devices_of_users += static_cast<int>(users.size());
    std::vector<std::vector<uint32_t>> out;
    for (const auto& u : users) out.push_back(MemoryStore::devices(u).value());
    return out;
  }
  std::atomic<int> devices_calls{0}, devices_of_calls{0}, devices_of_users{0};
  Result<std::optional<store::Conversation>> conversation(const std::string& id) override {
    note();
    return MemoryStore::conversation(id);
  }
  Result<std::optional<store::UserConversation>> user_conversation(const std::string& user,
                                                                   const std::string& id) override {
    note();
    // Before the read off the loops, as on_log_read: what happens while it is out.
    if (on_row_read && (!loops || loops->here() == Loops::kNone)) on_row_read();
    return MemoryStore::user_conversation(user, id);
  }
  std::function<void()> on_row_read;  // set before the reads it watches
  Result<std::vector<store::StoredMessage>> read_messages(const std::string& id, Seq after, size_t limit) override {
    note();
    ++log_reads;
    auto out = MemoryStore::read_messages(id, after, limit);
    // Runs after the read off the loops, before its result is back on the loop (a move of
    // what the loop remembers while the read is out).
    if (on_log_read && (!loops || loops->here() == Loops::kNone)) on_log_read();
    return out;
  }
  std::atomic<int> log_reads{0};
  std::function<void()> on_log_read;  // set before the reads it watches
  // Idempotency reads wait while held, as head reads do (hold_idempotency).
  Result<std::optional<store::IdempotencyRecord>> idempotency(const DeviceRef& d, const std::string& cmid,
                                                              int64_t now) override {
    note();
    wait_while_held(idempotency_held_, idempotency_waiting_);
    return MemoryStore::idempotency(d, cmid, now);
  }
  void hold_idempotency(bool held) { set_held(idempotency_held_, held); }
  bool await_idempotency_waiting(int n) { return await_waiting(idempotency_waiting_, n); }
  Result<std::vector<store::MediaOwner>> media_owners(const std::string& id) override {
    note();
    return MemoryStore::media_owners(id);
  }
  Result<std::vector<store::MediaRef>> media_refs(const std::string& id, size_t limit) override {
    note();
    return MemoryStore::media_refs(id, limit);
  }
  Result<std::vector<store::ReceiptState>> receipts(const std::string& id) override {
    note();
    return MemoryStore::receipts(id);
  }
  Result<std::vector<std::pair<std::string, std::string>>> user_records(const std::string& user,
                                                                       const std::string& prefix,
                                                                       size_t limit) override {
    note();
    return MemoryStore::user_records(user, prefix, limit);
  }
  // Head reads wait while held (a store that is slow to answer); counts those that waited.
  Result<Seq> head(const std::string& conversation_id) override {
    note();
    wait_while_held(reads_held_, reads_waiting_);
    return MemoryStore::head(conversation_id);
  }
  void hold_reads(bool held) { set_held(reads_held_, held); }
  bool await_reads_waiting(int n) { return await_waiting(reads_waiting_, n); }

 private:
  // A read of a kind that is held waits until it is let go; `waiting` counts those that did.
  void wait_while_held(const bool& held, int& waiting) {
    std::unique_lock lock(mu_);
    if (!held) return;
    ++waiting;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !held; });
  }
  void set_held(bool& flag, bool held) {
    std::lock_guard lock(mu_);
    flag = held;
    cv_.notify_all();
  }
  // Whether `n` reads of a held kind waited within 10 s.
  bool await_waiting(const int& waiting, int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return waiting >= n; });
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  int arrived_ = 0;
  int released_ = 0;
  bool reads_held_ = false;
  int reads_waiting_ = 0;
  bool idempotency_held_ = false;
  int idempotency_waiting_ = 0;
  bool unavailable_ = false;
};

// A node's bus: local delivery, and (once `to` is set) every conversation's sends routed to
// node `to`, whose Sequencer::serve_forwarded (`serve`) answers them, as over Redis.
class RoutingBus : public bus::Bus {
 public:
  size_t attach(const DeviceRef& d, std::shared_ptr<bus::Endpoint> e) override { return local.attach(d, std::move(e)); }
  size_t detach(const DeviceRef& d, const bus::Endpoint* e) override { return local.detach(d, e); }
  bool publish(const DeviceRef& d, const std::shared_ptr<const bus::Notification>& n) override {
    return local.publish(d, n);
  }
  void publish_user(const std::string& user, const std::shared_ptr<const bus::Notification>& n) override {
    local.publish_user(user, n);
  }
  bool online(const std::string& user) override { return local.online(user); }
  void disconnect(const DeviceRef& d) override { local.disconnect(d); }
  std::string route(const std::string&) override { return to; }
  void request(const std::string& node, std::string payload, Reply reply) override {
    (void)node;
    serve(std::move(payload), [reply = std::move(reply)](std::string response) { reply(std::move(response)); });
  }
  bus::LocalBus local;
  std::string to;  // set before the sends that use it
  std::function<void(std::string, std::function<void(std::string)>)> serve;
};

struct Node {
  explicit Node(std::shared_ptr<store::MemoryStore::State> state, size_t directory_capacity = Directory::kDefaultCapacity)
      : store(std::move(state)),
        loops(2),
        committer(store, /*sync*/ true, /*queue*/ 100000, /*max_batch*/ 64, &loops),
        directory(store, directory_capacity),
        sequencer(loops, store, reads, committer, directory, bus, options) {
    store.dense_appends(true);
    store.loops = &loops;
    loops.start();
    committer.start();
  }
  // Media (issue 11) for the sends of this node: blobs under `dir` (check_send reads only the
  // store's media rows; the worker and sweep threads are not started).
  void enable_media(const std::string& dir) {
    auto fs = store::FsBlobStore::open_at(dir);
    ASSERT_TRUE(fs) << fs.error().message;
    blobs = std::move(*fs);
    accounts = std::make_unique<Accounts>(store, committer, directory, options);
    media = std::make_unique<Media>(options, store, *blobs, committer, directory, *accounts, draining);
    sequencer.set_media(media.get());
  }
  ~Node() {
    store.open();
    store.hold_reads(false);
    store.hold_idempotency(false);
    reads.stop();
    committer.stop();
    loops.stop();
    loops.join();
  }
  GatedStore store;
  ServiceOptions options;
  Loops loops;
  GroupCommitter committer;
  Directory directory;
  StoreReads reads{loops, 2};  // off the loops, as with Redis
  RoutingBus bus;
  Sequencer sequencer;
  std::atomic<bool> draining{false};
  std::unique_ptr<store::FsBlobStore> blobs;
  std::unique_ptr<Accounts> accounts;
  std::unique_ptr<Media> media;
};

// A device's connection as the bus sees it: keeps the frames (receipts) it is sent.
class FrameInbox : public bus::Endpoint {
 public:
  void notify(std::shared_ptr<const bus::Notification> n) override {
    if (n->kind != bus::Notification::Kind::kFrame || !n->frame) return;
    std::lock_guard lock(mu_);
    frames_.push_back(*n->frame);
    cv_.notify_all();
  }
  void replaced() override {}
  // Whether a frame containing every one of `parts` arrived within 10 s.
  bool await_frame(const std::vector<std::string>& parts) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] {
      return std::any_of(frames_.begin(), frames_.end(), [&](const std::string& f) {
        return std::all_of(parts.begin(), parts.end(), [&](const std::string& p) { return f.find(p) != std::string::npos; });
      });
    });
  }
  size_t count() {
    std::lock_guard lock(mu_);
    return frames_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> frames_;
};

uint64_t resequenced() {
  return MetricsRegistry::global()
      .counter("tern_sends_resequenced_total",
               "sends sequenced again because another node had appended to the conversation first")
      .value();
}

uint64_t changes_resequenced() {
  return MetricsRegistry::global()
      .counter("tern_membership_changes_resequenced_total",
               "membership and timer changes sequenced again because another node had appended to the conversation first")
      .value();
}

// How many stored frames contain `needle`.
size_t frames_with(const std::vector<store::StoredMessage>& log, const std::string& needle) {
  return static_cast<size_t>(
      std::count_if(log.begin(), log.end(), [&](const auto& m) { return m.frame.find(needle) != std::string::npos; }));
}

class SequencerNodesTest : public ::testing::Test {
 protected:
  SequencerNodesTest() {
    store::Batch b;
    for (const char* u : {"alice", "bob", "carol", "dave", "erin"}) {
      b.add(store::PutUser{u, 1});
      b.add(store::PutDevice{DeviceRef{u, 1}, std::string("tok-") + u});
    }
    EXPECT_TRUE(view_.commit(b, true).ok());
    for (int i = 0; i < 3; ++i) nodes_.push_back(std::make_unique<Node>(view_.state()));
  }

  std::string create_group(Node& n, const std::string& creator, std::vector<std::string> members) {
    std::promise<Result<ConversationInfo>> p;
    auto f = p.get_future();
    proto::CreateConversationRequest req{true, "g", std::move(members)};
    n.sequencer.create_conversation(DeviceRef{creator, 1}, req, [&p](Result<ConversationInfo> r) { p.set_value(r); });
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    auto r = f.get();
    EXPECT_TRUE(r) << r.error().message;
    return r ? r->conversation_id : "";
  }

  Result<SentInfo> send(Node& n, const std::string& user, const std::string& conv, const std::string& cmid) {
    std::promise<Result<SentInfo>> p;
    auto f = p.get_future();
    proto::SendFrame frame{cmid, conv, std::string("aGk="), {}, std::nullopt, std::nullopt, false, {}, {}};
    n.sequencer.send(DeviceRef{user, 1}, frame, 0, [&p](Result<SentInfo> r) { p.set_value(std::move(r)); });
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  }

  std::future<Result<SentInfo>> send_async(Node& n, const std::string& user, const std::string& conv,
                                           const std::string& cmid, std::vector<std::string> media = {}) {
    auto p = std::make_shared<std::promise<Result<SentInfo>>>();
    proto::SendFrame frame{cmid, conv, std::string("aGk="), {}, std::nullopt, std::nullopt, false, {}, std::move(media)};
    n.sequencer.send(DeviceRef{user, 1}, frame, 0, [p](Result<SentInfo> r) { p->set_value(std::move(r)); });
    return p->get_future();
  }

  Result<std::vector<std::string>> change(Node& n, const std::string& actor, const std::string& conv,
                                          proto::MembersRequest req) {
    std::promise<Result<std::vector<std::string>>> p;
    auto f = p.get_future();
    n.sequencer.change_members(DeviceRef{actor, 1}, conv, std::move(req), [&p](auto r) { p.set_value(std::move(r)); });
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  }

  // `user`'s ack (or read mark) of `seq` on node `n`, answered later.
  std::future<Result<void>> ack_async(Node& n, const std::string& user, const std::string& conv, Seq seq,
                                      bool read = false) {
    auto p = std::make_shared<std::promise<Result<void>>>();
    n.sequencer.acknowledge(DeviceRef{user, 1}, conv, seq, read, [p](Result<void> r) { p->set_value(std::move(r)); });
    return p->get_future();
  }

  // Bob's delivered mark `seq` of `conv` on node `n`, with alice's and carol's devices
  // attached there; then whether each got bob's receipt for it (its senders did).
  void ack_and_expect_receipts(Node& n, const std::string& conv, Seq seq) {
    auto alice = std::make_shared<FrameInbox>(), carol = std::make_shared<FrameInbox>();
    n.bus.attach(DeviceRef{"alice", 1}, alice);
    n.bus.attach(DeviceRef{"carol", 1}, carol);
    std::promise<Result<void>> p;
    auto f = p.get_future();
    n.sequencer.acknowledge(DeviceRef{"bob", 1}, conv, seq, /*read=*/false, [&p](Result<void> r) { p.set_value(r); });
    ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
    auto acked = f.get();
    ASSERT_TRUE(acked) << acked.error().message;
    const std::vector<std::string> receipt{R"("type":"receipt")", R"("user":"bob")", R"("status":"delivered")",
                                           "\"seq\":" + std::to_string(seq)};
    EXPECT_TRUE(carol->await_frame(receipt)) << "carol (the sender of seq 2) got no receipt";
    EXPECT_TRUE(alice->await_frame(receipt));
  }

  Result<int64_t> set_timer(Node& n, const std::string& actor, const std::string& conv, int64_t seconds) {
    std::promise<Result<int64_t>> p;
    auto f = p.get_future();
    n.sequencer.set_timer(DeviceRef{actor, 1}, conv, seconds, [&p](auto r) { p.set_value(std::move(r)); });
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  }

  // The active members of `conv` in the shared store.
  std::set<std::string> stored_members(const std::string& conv) {
    std::set<std::string> out;
    auto c = view_.conversation(conv);
    EXPECT_TRUE(c && *c);
    if (c && *c)
      for (const auto& m : (*c)->members)
        if (m.active()) out.insert(m.user);
    return out;
  }

  store::MemoryStore view_;  // the shared data, read directly by the assertions
  std::vector<std::unique_ptr<Node>> nodes_;
};

TEST_F(SequencerNodesTest, ASendOnAHeadThatAnotherNodeMovedIsSequencedAgain) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string g = create_group(a, "alice", {"bob"});  // seq 1; node a caches head 1
  ASSERT_TRUE(send(a, "alice", g, "warm"));                  // seq 2; still cached on a
  auto theirs = send(b, "bob", g, "b-1");                    // b loads head 2: seq 3
  ASSERT_TRUE(theirs) << theirs.error().message;
  EXPECT_EQ(theirs->seq, 3u);
  const uint64_t before = resequenced();
  auto ours = send(a, "alice", g, "a-1");  // a still thinks 2: seq 3 is behind, then 4
  ASSERT_TRUE(ours) << ours.error().message;
  EXPECT_EQ(ours->seq, 4u);
  EXPECT_EQ(resequenced(), before + 1);
  // A resend of the same client_msg_id through either node gets the seq it was acknowledged with.
  auto again = send(b, "alice", g, "a-1");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->seq, 4u);
  auto log = view_.read_messages(g, 0, 100);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 4u);
  for (size_t i = 0; i < log->size(); ++i) EXPECT_EQ((*log)[i].seq, i + 1);
  EXPECT_NE((*log)[3].frame.find("\"sender\":\"alice\""), std::string::npos);
}

// Every conversation written from all three nodes at once, pipelined (no sender waits for
// its `sent`): every send succeeds, each conversation's log is dense and holds every message
// once at the seq it was acknowledged with, and one device's messages keep their order.
TEST_F(SequencerNodesTest, ThreeNodesWritingTwoConversationsAtOnceNeedNoResend) {
  const std::string g1 = create_group(*nodes_[0], "alice", {"bob", "carol"});
  const std::string g2 = create_group(*nodes_[1], "bob", {"alice", "carol"});
  constexpr int kPerSender = 60;
  const char* users[] = {"alice", "bob", "carol"};
  std::mutex mu;
  std::map<std::pair<std::string, std::string>, Seq> acked;  // (conversation, cmid) → seq
  std::vector<std::string> errors;
  std::atomic<int> answered{0};
  std::promise<void> all;
  const int total = kPerSender * 3 * 2;
  for (int i = 0; i < kPerSender; ++i) {
    for (int n = 0; n < 3; ++n) {
      for (const std::string& g : {g1, g2}) {
        const std::string cmid = std::string(users[n]) + g + "-" + std::to_string(i);  // ids are per device
        proto::SendFrame frame{cmid, g, std::string("aGk="), {}, {}, {}, false, {}, {}};
        nodes_[n]->sequencer.send(DeviceRef{users[n], 1}, frame, 0, [&, g, cmid](Result<SentInfo> r) {
          {
            std::lock_guard lock(mu);
            if (r) acked[{g, cmid}] = r->seq;
            else errors.push_back(r.error().message);
          }
          if (++answered == total) all.set_value();
        });
      }
    }
  }
  auto f = all.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  std::lock_guard lock(mu);
  ASSERT_TRUE(errors.empty()) << errors.size() << " sends failed, e.g. " << errors.front();
  ASSERT_EQ(acked.size(), static_cast<size_t>(total));
  std::set<std::pair<std::string, Seq>> distinct;
  for (const auto& [k, seq] : acked) distinct.emplace(k.first, seq);
  ASSERT_EQ(distinct.size(), acked.size()) << "two sends were acknowledged with one seq";
  for (const std::string& g : {g1, g2}) {
    auto log = view_.read_messages(g, 0, 1000);
    ASSERT_TRUE(log);
    ASSERT_EQ(log->size(), static_cast<size_t>(1 + 3 * kPerSender));  // the creation, then the sends
    for (size_t i = 0; i < log->size(); ++i) ASSERT_EQ((*log)[i].seq, i + 1) << "log of " << g << " not dense";
    for (int n = 0; n < 3; ++n) {
      Seq last = 0;
      for (int i = 0; i < kPerSender; ++i) {
        const Seq seq = acked.at({g, std::string(users[n]) + g + "-" + std::to_string(i)});
        EXPECT_GT(seq, last) << users[n] << "'s message " << i << " came before an earlier one";
        last = seq;
        const std::string& frame = (*log)[seq - 1].frame;
        EXPECT_NE(frame.find(std::string("\"sender\":\"") + users[n] + "\""), std::string::npos) << frame;
      }
    }
  }
}

// The ordering that commit a44e232 fixed, made deterministic with the gate: alice's send a-2
// is found behind, and her next send a-3 arrives (and is parked on the stale conversation)
// before a-2's completion says that a-2 must be sequenced again. a-2 must still be stored
// before a-3 (one list in arrival order stored a-3 first).
TEST_F(SequencerNodesTest, ASendFoundBehindIsStoredBeforeTheSameDevicesSendThatArrivedBeforeItsCompletion) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string g = create_group(a, "alice", {"bob"});  // seq 1; node a caches head 1
  ASSERT_TRUE(send(b, "bob", g, "b-1"));                     // seq 2, from node b
  a.store.close();
  auto first = send_async(a, "alice", g, "a-1");  // seq 2 on node a: behind
  ASSERT_TRUE(a.store.await_arrived(1));
  auto second = send_async(a, "alice", g, "a-2");  // seq 3: waits in the committer meanwhile
  // An entry that touches no conversation, committed with a-2: a-2 fails without reaching the
  // store (its conversation is behind), this one reaches the gate, which so holds back a-2's
  // completion until the test opens it.
  std::promise<Result<void>> other;
  store::Batch x;
  x.add(store::PutUser{"frank", 1});
  ASSERT_TRUE(a.committer.submit(std::move(x), [&other](const Result<void>& r) { other.set_value(r); }));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (a.committer.pending() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(a.committer.pending(), 2u);
  a.store.release_one();  // a-1 behind: its completion puts it on the retry list; a-2 in flight
  ASSERT_TRUE(a.store.await_arrived(2));  // a-1's completion was posted before this commit began
  // Posted to the owning loop after a-1's completion and before a-2's (which waits for the
  // gate): it finds the conversation stale with a-2 in flight and is parked.
  auto third = send_async(a, "alice", g, "a-3");
  a.store.open();
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(second.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(third.wait_for(10s), std::future_status::ready);
  auto r1 = first.get(), r2 = second.get(), r3 = third.get();
  ASSERT_TRUE(r1) << r1.error().message;
  ASSERT_TRUE(r2) << r2.error().message;
  ASSERT_TRUE(r3) << r3.error().message;
  EXPECT_TRUE(other.get_future().get());
  EXPECT_EQ(r1->seq, 3u);
  EXPECT_EQ(r2->seq, 4u);  // before a-3, though a-3 was parked before a-2 was known to be behind
  EXPECT_EQ(r3->seq, 5u);
  auto log = view_.read_messages(g, 0, 100);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 5u);
  for (size_t i = 0; i < log->size(); ++i) EXPECT_EQ((*log)[i].seq, i + 1);
}

// A membership change or timer built on a head another node moved is sequenced again, and run
// again on the reloaded conversation: a removal the other node already made, or a timer it
// already set, answers what one node would have answered, with no second system message.
TEST_F(SequencerNodesTest, AMembershipChangeBehindAnotherNodeIsCheckedAgainstTheReloadedConversation) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string g = create_group(a, "alice", {"bob", "carol"});  // seq 1; a caches head 1
  ASSERT_TRUE(send(b, "bob", g, "b-1"));  // seq 2; node b caches head 2 and carol as a member
  const uint64_t before = changes_resequenced();
  auto removed = change(a, "alice", g, proto::MembersRequest{{}, {"carol"}});  // behind, then seq 3
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_EQ(std::set<std::string>(removed->begin(), removed->end()), (std::set<std::string>{"alice", "bob"}));
  EXPECT_EQ(changes_resequenced(), before + 1);
  // Node b still has head 2 and carol: behind; run again, carol is gone: no change.
  auto again = change(b, "alice", g, proto::MembersRequest{{}, {"carol"}});
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(std::set<std::string>(again->begin(), again->end()), (std::set<std::string>{"alice", "bob"}));
  EXPECT_EQ(changes_resequenced(), before + 2);
  // Node a sets the timer (seq 4); node b, on head 3, is behind and then finds it set.
  auto timer = set_timer(a, "alice", g, 3600);
  ASSERT_TRUE(timer) << timer.error().message;
  auto timer_b = set_timer(b, "alice", g, 3600);
  ASSERT_TRUE(timer_b) << timer_b.error().message;
  EXPECT_EQ(*timer_b, 3600);
  EXPECT_EQ(changes_resequenced(), before + 3);
  auto log = view_.read_messages(g, 0, 100);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 4u);
  for (size_t i = 0; i < log->size(); ++i) EXPECT_EQ((*log)[i].seq, i + 1);
  EXPECT_EQ(frames_with(*log, R"("action":"remove")"), 1u);
  EXPECT_EQ(frames_with(*log, R"("action":"timer")"), 1u);
  EXPECT_EQ(stored_members(g), (std::set<std::string>{"alice", "bob"}));
  auto c = view_.conversation(g);
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->disappear_seconds, 3600);
}

// Membership changes and sends into one group from two nodes at once, pipelined: every call
// answers success, the log is dense, each system message is stored once and the stored
// membership is the expected one.
TEST_F(SequencerNodesTest, MembershipChangesAndSendsFromTwoNodesAtOnceNeedNoResend) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string g = create_group(a, "alice", {"bob", "carol"});
  ASSERT_TRUE(send(b, "bob", g, "warm"));  // node b caches the conversation too; a is behind
  constexpr int kPerSender = 40;
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::vector<std::string>> removal_answers;
  std::atomic<int> answered{0};
  std::promise<void> all;
  const int total = 4 + kPerSender * 4;
  auto finish = [&] {
    if (++answered == total) all.set_value();
  };
  auto on_change = [&](bool removal) {
    return [&, removal](Result<std::vector<std::string>> r) {
      {
        std::lock_guard lock(mu);
        if (!r) errors.push_back(r.error().message);
        else if (removal) removal_answers.push_back(*r);
      }
      finish();
    };
  };
  auto on_send = [&](Result<SentInfo> r) {
    if (!r) {
      std::lock_guard lock(mu);
      errors.push_back(r.error().message);
    }
    finish();
  };
  Node* nodes[] = {&a, &b};
  const char* added[] = {"dave", "erin"};
  for (int i = 0; i < kPerSender; ++i) {
    for (int n = 0; n < 2; ++n) {
      if (i == kPerSender / 4) nodes[n]->sequencer.change_members(DeviceRef{"alice", 1}, g, {{added[n]}, {}}, on_change(false));
      if (i == kPerSender / 2) nodes[n]->sequencer.change_members(DeviceRef{"alice", 1}, g, {{}, {"carol"}}, on_change(true));
      for (const char* u : {"alice", "bob"}) {
        const std::string cmid = std::string(u) + "-" + std::to_string(n) + "-" + std::to_string(i);
        proto::SendFrame frame{cmid, g, std::string("aGk="), {}, {}, {}, false, {}, {}};
        nodes[n]->sequencer.send(DeviceRef{u, 1}, frame, 0, on_send);
      }
    }
  }
  auto f = all.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  std::lock_guard lock(mu);
  ASSERT_TRUE(errors.empty()) << errors.size() << " calls failed, e.g. " << errors.front();
  ASSERT_EQ(removal_answers.size(), 2u);
  for (const auto& members : removal_answers)
    EXPECT_EQ(std::count(members.begin(), members.end(), "carol"), 0) << "carol still listed";
  auto log = view_.read_messages(g, 0, 1000);
  ASSERT_TRUE(log);
  // The creation, the warm-up send, two additions, one removal, the sends.
  ASSERT_EQ(log->size(), static_cast<size_t>(2 + 3 + 4 * kPerSender));
  for (size_t i = 0; i < log->size(); ++i) ASSERT_EQ((*log)[i].seq, i + 1) << "log not dense";
  EXPECT_EQ(frames_with(*log, R"("action":"add","by":"alice","users":["dave"])"), 1u);
  EXPECT_EQ(frames_with(*log, R"("action":"add","by":"alice","users":["erin"])"), 1u);
  EXPECT_EQ(frames_with(*log, R"("action":"remove","by":"alice","users":["carol"])"), 1u);
  EXPECT_EQ(stored_members(g), (std::set<std::string>{"alice", "bob", "dave", "erin"}));
}

// Channel subscriber and admin changes (no system message, so never behind) on one node while
// the owner posts from another: every call answers success, the posts' log is dense and the
// store holds the changed subscriptions and admins.
TEST_F(SequencerNodesTest, ChannelChangesOnOneNodeWhilePostsComeFromAnother) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  std::promise<Result<ConversationInfo>> created;
  proto::CreateConversationRequest req{true, "news", {}, /*channel*/ true};
  a.sequencer.create_conversation(DeviceRef{"alice", 1}, req, [&](auto r) { created.set_value(std::move(r)); });
  auto ch = created.get_future().get();
  ASSERT_TRUE(ch) << ch.error().message;
  const std::string id = ch->conversation_id;
  constexpr int kPosts = 15;  // within the channel's post burst
  std::vector<std::future<Result<SentInfo>>> posts;
  std::promise<Result<uint64_t>> subscribed;
  std::promise<Result<std::vector<std::string>>> admins;
  for (int i = 0; i < kPosts; ++i) {
    posts.push_back(send_async(a, "alice", id, "post-" + std::to_string(i)));
    if (i == kPosts / 3)
      b.sequencer.change_subscribers(DeviceRef{"alice", 1}, id, {{"carol", "dave"}, {}},
                                     [&](auto r) { subscribed.set_value(std::move(r)); });
    if (i == kPosts / 2)
      b.sequencer.change_admins(DeviceRef{"alice", 1}, id, {{"bob"}, {}}, [&](auto r) { admins.set_value(std::move(r)); });
  }
  for (auto& p : posts) {
    ASSERT_EQ(p.wait_for(10s), std::future_status::ready);
    auto r = p.get();
    EXPECT_TRUE(r) << r.error().message;
  }
  auto sub = subscribed.get_future();
  ASSERT_EQ(sub.wait_for(10s), std::future_status::ready);
  auto s = sub.get();
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(*s, 3u);  // the owner, carol and dave
  auto adm = admins.get_future();
  ASSERT_EQ(adm.wait_for(10s), std::future_status::ready);
  auto ad = adm.get();
  ASSERT_TRUE(ad) << ad.error().message;
  EXPECT_EQ(std::set<std::string>(ad->begin(), ad->end()), (std::set<std::string>{"alice", "bob"}));
  auto log = view_.read_messages(id, 0, 100);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), static_cast<size_t>(kPosts));
  for (size_t i = 0; i < log->size(); ++i) EXPECT_EQ((*log)[i].seq, i + 1);
  for (const char* u : {"bob", "carol", "dave"}) {
    auto row = view_.user_conversation(u, id);
    ASSERT_TRUE(row);
    EXPECT_TRUE(*row) << u << " is not subscribed in the store";
  }
  auto c = view_.conversation(id);
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->subscribers, 4u);
  EXPECT_TRUE(is_active_member(**c, "bob"));
}

// With reads off the loops (StoreReads, as with Redis), a conversation this node has not seen
// is read on a reader thread: while the store is slow to answer, the node's loops keep
// running, and sends of the conversation that arrive meanwhile wait for the read in order.
TEST_F(SequencerNodesTest, AColdConversationIsReadOffTheLoopsAndItsSendsKeepTheirOrder) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::string g = create_group(a, "alice", {"bob"});  // seq 1; node c has never seen it
  c.store.hold_reads(true);
  auto first = send_async(c, "bob", g, "b-1");
  auto second = send_async(c, "bob", g, "b-2");
  ASSERT_TRUE(c.store.await_reads_waiting(1));  // the head read is out, on a reader thread
  // Every loop of node c runs other work meanwhile.
  for (size_t i = 0; i < c.loops.size(); ++i) {
    std::promise<void> ran;
    auto f = ran.get_future();
    c.loops.post(i, [&ran] { ran.set_value(); });
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready) << "loop " << i << " was blocked by a store read";
  }
  EXPECT_EQ(first.wait_for(0s), std::future_status::timeout);  // both still wait for the read
  EXPECT_EQ(second.wait_for(0s), std::future_status::timeout);
  c.store.hold_reads(false);
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(second.wait_for(10s), std::future_status::ready);
  auto r1 = first.get(), r2 = second.get();
  ASSERT_TRUE(r1) << r1.error().message;
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_EQ(r1->seq, 2u);
  EXPECT_EQ(r2->seq, 3u);
}

// With reader threads, sends, acks and a timer change on a conversation the node has never
// seen read nothing on its loops: the gate's warm-up fetched the head, the snapshot, the
// device lists, the receipt marks and the recent senders, and the sends' idempotency reads
// went to the reader threads too.
TEST_F(SequencerNodesTest, SendsAcksAndATimerOnAColdConversationReadNothingOnALoop) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::string g = create_group(a, "alice", {"bob"});  // seq 1
  for (const char* cmid : {"a-1", "a-2"}) ASSERT_TRUE(send(a, "alice", g, cmid));  // seqs 2, 3
  ASSERT_EQ(c.store.reads_on_loops.load(), 0);
  auto ack = [&](const std::string& user, Seq seq) {
    std::promise<Result<void>> p;
    auto f = p.get_future();
    c.sequencer.acknowledge(DeviceRef{user, 1}, g, seq, /*read=*/true, [&p](Result<void> r) { p.set_value(r); });
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  };
  auto acked = ack("bob", 3);  // node c has never seen g
  ASSERT_TRUE(acked) << acked.error().message;
  auto sent = send(c, "bob", g, "b-1");
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_EQ(sent->seq, 4u);
  auto again = send(c, "bob", g, "b-1");  // a resend: answered from the idempotency record
  ASSERT_TRUE(again);
  EXPECT_EQ(again->seq, 4u);
  auto timer = set_timer(c, "alice", g, 60);
  ASSERT_TRUE(timer) << timer.error().message;
  EXPECT_EQ(c.store.reads_on_loops.load(), 0);
}

// A cold group's warm-up reads every member's device list with one store call (pipelined on
// Redis: one round trip, not one per member).
TEST_F(SequencerNodesTest, AColdGroupsWarmUpReadsEveryMembersDevicesInOneCall) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::string g = create_group(a, "alice", {"bob", "carol", "dave", "erin"});
  ASSERT_FALSE(g.empty());
  auto sent = send(c, "bob", g, "b-1");  // node c has never seen g
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_EQ(sent->seq, 2u);
  EXPECT_EQ(c.store.devices_of_calls.load(), 1);
  EXPECT_EQ(c.store.devices_of_users.load(), 5);
  EXPECT_EQ(c.store.devices_calls.load(), 0) << "a device list read one by one";
  EXPECT_EQ(c.store.reads_on_loops.load(), 0);
}

// With reader threads, a node whose device-list cache holds fewer users than a group has
// members reads nothing on its loops: the warm-up holds the lists it read for the send behind
// it (the cache evicted some before the send ran), and a later send into the warm group finds
// lists missing from the cache and warms up again off the loop. With the evicted lists read
// again on the loop (no hold, warm() checking only the head and the snapshot) this counts 5
// reads there after the first send and 10 after the second.
TEST_F(SequencerNodesTest, DeviceListsEvictedAfterTheWarmUpAreNotReadOnALoop) {
  Node& a = *nodes_[0];
  Node small(view_.state(), /*directory_capacity=*/2);
  const std::string g = create_group(a, "alice", {"bob", "carol", "dave", "erin"});  // seq 1
  ASSERT_FALSE(g.empty());
  auto first = send(small, "bob", g, "b-1");  // the node has never seen g
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->seq, 2u);
  EXPECT_EQ(small.store.reads_on_loops.load(), 0);
  auto second = send(small, "carol", g, "c-1");  // g is warm, 3 of its 5 device lists are not cached
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second->seq, 3u);
  EXPECT_EQ(small.store.reads_on_loops.load(), 0);
  // Every member's device has its inbox mark (the recipients were complete): the last seq
  // it did not send itself.
  for (const std::string u : {"alice", "bob", "carol", "dave", "erin"}) {
    auto inbox = view_.inbox(DeviceRef{u, 1});
    ASSERT_TRUE(inbox) << inbox.error().message;
    ASSERT_EQ(inbox->size(), 1u) << u;
    EXPECT_EQ((*inbox)[0].first, g);
    EXPECT_EQ((*inbox)[0].second, u == "carol" ? 2u : 3u) << u;
  }
}

// With reader threads, a group created on a node whose device-list cache holds fewer users
// than the group has members reads nothing on its loops: the lists read by the caller's
// thread (as an HTTP request's reader thread) are held for the change on the loop, where the
// cache had evicted some. With them read again on the loop this counts 10 reads there.
TEST_F(SequencerNodesTest, AGroupCreatedWithMoreMembersThanTheDeviceCacheReadsNothingOnALoop) {
  Node small(view_.state(), /*directory_capacity=*/2);
  const std::string g = create_group(small, "alice", {"bob", "carol", "dave", "erin"});  // seq 1
  ASSERT_FALSE(g.empty());
  auto added = change(small, "alice", g, proto::MembersRequest{{}, {"erin"}});  // removes erin
  ASSERT_TRUE(added) << added.error().message;
  auto again = change(small, "alice", g, proto::MembersRequest{{"erin"}, {}});  // adds her again
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(small.store.reads_on_loops.load(), 0);
  // Every member's device has the last change in its inbox (the recipients were complete).
  auto head = view_.head(g);
  ASSERT_TRUE(head);
  EXPECT_EQ(*head, 3u);
  for (const std::string u : {"alice", "bob", "carol", "dave", "erin"}) {
    auto inbox = view_.inbox(DeviceRef{u, 1});
    ASSERT_TRUE(inbox) << inbox.error().message;
    ASSERT_EQ(inbox->size(), 1u) << u;
    EXPECT_EQ((*inbox)[0].second, 3u) << u;
  }
}

// With reader threads, a send naming media reads the media rows on a reader thread
// (Media::check_send), not on the loop: the send keeps its place in the conversation's order
// (a plain send right behind it gets the next seq) and its errors (an id nobody uploaded:
// not_found). With the check on the loop this counts 2 reads there (media_owners, twice).
TEST_F(SequencerNodesTest, ASendNamingMediaReadsNothingOnALoopAndKeepsItsPlace) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::string dir = ::testing::TempDir() + "tern-seq-media-" + std::to_string(::getpid());
  ASSERT_NO_FATAL_FAILURE(c.enable_media(dir));
  const std::string id(64, 'a'), unknown(64, 'c');
  store::Batch b;
  b.add(store::PutMedia{id, "alice", 10, now_ms()});
  ASSERT_TRUE(view_.commit(b, true));
  const std::string g = create_group(a, "alice", {"bob"});  // seq 1; node c has never seen it
  auto with_media = send_async(c, "alice", g, "m-1", {id});
  auto plain = send_async(c, "alice", g, "p-1");
  auto refused = send_async(c, "alice", g, "m-2", {unknown});
  auto after = send_async(c, "alice", g, "p-2");
  for (auto* f : {&with_media, &plain, &refused, &after}) ASSERT_EQ(f->wait_for(10s), std::future_status::ready);
  auto r1 = with_media.get(), r2 = plain.get(), r3 = refused.get(), r4 = after.get();
  ASSERT_TRUE(r1) << r1.error().message;
  ASSERT_TRUE(r2) << r2.error().message;
  ASSERT_TRUE(r4) << r4.error().message;
  EXPECT_EQ(r1->seq, 2u);
  EXPECT_EQ(r2->seq, 3u);
  EXPECT_EQ(r4->seq, 4u);
  ASSERT_FALSE(r3);
  EXPECT_EQ(r3.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(r3.error().message, "no such media (or not visible to the sender): " + unknown);
  auto log = view_.read_messages(g, 0, 100);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 4u);
  EXPECT_NE((*log)[1].frame.find(id), std::string::npos);
  EXPECT_EQ(c.store.reads_on_loops.load(), 0);
  std::filesystem::remove_all(dir);
}

// With reader threads, an ack that covers messages older than the 32 whose senders the
// warm-up read reads their senders from the log on a reader thread (Receipts::senders), and
// the receipt still reaches the sender of the oldest one. With the read on the loop this
// counts 1 read there (read_messages).
TEST_F(SequencerNodesTest, AnAckCoveringMessagesOlderThanTheWarmedSendersReadsNothingOnALoop) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::string g = create_group(a, "alice", {"bob", "carol"});  // seq 1
  ASSERT_TRUE(send(a, "carol", g, "c-1"));                            // seq 2: carol's only message
  constexpr Seq kAlice = SequencerCore::kWarmSenders + 8;
  for (Seq i = 0; i < kAlice; ++i) ASSERT_TRUE(send(a, "alice", g, "a-" + std::to_string(i)));
  const Seq head = 2 + kAlice;
  // Node c has never seen g: the ack's warm-up reads the senders of seqs head-31..head only.
  ASSERT_NO_FATAL_FAILURE(ack_and_expect_receipts(c, g, head));
  EXPECT_EQ(c.store.reads_on_loops.load(), 0);
  auto marks = view_.receipts(g);
  ASSERT_TRUE(marks);
  ASSERT_EQ(marks->size(), 1u);
  EXPECT_EQ((*marks)[0].user, "bob");
  EXPECT_EQ((*marks)[0].delivered, head);
}

// With reader threads, an ack whose older senders' range moves during each of its log reads
// (other nodes' messages arriving in order push the oldest remembered senders out of memory)
// reads nothing on a loop: the second read goes on to the ack's seq, so later moves stay inside
// it. With the second read the size of the range (as before) the range moves after each of
// the 3 reads off the loop and the 4th is made on the loop: this counts 1 read there.
TEST_F(SequencerNodesTest, AnAckWhoseOlderSendersMoveDuringEachReadReadsNothingOnALoop) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::string g = create_group(a, "alice", {"bob", "carol"});  // seq 1
  ASSERT_TRUE(send(c, "carol", g, "c-1"));                            // seq 2: node c has g warm
  constexpr int kAlice = static_cast<int>(SequencerCore::kRecentSenders) + 100;
  std::vector<std::future<Result<SentInfo>>> sends;
  for (int i = 0; i < kAlice; ++i) sends.push_back(send_async(a, "alice", g, "a-" + std::to_string(i)));
  for (auto& f : sends) {
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    ASSERT_TRUE(f.get());
  }
  // Node c hears of them in order (bus head hints): it remembers the last kRecentSenders.
  auto hint_from = [&](Seq after) {
    auto log = view_.read_messages(g, after, 100000);
    ASSERT_TRUE(log);
    for (const auto& m : *log) c.sequencer.observe_head(g, m.seq, std::make_shared<const std::string>(m.frame));
  };
  hint_from(2);
  const Seq head = 2 + kAlice;
  // During each of the ack's first three log reads, node a appends one more message and node
  // c hears of it before the read's result is back: the oldest remembered sender goes.
  std::atomic<int> moves{0};
  c.store.on_log_read = [&] {
    if (moves.load() >= 3) return;
    const Seq before = view_.head(g).value();
    auto f = send_async(a, "alice", g, "m-" + std::to_string(moves.load()));
    if (f.wait_for(10s) != std::future_status::ready || !f.get()) return;
    ++moves;
    hint_from(before);
  };
  ASSERT_NO_FATAL_FAILURE(ack_and_expect_receipts(c, g, head));
  c.store.on_log_read = nullptr;
  EXPECT_GE(moves.load(), 1) << "the range never moved during a read";
  EXPECT_EQ(c.store.reads_on_loops.load(), 0);
}

// With reader threads, a channel admin's changes read no row and no device list on a loop: a
// named user with no account is answered not_found from the device list read off the loop
// (unknown users are not cached), and a named user whose earlier change was still committing
// when the change started, and finished while the change's rows were read, has its row read
// again off the loop. With those read on the loop this counts 2 reads there (zed's device
// list, carol's row).
TEST_F(SequencerNodesTest, AChannelAdminsChangesReadNoRowOnALoop) {
  Node& c = *nodes_[2];
  std::promise<Result<ConversationInfo>> created;
  proto::CreateConversationRequest req{true, "news", {}, /*channel*/ true};
  c.sequencer.create_conversation(DeviceRef{"alice", 1}, req, [&](auto r) { created.set_value(std::move(r)); });
  auto ch = created.get_future().get();
  ASSERT_TRUE(ch) << ch.error().message;
  const std::string id = ch->conversation_id;
  auto change_async = [&](proto::MembersRequest r) {
    auto p = std::make_shared<std::promise<Result<uint64_t>>>();
    c.sequencer.change_subscribers(DeviceRef{"alice", 1}, id, std::move(r), [p](Result<uint64_t> x) { p->set_value(x); });
    return p->get_future();
  };
  c.store.reads_on_loops = 0;
  auto unknown = change_async({{"zed"}, {}});
  ASSERT_EQ(unknown.wait_for(10s), std::future_status::ready);
  auto u = unknown.get();
  ASSERT_FALSE(u);
  EXPECT_EQ(u.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(u.error().message, "no such user: zed");
  EXPECT_EQ(c.store.reads_on_loops.load(), 0);

  // Carol's subscription is committing (held at the gate) when the next change, naming her
  // and dave, starts; it lands while dave's row is read.
  c.store.close();
  auto first = change_async({{"carol"}, {}});
  ASSERT_TRUE(c.store.await_arrived(1));
  std::atomic<bool> landed{false};
  c.store.on_row_read = [&] {
    if (landed.exchange(true)) return;
    c.store.open();
    EXPECT_EQ(first.wait_for(10s), std::future_status::ready);  // its completion ran on the loop
  };
  auto second = change_async({{"dave"}, {"carol"}});
  ASSERT_EQ(second.wait_for(10s), std::future_status::ready);
  c.store.on_row_read = nullptr;
  EXPECT_TRUE(landed.load());
  auto r1 = first.get();
  ASSERT_TRUE(r1) << r1.error().message;
  EXPECT_EQ(*r1, 2u);  // the owner and carol
  auto r2 = second.get();
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_EQ(*r2, 2u);  // the owner and dave: carol removed
  auto carol = view_.user_conversation("carol", id);
  ASSERT_TRUE(carol);
  EXPECT_TRUE(!*carol || (*carol)->left_seq != 0) << "carol is still subscribed";
  auto dave = view_.user_conversation("dave", id);
  ASSERT_TRUE(dave && *dave);
  EXPECT_EQ((*dave)->left_seq, 0u);
  EXPECT_EQ(c.store.reads_on_loops.load(), 0);
}

// With reader threads, a send whose idempotency read is out while an earlier batch of its
// conversation fails (`unavailable`: the head and snapshot must be reloaded) has them
// reloaded on a reader thread, then is sequenced on the reloaded head. With the reload on the
// loop this counts 2 reads there (the snapshot and the head).
TEST_F(SequencerNodesTest, ASendWhoseIdempotencyReadOutlivesAFailedCommitReloadsOffTheLoop) {
  Node& a = *nodes_[0];
  const std::string g = create_group(*nodes_[1], "alice", {"bob"});  // seq 1, on node b
  ASSERT_TRUE(send(a, "alice", g, "w"));  // seq 2; node a has g warm (read off its loops)
  a.store.close();
  auto failing = send_async(a, "alice", g, "x-1");  // seq 3: its commit waits at the gate
  ASSERT_TRUE(a.store.await_arrived(1));
  a.store.hold_idempotency(true);
  auto next = send_async(a, "alice", g, "x-2");  // its idempotency read waits on a reader thread
  ASSERT_TRUE(a.store.await_idempotency_waiting(1));
  a.store.set_unavailable(true);
  a.store.release_one();  // x-1's commit fails: g is stale, its snapshot dropped
  ASSERT_EQ(failing.wait_for(10s), std::future_status::ready);
  auto r1 = failing.get();
  ASSERT_FALSE(r1);
  EXPECT_EQ(r1.error().code, ErrorCode::kUnavailable);
  a.store.set_unavailable(false);
  a.store.open();
  a.store.hold_idempotency(false);
  ASSERT_EQ(next.wait_for(10s), std::future_status::ready);
  auto r2 = next.get();
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_EQ(r2->seq, 3u);  // on the reloaded head: x-1 was not stored
  EXPECT_EQ(a.store.reads_on_loops.load(), 0);
  auto log = view_.read_messages(g, 0, 100);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 3u);
}

// A node that only acks a conversation (its sends are sequenced on another node) has an ack
// committing most of the time. A head hint that arrives meanwhile moves its cached head: the
// next ack, of the message the hint announced, is taken, and its receipt finds the sender in
// memory (no log read). When hints waited for every batch in flight, that hint was dropped
// and the ack was refused: "seq is beyond the conversation's head" (invalid_argument).
TEST_F(SequencerNodesTest, AHeadHintWhileAnAckIsCommittingMovesTheHeadForTheNextAck) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::string g = create_group(a, "alice", {"bob"});  // seq 1
  ASSERT_TRUE(send(a, "alice", g, "a-1"));                   // seq 2
  auto alice = std::make_shared<FrameInbox>();
  c.bus.attach(DeviceRef{"alice", 1}, alice);
  auto ack = [&](Seq seq, bool read) { return ack_async(c, "bob", g, seq, read); };
  auto warm = ack(2, false);  // node c loads g: head 2
  ASSERT_EQ(warm.wait_for(10s), std::future_status::ready);
  ASSERT_TRUE(warm.get());
  c.store.close();
  auto committing = ack(2, true);  // the read mark: its commit waits at node c's gate
  ASSERT_TRUE(c.store.await_arrived(1));
  auto sent = send(a, "alice", g, "a-2");  // seq 3, through node a
  ASSERT_TRUE(sent) << sent.error().message;
  ASSERT_EQ(sent->seq, 3u);
  auto log = view_.read_messages(g, 2, 1);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 1u);
  const int log_reads = c.store.log_reads.load();
  c.sequencer.observe_head(g, 3, std::make_shared<const std::string>((*log)[0].frame));
  auto next = ack(3, false);  // on g's loop after the hint, while the read mark still commits
  // Everything posted to node c's loops so far has run (each loop runs its tasks in order):
  // the hint and the ack were handled while the read mark was still committing.
  for (size_t i = 0; i < c.loops.size(); ++i) {
    std::promise<void> ran;
    c.loops.post(i, [&ran] { ran.set_value(); });
    ASSERT_EQ(ran.get_future().wait_for(10s), std::future_status::ready);
  }
  c.store.open();
  ASSERT_EQ(committing.wait_for(10s), std::future_status::ready);
  auto first = committing.get();
  EXPECT_TRUE(first) << first.error().message;
  ASSERT_EQ(next.wait_for(10s), std::future_status::ready);
  auto taken = next.get();
  EXPECT_TRUE(taken) << taken.error().message;
  EXPECT_TRUE(alice->await_frame({R"("type":"receipt")", R"("user":"bob")", R"("status":"delivered")", "\"seq\":3"}));
  EXPECT_EQ(c.store.log_reads.load(), log_reads) << "the sender of seq 3 was read from the log";
}

// A node whose own sends are sequenced by another node (forwarded) learns each one's seq and
// sender from the answer: the next hint (the other member's message) is the next seq, not a
// gap, and an ack of it finds every sender in memory. Without that (the own message's hint
// may never come: its recipients can all be on the sequencing node) the ack read the log.
TEST_F(SequencerNodesTest, AForwardedSendsAnswerMovesTheHeadSoTheNextAckReadsNoLog) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::string g = create_group(a, "alice", {"bob"});  // seq 1
  auto alice = std::make_shared<FrameInbox>();
  c.bus.attach(DeviceRef{"alice", 1}, alice);
  auto ack = [&](Seq seq) { return ack_async(c, "bob", g, seq); };
  auto warm = ack(1);  // node c loads g: head 1
  ASSERT_EQ(warm.wait_for(10s), std::future_status::ready);
  ASSERT_TRUE(warm.get());
  c.bus.serve = [&a](std::string payload, std::function<void(std::string)> respond) {
    a.sequencer.serve_forwarded(std::move(payload), std::move(respond));
  };
  c.bus.to = "a";
  auto own = send(c, "bob", g, "b-1");  // sequenced on node a: seq 2
  ASSERT_TRUE(own) << own.error().message;
  ASSERT_EQ(own->seq, 2u);
  auto theirs = send(a, "alice", g, "a-1");  // seq 3
  ASSERT_TRUE(theirs) << theirs.error().message;
  ASSERT_EQ(theirs->seq, 3u);
  auto log = view_.read_messages(g, 2, 1);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 1u);
  const int log_reads = c.store.log_reads.load();
  c.sequencer.observe_head(g, 3, std::make_shared<const std::string>((*log)[0].frame));
  auto next = ack(3);
  ASSERT_EQ(next.wait_for(10s), std::future_status::ready);
  auto taken = next.get();
  ASSERT_TRUE(taken) << taken.error().message;
  EXPECT_TRUE(alice->await_frame({R"("type":"receipt")", R"("user":"bob")", R"("status":"delivered")", "\"seq\":3"}));
  EXPECT_EQ(c.store.log_reads.load(), log_reads) << "the senders of seqs 2..3 were read from the log";
}

}  // namespace
}  // namespace tern::services
