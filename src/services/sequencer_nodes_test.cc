// Several nodes sequencing one conversation on one shared store: a node whose head was behind
// (another node appended first) sequences its sends again without any client-visible failure
// (GroupCommitter::kBehind, Sender::kMaxAttempts); membership changes and channel posts from
// several nodes; head hints and a forwarded send's answer moving an acking node's head.
#include "services/sequencer_nodes_fixture.h"

namespace tern::services::seqnodes {
namespace {

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
  const std::string id = create_channel(a, "alice");
  ASSERT_FALSE(id.empty());
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

// Channel changes are made by the channel's sequencing node (channel_forwarding.h), as its
// posts are: changes through two nodes, one after the other, each count from the one before
// (made where they arrived, each node counted from its own copy of the record: bob's join
// through a, then dave's through b, both answered 2), and a join through the other node
// subscribes from the owner's head.
TEST_F(SequencerNodesTest, ChannelChangesThroughAnotherNodeAreMadeByTheSequencingNode) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string id = create_channel(b, "alice");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(send(b, "alice", id, "post-1"));
  ASSERT_TRUE(send(b, "alice", id, "post-2"));
  a.bus.serve = [&b](std::string payload, std::function<void(std::string)> respond) {
    b.sequencer.serve_forwarded(std::move(payload), std::move(respond));
  };
  a.bus.to = "b";
  const auto forwarded = [] {
    return MetricsRegistry::global()
        .counter("tern_channel_changes_forwarded_total",
                 "channel joins, leaves and admin changes handed to the node that sequences the channel")
        .value();
  };
  const uint64_t forwarded_before = forwarded();
  auto join = [&](Node& n, const char* user) {
    std::promise<Result<SubscriptionInfo>> p;
    n.sequencer.join_channel(DeviceRef{user, 1}, id, [&p](auto r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  };
  auto count = [&](auto call) {
    std::promise<Result<uint64_t>> p;
    call([&p](Result<uint64_t> r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  };

  auto bob = join(a, "bob");
  ASSERT_TRUE(bob) << bob.error().message;
  EXPECT_EQ(bob->joined_seq, 3u) << "from the owner's head";
  EXPECT_EQ(bob->subscribers, 2u);
  auto dave = join(b, "dave");
  ASSERT_TRUE(dave) << dave.error().message;
  EXPECT_EQ(dave->subscribers, 3u) << "counted from bob's join, made on b";
  auto carol = count([&](Channels::CountDone d) {
    a.sequencer.change_subscribers(DeviceRef{"alice", 1}, id, {{"carol"}, {}}, std::move(d));
  });
  ASSERT_TRUE(carol) << carol.error().message;
  EXPECT_EQ(*carol, 4u);
  auto left = count([&](Channels::CountDone d) { a.sequencer.leave_channel(DeviceRef{"dave", 1}, id, std::move(d)); });
  ASSERT_TRUE(left) << left.error().message;
  EXPECT_EQ(*left, 3u);
  std::promise<Result<std::vector<std::string>>> ap;
  a.sequencer.change_admins(DeviceRef{"alice", 1}, id, {{"erin"}, {}}, [&ap](auto r) { ap.set_value(std::move(r)); });
  auto af = ap.get_future();
  ASSERT_EQ(af.wait_for(10s), std::future_status::ready);
  auto admins = af.get();
  ASSERT_TRUE(admins) << admins.error().message;
  EXPECT_EQ(std::set<std::string>(admins->begin(), admins->end()), (std::set<std::string>{"alice", "erin"}));
  // A refusal comes back as the owner gave it.
  auto refused = count([&](Channels::CountDone d) {
    a.sequencer.change_subscribers(DeviceRef{"bob", 1}, id, {{"dave"}, {}}, std::move(d));
  });
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kForbidden) << refused.error().message;
  EXPECT_EQ(forwarded() - forwarded_before, 5u);

  // alice, bob, carol and erin; dave left.
  expect_stored_channel(id, 4, {"erin"}, {"bob", "carol", "erin"}, "dave");
}

// While two nodes' live sets differ, both may take themselves for a channel's sequencing node
// (here: neither routes to the other) and change it from their own copy of its record. A commit
// whose copy is no longer the stored record is refused (store::PutConversation::expected) and
// the change is made again from the record read again: no join is lost from the count and no
// admin change is written over.
TEST_F(SequencerNodesTest, ChannelChangesOfTwoNodesThatBothSequenceItCountFromTheStoredRecord) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string id = create_channel(a, "alice");
  ASSERT_FALSE(id.empty());
  const auto retried = [] {
    return MetricsRegistry::global()
        .counter("tern_channel_changes_retried_total",
                 "channel changes made again because another node had changed the channel first")
        .value();
  };
  const uint64_t retried_before = retried();
  auto seen = channel_info(b, id);
  ASSERT_TRUE(seen) << seen.error().message;
  ASSERT_EQ(seen->conversation->subscribers, 1u) << "b keeps this copy of the record";

  auto join = [&](Node& n, const char* user) {
    std::promise<Result<SubscriptionInfo>> p;
    n.sequencer.join_channel(DeviceRef{user, 1}, id, [&p](auto r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  };
  auto admins = [&](Node& n, const char* user) {
    std::promise<Result<std::vector<std::string>>> p;
    n.sequencer.change_admins(DeviceRef{"alice", 1}, id, {{user}, {}}, [&p](auto r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    auto r = f.get();
    return r ? std::set<std::string>(r->begin(), r->end()) : std::set<std::string>{"error: " + r.error().message};
  };
  auto bob = join(a, "bob");
  ASSERT_TRUE(bob) << bob.error().message;
  EXPECT_EQ(bob->subscribers, 2u);
  auto carol = join(b, "carol");  // b's copy still counts 1
  ASSERT_TRUE(carol) << carol.error().message;
  EXPECT_EQ(carol->subscribers, 3u) << "counted from b's old copy: bob's join lost";
  // a's copy: bob's join; b's: carol's. Each names an admin the other does not know of.
  EXPECT_EQ(admins(a, "dave"), (std::set<std::string>{"alice", "dave"}));
  EXPECT_EQ(admins(b, "erin"), (std::set<std::string>{"alice", "dave", "erin"})) << "dave written over";
  std::promise<Result<uint64_t>> left;
  a.sequencer.leave_channel(DeviceRef{"bob", 1}, id, [&left](Result<uint64_t> r) { left.set_value(std::move(r)); });
  auto lf = left.get_future();
  ASSERT_EQ(lf.wait_for(10s), std::future_status::ready);
  auto l = lf.get();
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(*l, 4u) << "alice, carol, dave and erin";
  EXPECT_EQ(retried() - retried_before, 4u) << "each change but bob's join found the record changed";

  expect_stored_channel(id, 4, {"dave", "erin"}, {"carol", "dave", "erin"}, "bob");
}

// A channel's disappearing-messages timer takes a seq, but its record also holds the count and
// admins, which change without one: a timer change that node b makes from its old copy of the
// record (bob's join through a is not in it) is refused by the store and sequenced again from
// the stored record, so bob stays counted.
TEST_F(SequencerNodesTest, AChannelTimerSetFromAnOldCopyKeepsTheCountAnotherNodeWrote) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string id = create_channel(a, "alice");
  ASSERT_FALSE(id.empty());
  auto seen = channel_info(b, id);
  ASSERT_TRUE(seen) << seen.error().message;
  ASSERT_EQ(seen->conversation->subscribers, 1u) << "b keeps this copy of the record";
  std::promise<Result<SubscriptionInfo>> joined;
  a.sequencer.join_channel(DeviceRef{"bob", 1}, id, [&joined](auto r) { joined.set_value(std::move(r)); });
  auto jf = joined.get_future();
  ASSERT_EQ(jf.wait_for(10s), std::future_status::ready);
  auto bob = jf.get();
  ASSERT_TRUE(bob) << bob.error().message;
  ASSERT_EQ(bob->subscribers, 2u);

  auto timer = set_timer(b, "alice", id, 3600);
  ASSERT_TRUE(timer) << timer.error().message;
  EXPECT_EQ(*timer, 3600);
  auto c = view_.conversation(id);
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->disappear_seconds, 3600);
  EXPECT_EQ((*c)->subscribers, 2u) << "the timer change wrote b's old count back";
  auto log = view_.read_messages(id, 0, 10);
  ASSERT_TRUE(log);
  ASSERT_EQ(log->size(), 1u) << "one timer message";
  EXPECT_EQ((*log)[0].seq, 1u);
}

// A store may hold a channel's changes longer than two nodes' contention lasts: on a Redis
// Cluster, a node that died mid-change holds the channel's change lease for three command
// timeouts, and every other change is refused (`exists`) until it expires. A join meanwhile
// is made again until then (ServiceOptions::channel_change_retry_ms) and lands once the hold
// ends, rather than answered `unavailable` after its first kChannelAttempts; a hold longer
// than the retry window is answered `unavailable`, and nothing of the join is written.
TEST_F(SequencerNodesTest, AChannelChangeHeldByTheStoreIsMadeOnceTheHoldEnds) {
  Node& a = *nodes_[0];
  const std::string id = create_channel(a, "alice");
  ASSERT_FALSE(id.empty());
  a.options.channel_change_retry_ms = 3000;  // far past the hold below, even on a loaded machine
  auto join = [&](const char* user) {
    std::promise<Result<SubscriptionInfo>> p;
    a.sequencer.join_channel(DeviceRef{user, 1}, id, [&p](auto r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  };

  const auto held_from = std::chrono::steady_clock::now();
  a.store.hold_changes(id, held_from + 900ms);  // longer than the first attempts' pauses (≤ 250 ms)
  auto bob = join("bob");
  ASSERT_TRUE(bob) << bob.error().message;
  EXPECT_EQ(bob->subscribers, 2u);
  EXPECT_GE(std::chrono::steady_clock::now() - held_from, 900ms) << "made while the store held it";
  EXPECT_GT(a.store.held_refusals.load(), 8) << "refused past the first (kChannelAttempts) attempts";

  a.store.hold_changes(id, std::chrono::steady_clock::now() + 5s);  // past the retry window
  auto carol = join("carol");
  ASSERT_FALSE(carol) << "made while held";
  EXPECT_EQ(carol.error().code, ErrorCode::kUnavailable);
  a.store.hold_changes(id, {});
  expect_stored_channel(id, 2, {}, {"bob"}, "carol");
}

// The same through another node: b hands the join to a, the channel's sequencing node, whose
// store holds it. a makes it again only for channel_change_served_retry_ms (below the bus's
// request timeout, so that b never takes a for dead) and hands it back refused; b hands it
// again until it lands.
TEST_F(SequencerNodesTest, AChannelChangeHeldByTheStoreIsHandedAgainByTheNodeThatForwardedIt) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string id = create_channel(a, "alice");
  ASSERT_FALSE(id.empty());
  a.options.channel_change_served_retry_ms = 300;
  b.options.channel_change_retry_ms = 3000;
  std::atomic<int> handed_back{0}, answered{0};
  b.bus.serve = [&](std::string payload, std::function<void(std::string)> respond) {
    a.sequencer.serve_forwarded(std::move(payload), [&, respond = std::move(respond)](std::string answer) {
      auto r = channel_forwarding::decode_response(answer);
      if (!r && r.error().code == ErrorCode::kExists) ++handed_back;
      ++answered;
      respond(std::move(answer));
    });
  };
  b.bus.to = "a";

  const auto held_from = std::chrono::steady_clock::now();
  a.store.hold_changes(id, held_from + 900ms);
  std::promise<Result<SubscriptionInfo>> p;
  b.sequencer.join_channel(DeviceRef{"bob", 1}, id, [&p](auto r) { p.set_value(std::move(r)); });
  auto f = p.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  auto bob = f.get();
  ASSERT_TRUE(bob) << bob.error().message;
  EXPECT_EQ(bob->subscribers, 2u);
  EXPECT_GE(std::chrono::steady_clock::now() - held_from, 900ms) << "made while the store held it";
  EXPECT_GE(handed_back.load(), 1) << "a kept the forwarded change past its served window";
  EXPECT_EQ(answered.load(), handed_back.load() + 1) << "every hand-over answered; the last one made it";
  expect_stored_channel(id, 2, {}, {"bob"}, "carol");
}

// A join of a user already subscribed (or a leave of one who is not) changes nothing, and
// commits nothing, unless the store may hold a change half made (a Redis Cluster: the row may
// be that of a join whose node died before it wrote the record). Then it commits the record
// unchanged, which finishes such a change first (Channels::settle).
TEST_F(SequencerNodesTest, AJoinFoundMadeCommitsTheRecordUnchangedOnlyOnAStoreThatFinishesChangesLater) {
  Node& a = *nodes_[0];
  const std::string id = create_channel(a, "alice");
  ASSERT_FALSE(id.empty());
  auto join = [&] {
    std::promise<Result<SubscriptionInfo>> p;
    a.sequencer.join_channel(DeviceRef{"bob", 1}, id, [&p](auto r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  };
  auto leave = [&](const char* user) {
    std::promise<Result<uint64_t>> p;
    a.sequencer.leave_channel(DeviceRef{user, 1}, id, [&p](Result<uint64_t> r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  };
  auto first = join();
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_EQ(first->subscribers, 2u);
  for (bool finishes_later : {false, true}) {
    a.store.set_finishes_later(finishes_later);
    const int commits = a.store.commits.load();
    auto again = join();
    ASSERT_TRUE(again) << again.error().message;
    EXPECT_EQ(again->subscribers, 2u);
    EXPECT_EQ(again->joined_seq, first->joined_seq);
    auto gone = leave("carol");  // never joined
    ASSERT_TRUE(gone) << gone.error().message;
    EXPECT_EQ(*gone, 2u);
    EXPECT_EQ(a.store.commits.load() - commits, finishes_later ? 2 : 0) << "finishes_later " << finishes_later;
  }
  expect_stored_channel(id, 2, {}, {"bob"}, "carol");
}

// Views are counted by the channel's sequencing node: read markers acked through another node
// reach it with that node's next batch (ChannelViews::kBatchMs), each reader counted once, and
// the channel's info through either node shows the sequencing node's counts.
TEST_F(SequencerNodesTest, ChannelReadsThroughAnotherNodeAreCountedByTheSequencingNode) {
  Node& a = *nodes_[0];
  Node& b = *nodes_[1];
  const std::string id = create_channel(b, "alice");
  ASSERT_FALSE(id.empty());
  for (const char* u : {"bob", "carol"}) {
    std::promise<Result<SubscriptionInfo>> p;
    b.sequencer.join_channel(DeviceRef{u, 1}, id, [&p](auto r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    ASSERT_TRUE(f.get());
  }
  ASSERT_TRUE(send(b, "alice", id, "post-1"));
  ASSERT_TRUE(send(b, "alice", id, "post-2"));
  a.bus.serve = [&b](std::string payload, std::function<void(std::string)> respond) {
    b.sequencer.serve_forwarded(std::move(payload), std::move(respond));
  };
  a.bus.to = "b";
  auto info = [&](Node& n) { return channel_info(n, id); };
  using Views = ChannelViews::Views;
  // b's counts once they are `want` (bounded), else the last seen.
  auto await_views = [&](const Views& want) {
    Views seen;
    for (int i = 0; i < 500; ++i) {
      auto r = info(b);
      if (!r) return Views{};
      seen = r->views;
      if (seen == want) break;
      std::this_thread::sleep_for(10ms);
    }
    return seen;
  };
  const auto read = [&](const char* user, Seq seq) {
    auto acked = ack_async(a, user, id, seq, /*read=*/true);
    ASSERT_EQ(acked.wait_for(10s), std::future_status::ready);
    auto r = acked.get();
    ASSERT_TRUE(r) << r.error().message;
  };
  read("bob", 2);
  read("carol", 1);
  EXPECT_EQ(await_views({{1, 2}, {2, 1}}), (Views{{1, 2}, {2, 1}})) << "the reads through a were not counted by b";
  // A reader counts once: bob's marker again, then carol's next one, reach b in this order.
  read("bob", 2);
  read("carol", 2);
  EXPECT_EQ(await_views({{1, 2}, {2, 2}}), (Views{{1, 2}, {2, 2}}));
  // Through a, the channel's info shows b's counts; a counted nothing itself.
  auto through_a = info(a);
  ASSERT_TRUE(through_a) << through_a.error().message;
  EXPECT_EQ(through_a->views, (Views{{1, 2}, {2, 2}}));
  a.bus.to = "";
  auto own = info(a);
  ASSERT_TRUE(own) << own.error().message;
  EXPECT_TRUE(own->views.empty());
}

// With reads off the loops (StoreReads, as with Redis), a conversation this node has not seen
// is read on a reader thread: while the store is slow to answer, the node's loops keep
// running, and sends of the conversation that arrive meanwhile wait for the read in order.
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

// The owner is stopping (its committer refuses with `draining`) while another node still
// routes a conversation to it: the sender's own node is not stopping, so its client is told
// `unavailable` (retry; the resend goes to the next owner), never `draining`, which would
// tell it to look for another server.
TEST_F(SequencerNodesTest, AForwardedSendRefusedByAStoppingOwnerAnswersUnavailable) {
  Node& a = *nodes_[0];
  Node& c = *nodes_[2];
  const std::string g = create_group(a, "alice", {"bob"});  // seq 1
  c.bus.serve = [&a](std::string payload, std::function<void(std::string)> respond) {
    a.sequencer.serve_forwarded(std::move(payload), std::move(respond));
  };
  c.bus.to = "a";
  a.committer.stop();  // node a drains
  auto r = send(c, "bob", g, "b-1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable) << r.error().message;
  // Sequenced here instead (the other nodes left the stopping one out): the same id lands.
  c.bus.to.clear();
  auto again = send(c, "bob", g, "b-1");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->seq, 2u);
}

}  // namespace
}  // namespace tern::services::seqnodes
