// Several nodes on one shared store with reads off the loops (as with Redis): a cold
// conversation, a group's device lists, media, older senders, a channel admin's change and a
// failed commit's reload are read on reader threads; each test counts the store reads made
// on a loop thread and expects none.
#include "base/metrics.h"
#include "services/sequencer_nodes_fixture.h"

namespace tern::services::seqnodes {
namespace {

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

// The case no warm-up read covers: cache entries of a warm conversation dropped by another
// thread between a check on the loop (SequencerCore::warm) and their use by the work right
// after it. Here the drop runs inside the check itself, in the registration check that comes
// last (set_registration_lookup's `cached`): the snapshot and every member's device list
// leave the Directory just after the check found them. A send passes two checks: before its
// idempotency read (its work reads the snapshot), and before it is sequenced (the snapshot and
// the device lists). The check's hold answers them: nothing is read on the loop, no warm-up
// read follows, and every member's device gets its inbox mark. With the checks holding
// nothing this counts 1 read on the loop for the first send below and 6 for the second.
TEST_F(SequencerNodesTest, CacheEntriesDroppedBetweenAWarmCheckAndTheirUseAreNotReadOnALoop) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::vector<std::string> members = {"alice", "bob", "carol", "dave", "erin"};
  const std::string g = create_group(a, "alice", {"bob", "carol", "dave", "erin"});  // seq 1
  ASSERT_FALSE(g.empty());
  std::atomic<int> drop_at{0};  // the n-th check from now drops the entries (0: none)
  std::atomic<int> dropped{0};
  // Set before node c serves anything (its loops read the lookups without a lock).
  c.sequencer.set_registration_lookup(
      [](const DeviceRef&) -> Result<uint32_t> { return 0u; },  // no keys: nothing to read
      [](const std::vector<DeviceRef>&) -> Result<void> { return {}; },
      [&](const std::vector<DeviceRef>& devices, std::vector<uint32_t>* ids) {
        if (ids) ids->assign(devices.size(), 0);
        if (drop_at.load() > 0 && --drop_at == 0) {  // as other threads' inserts or a bus invalidation
          c.directory.forget_conversation(g);
          for (const auto& u : members) c.directory.forget_devices(u);
          ++dropped;
        }
        return true;
      });
  auto cold = send(c, "bob", g, "b-1");  // the warm-up reads it all off the loop
  ASSERT_TRUE(cold) << cold.error().message;
  EXPECT_EQ(cold->seq, 2u);
  ASSERT_EQ(c.store.reads_on_loops.load(), 0);
  Seq expected = 2;
  for (int at : {1, 2}) {
    const int warm_ups = c.store.devices_of_calls.load();
    drop_at = at;
    auto sent = send(c, "carol", g, "c-" + std::to_string(at));
    ASSERT_TRUE(sent) << sent.error().message;
    EXPECT_EQ(sent->seq, ++expected);
    EXPECT_EQ(dropped.load(), at) << "the drop did not come at check " << at;
    EXPECT_EQ(c.store.reads_on_loops.load(), 0) << "dropped at check " << at;
    // Dropped at the first check, the second finds the lists gone and warms up off the loop;
    // dropped at the last, the send was sequenced from the hold alone.
    EXPECT_EQ(c.store.devices_of_calls.load(), warm_ups + (at == 1 ? 1 : 0)) << at;
  }
  for (const auto& u : members) {
    auto inbox = view_.inbox(DeviceRef{u, 1});
    ASSERT_TRUE(inbox) << inbox.error().message;
    ASSERT_EQ(inbox->size(), 1u) << u;
    EXPECT_EQ((*inbox)[0].second, u == "carol" ? 2u : 4u) << u;
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
  const std::string id = create_channel(c, "alice");
  ASSERT_FALSE(id.empty());
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

// With reader threads, a member change that must wait for a failed batch of its conversation
// (parked until the head reloads, ConvState::parked) runs again with its request's hold: the
// added users' device lists, read by the request's thread and evicted by the reload's
// warm-up from a device cache of 2 users, are not read on the loop. Without the parked hold
// this counts 3 reads there (carol's, dave's and erin's lists).
TEST_F(SequencerNodesTest, AMemberChangeParkedBehindAFailedBatchKeepsItsRequestsHold) {
  Node small(view_.state(), /*directory_capacity=*/2);
  const std::string g = create_group(small, "alice", {"bob"});  // seq 1
  ASSERT_FALSE(g.empty());
  small.store.close();
  auto failing = send_async(small, "alice", g, "x-1");  // its commit waits at the gate
  ASSERT_TRUE(small.store.await_arrived(1));
  auto behind = send_async(small, "alice", g, "x-2");  // the next commit, in flight behind it
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (small.committer.pending() < 1 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  ASSERT_EQ(small.committer.pending(), 1u);
  small.store.set_unavailable(true);
  small.store.release_one();  // x-1's commit fails: g is stale while x-2 is in flight
  ASSERT_EQ(failing.wait_for(10s), std::future_status::ready);
  ASSERT_FALSE(failing.get());
  small.store.set_unavailable(false);
  ASSERT_TRUE(small.store.await_arrived(2));  // x-2's commit
  auto changed = std::make_shared<std::promise<Result<std::vector<std::string>>>>();
  auto change_done = changed->get_future();
  small.sequencer.change_members(DeviceRef{"alice", 1}, g, proto::MembersRequest{{"carol", "dave", "erin"}, {}},
                                 [changed](auto r) { changed->set_value(std::move(r)); });
  const auto parked_by = std::chrono::steady_clock::now() + 10s;
  while (small.sequencer.parked(g) < 1 && std::chrono::steady_clock::now() < parked_by) std::this_thread::yield();
  ASSERT_EQ(small.sequencer.parked(g), 1u) << "the change was not parked behind x-2";
  small.store.open();  // x-2 lands; the head reloads and the change runs again
  ASSERT_EQ(behind.wait_for(10s), std::future_status::ready);
  auto r2 = behind.get();
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_EQ(r2->seq, 2u);
  ASSERT_EQ(change_done.wait_for(10s), std::future_status::ready);
  auto r3 = change_done.get();
  ASSERT_TRUE(r3) << r3.error().message;
  EXPECT_EQ(small.store.reads_on_loops.load(), 0);
  EXPECT_EQ(stored_members(g), (std::set<std::string>{"alice", "bob", "carol", "dave", "erin"}));
  for (const std::string u : {"carol", "dave", "erin"}) {
    auto inbox = view_.inbox(DeviceRef{u, 1});
    ASSERT_TRUE(inbox) << inbox.error().message;
    ASSERT_EQ(inbox->size(), 1u) << u;
    EXPECT_EQ((*inbox)[0].second, 3u) << u;  // the change's system message
  }
}

// A node that only acks a conversation (its sends are sequenced on another node) has an ack
// committing most of the time. A head hint that arrives meanwhile moves its cached head: the
// next ack, of the message the hint announced, is taken, and its receipt finds the sender in
// memory (no log read). When hints waited for every batch in flight, that hint was dropped
// and the ack was refused: "seq is beyond the conversation's head" (invalid_argument).

// A send to a made-up conversation id and a direct conversation naming an unknown user are
// refused and leave no conversation state on the loops: the warm-up's state for a conversation
// the store does not have goes when its work created nothing. (It stayed until the LRU's
// capacity: ~1 KB each, +45 MB of RSS after 40,000 such requests on Redis; the embedded store
// checks before it makes a state.) A conversation created keeps its state.
TEST_F(SequencerNodesTest, MadeUpConversationsAndUnknownUsersLeaveNoStateOnTheLoops) {
  Node& a = *nodes_[0];
  Gauge& states = MetricsRegistry::global().gauge("tern_sequencer_conversation_states", "");
  const int64_t before = states.value();
  for (int i = 0; i < 50; ++i) {
    auto sent = send(a, "alice", "g-madeup" + std::to_string(i), "m" + std::to_string(i));
    ASSERT_FALSE(sent);
    EXPECT_EQ(sent.error().code, ErrorCode::kForbidden) << sent.error().message;  // as for a conversation not one's own
    std::promise<Result<ConversationInfo>> p;
    auto f = p.get_future();
    a.sequencer.create_conversation(DeviceRef{"alice", 1},
                                    proto::CreateConversationRequest{false, "", {"nobody" + std::to_string(i)}},
                                    [&p](Result<ConversationInfo> r) { p.set_value(r); });
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    auto created = f.get();
    ASSERT_FALSE(created);
    EXPECT_EQ(created.error().code, ErrorCode::kNotFound) << created.error().message;
  }
  // The last answer is given inside its work; the gate's drain (which drops the state) runs on
  // the loop after that work returns. A task posted to each loop now runs after it.
  for (size_t l = 0; l < a.loops.size(); ++l) {
    std::promise<void> turned;
    auto done = turned.get_future();
    a.loops.post(l, [&turned] { turned.set_value(); });
    ASSERT_EQ(done.wait_for(10s), std::future_status::ready);
  }
  EXPECT_EQ(states.value(), before) << "made-up conversations left states on the loops";
  ASSERT_FALSE(create_group(a, "alice", {"bob"}).empty());
  EXPECT_EQ(states.value(), before + 1) << "the group created keeps its state";
  EXPECT_EQ(a.store.reads_on_loops.load(), 0);
}

}  // namespace
}  // namespace tern::services::seqnodes
