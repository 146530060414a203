// What the tests of several nodes on one shared store share (sequencer_nodes_test.cc,
// sequencer_nodes_reads_test.cc): each "node" is a full Sequencer (its loops, group committer,
// directory, bus) on its own MemoryStore, and the MemoryStores share one State with dense
// appends on, as RedisStore does for ternd. GatedStore holds commits (commit_gate_fixture.h) and reads at a gate and
// counts the reads made on a loop thread; RoutingBus forwards a node's sends to another node.
// Ownership: each test owns its fixture and nodes. Thread-safety: GatedStore and FrameInbox are
// used from the loops, the readers and the test thread (their own mutexes and atomics).
#pragma once
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
#include <thread>
#include <unistd.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "bus/local/local_bus.h"
#include "proto/frames.h"
#include "services/accounts.h"
#include "services/commit_gate_fixture.h"
#include "services/media.h"
#include "services/sequencer.h"
#include "store/fs/fs_blob_store.h"
#include "store/memory/memory_store.h"

namespace tern::services::seqnodes {

using namespace std::chrono_literals;

// The commit gate (commit_gate_fixture.h), with reads counted and gated: a test decides how
// the committer's commits and the readers' reads interleave with the work on the loops.
class GatedStore : public testing::CommitGatedStore {
 public:
  using CommitGatedStore::CommitGatedStore;
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

  // The read gates' own (the commit gate has its own).
  std::mutex mu_;
  std::condition_variable cv_;
  bool reads_held_ = false;
  int reads_waiting_ = 0;
  bool idempotency_held_ = false;
  int idempotency_waiting_ = 0;
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
  using bus::Bus::online;
  bool online(const std::string& user, bool* reported) override { return local.online(user, reported); }
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
    media = std::make_unique<Media>(options, store, *blobs, committer, directory, *accounts, draining, bus);
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

inline uint64_t resequenced() {
  return MetricsRegistry::global()
      .counter("tern_sends_resequenced_total",
               "sends sequenced again because another node had appended to the conversation first")
      .value();
}

inline uint64_t changes_resequenced() {
  return MetricsRegistry::global()
      .counter("tern_membership_changes_resequenced_total",
               "membership and timer changes sequenced again because another node had appended to the conversation first")
      .value();
}

// How many stored frames contain `needle`.
inline size_t frames_with(const std::vector<store::StoredMessage>& log, const std::string& needle) {
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

  // A channel "news" of `creator`'s, created on node `n`; its id ("" on failure, reported).
  std::string create_channel(Node& n, const std::string& creator) {
    std::promise<Result<ConversationInfo>> p;
    auto f = p.get_future();
    proto::CreateConversationRequest req{true, "news", {}, /*channel*/ true};
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

  // The channel's info through node `n` (which then keeps its copy of the record).
  Result<ChannelInfo> channel_info(Node& n, const std::string& id) {
    std::promise<Result<ChannelInfo>> p;
    auto f = p.get_future();
    n.sequencer.channel_info(id, [&p](Result<ChannelInfo> r) { p.set_value(std::move(r)); });
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  }

  // The channel `id` as the shared store has it: `subscribers` counted, each of `admins` an
  // active admin, each of `subscribed` with a subscription row, and `gone` without one.
  void expect_stored_channel(const std::string& id, uint64_t subscribers, std::vector<std::string> admins,
                             std::vector<std::string> subscribed, const std::string& gone) {
    auto c = view_.conversation(id);
    ASSERT_TRUE(c && *c);
    EXPECT_EQ((*c)->subscribers, subscribers);
    for (const auto& u : admins) EXPECT_TRUE(is_active_member(**c, u)) << u << " is not an admin";
    for (const auto& u : subscribed) {
      auto row = view_.user_conversation(u, id);
      ASSERT_TRUE(row);
      EXPECT_TRUE(*row) << u << " is not subscribed in the store";
    }
    auto left = view_.user_conversation(gone, id);
    ASSERT_TRUE(left);
    EXPECT_FALSE(*left) << gone << " left";
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

}  // namespace tern::services::seqnodes
