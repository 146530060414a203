// Unit tests of DeviceSession with its store reads on reader threads (as with Redis): what a
// session's loop does while a read waits, and which frames read nothing on the loop (typing,
// channel acks, joins and leaves, uploads' decisions), with their bounds.
#include "services/device_session.h"

#include <gtest/gtest.h>

#include "proto/frames.h"
#include "services/device_session_fixture.h"

namespace tern::services {
namespace {

using namespace sessiontest;

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
  sequencer_.send(DeviceRef{"alice", 1}, proto::SendFrame{"post", channel, std::string("aGk="), {}, {}, {}, false, {}, {}}, 0,
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
    sequencer_.send(DeviceRef{"alice", 1}, proto::SendFrame{cmid, channel, std::string("aGk="), {}, {}, {}, false, {}, {}}, 0,
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


// Two nodes may decide presence changes of one user at once; their frames reach this node in
// either order, so each carries its order (Bus::Counted, from the registry in Redis). A
// change older than the last one passed on for the user is dropped, whether decided here or
// on another node; order 0 (a single node, or Redis away) always passes.
TEST_F(DeviceSessionOffloadedTest, APresenceChangeOlderThanTheLastPassedOnIsDropped) {
  auto watcher = std::make_shared<RecordingEndpoint>();
  ASSERT_TRUE(presence_.subscribe(7, "alice", watcher, {"bob"}));
  ASSERT_TRUE(watcher->await(R"("user":"bob")")) << "no first answer";
  const std::string on = R"("online":true)", off = R"("online":false)";
  const size_t offline_at_start = watcher->count(off);
  auto elsewhere = [&](bool online, uint64_t order) {
    auto n = std::make_shared<bus::Notification>();
    n->kind = bus::Notification::Kind::kFrame;
    n->droppable = true;
    n->frame = std::make_shared<const std::string>(proto::encode_presence("bob", online, online ? 0 : 60000));
    n->seq = order;
    presence_.changed_elsewhere("bob", n);
  };
  presence_.device_attached("bob", 1, 10);  // decided here
  EXPECT_EQ(watcher->count(on), 1u);
  elsewhere(false, 5);  // decided elsewhere before it, arriving after it: dropped
  EXPECT_EQ(watcher->count(off), offline_at_start);
  elsewhere(false, 12);
  EXPECT_EQ(watcher->count(off), offline_at_start + 1);
  presence_.device_attached("bob", 1, 11);  // decided here, overtaken by order 12: dropped
  EXPECT_EQ(watcher->count(on), 1u);
  elsewhere(false, 12);  // the same change twice: once
  EXPECT_EQ(watcher->count(off), offline_at_start + 1);
  presence_.device_attached("bob", 1, 0);  // unordered: passes
  EXPECT_EQ(watcher->count(on), 2u);
  // A device that counted already (it moved, or replaced its own connection): bob was online.
  presence_.device_attached("bob", 1, 13, /*added=*/false);
  EXPECT_EQ(watcher->count(on), 2u);
  presence_.unsubscribe_all(7);
}

}  // namespace
}  // namespace tern::services
