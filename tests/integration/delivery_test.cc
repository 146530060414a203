// Integration: idempotent send (same connection, across reconnects, across a restart),
// cumulative ack and replay-then-synced-then-live, replay-before-live under concurrent sends,
// delivered/read receipts to online and offline senders, per-device bodies.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "support/server_test.h"

namespace tern::test {
namespace {

const std::vector<std::string> kFastSend = {"--send-rate", "100000", "--send-burst", "100000"};

class TerndDelivery : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_server(kFastSend));
    alice = api().must_register("alice");
    bob = api().must_register("bob");
    conv = api().must_direct(alice.token, "bob");
    ASSERT_FALSE(conv.empty());
  }
  Account alice, bob;
  std::string conv;
};

TEST_F(TerndDelivery, RetryOnSameConnectionGetsSameSeqAndTs) {
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  auto first = da.send_wait(conv, "dup-1", "once");
  ASSERT_TRUE(first && type_of(*first) == "sent");
  auto again = da.send_wait(conv, "dup-1", "once");
  ASSERT_TRUE(again && type_of(*again) == "sent") << (again ? dump(*again) : "none");
  EXPECT_EQ(seq_of(*again), seq_of(*first));
  EXPECT_EQ(jint(*again, "ts"), jint(*first, "ts"));

  // Two copies in flight at once are still one message.
  ASSERT_TRUE(da.send(conv, "dup-2", "twice"));
  ASSERT_TRUE(da.send(conv, "dup-2", "twice"));
  auto a1 = da.wait_answer("dup-2");
  auto a2 = da.wait_answer("dup-2");
  ASSERT_TRUE(a1 && a2);
  ASSERT_EQ(type_of(*a1), "sent") << dump(*a1);
  ASSERT_EQ(type_of(*a2), "sent") << dump(*a2);
  EXPECT_EQ(seq_of(*a1), seq_of(*a2));
  EXPECT_EQ(jint(*a1, "ts"), jint(*a2, "ts"));
  EXPECT_EQ(seq_of(*a1), seq_of(*first) + 1);

  // The recipient gets each message once (live), and the log holds each once.
  auto got = db.collect_messages(conv, seq_of(*a1));
  auto extra = db.drain(ms(500));
  auto seqs = message_seqs(got, conv);
  for (Seq s : message_seqs(extra, conv)) seqs.push_back(s);
  EXPECT_TRUE(dense_range(seqs, seq_of(*first), seq_of(*a1))) << dump_frames(got);
  EXPECT_EQ(api().head(alice.token, conv), seq_of(*a1));
}

TEST_F(TerndDelivery, RetryAcrossReconnectGetsSameSeqAndTs) {
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  auto first = da.send_wait(conv, "rc-1", "payload");
  ASSERT_TRUE(first && type_of(*first) == "sent");
  da.close();
  ASSERT_TRUE(da.connect_synced(port()));
  auto again = da.send_wait(conv, "rc-1", "payload");
  ASSERT_TRUE(again && type_of(*again) == "sent") << (again ? dump(*again) : "none");
  EXPECT_EQ(seq_of(*again), seq_of(*first));
  EXPECT_EQ(jint(*again, "ts"), jint(*first, "ts"));
  // A connection dropped without a close handshake changes nothing either.
  da.abort();
  ASSERT_TRUE(da.connect_synced(port()));
  auto third = da.send_wait(conv, "rc-1", "payload");
  ASSERT_TRUE(third && type_of(*third) == "sent");
  EXPECT_EQ(seq_of(*third), seq_of(*first));
  EXPECT_EQ(jint(*third, "ts"), jint(*first, "ts"));
  EXPECT_EQ(api().head(alice.token, conv), seq_of(*first));
}

TEST_F(TerndDelivery, IdempotencyIsPerDevice) {
  Account alice2 = api().must_link(alice);
  Device d1(alice), d2(alice2);
  ASSERT_TRUE(d1.connect_synced(port()));
  ASSERT_TRUE(d2.connect_synced(port()));
  Seq s1 = d1.must_send(conv, "same-id", "from d1");
  Seq s2 = d2.must_send(conv, "same-id", "from d2");
  EXPECT_EQ(s2, s1 + 1) << "another device's client_msg_id is a different message";
}

TEST_F(TerndDelivery, RetryAfterServerRestartGetsSameSeqAndTs) {
  std::map<std::string, std::pair<Seq, int64_t>> sent;
  {
    Device da(alice);
    ASSERT_TRUE(da.connect_synced(port()));
    for (int i = 1; i <= 3; ++i) {
      std::string id = "rs-" + std::to_string(i);
      auto s = da.send_wait(conv, id, "before restart " + std::to_string(i));
      ASSERT_TRUE(s && type_of(*s) == "sent");
      sent[id] = {seq_of(*s), jint(*s, "ts")};
    }
  }
  ASSERT_NO_FATAL_FAILURE(restart_server(/*graceful=*/false));
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  for (const auto& [id, st] : sent) {
    auto s = da.send_wait(conv, id, "retried");
    ASSERT_TRUE(s && type_of(*s) == "sent") << id << ": " << (s ? dump(*s) : "none");
    EXPECT_EQ(seq_of(*s), st.first) << id;
    EXPECT_EQ(jint(*s, "ts"), st.second) << id;
  }
  EXPECT_EQ(api().head(alice.token, conv), sent["rs-3"].first);
  // New ids continue the sequence.
  EXPECT_EQ(da.must_send(conv, "rs-4", "after"), sent["rs-3"].first + 1);
}

TEST_F(TerndDelivery, AckThenReconnectReplaysOnlyAfterAckThenSyncedThenLive) {
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  const Seq h0 = api().head(alice.token, conv);
  for (int i = 1; i <= 5; ++i) da.must_send(conv, "a-" + std::to_string(i), "m" + std::to_string(i));
  auto live = db.collect_messages(conv, h0 + 5);
  ASSERT_TRUE(dense_range(message_seqs(live, conv), h0 + 1, h0 + 5)) << dump_frames(live);
  ASSERT_TRUE(db.ack(conv, h0 + 3));
  db.close();  // the close handshake follows the ack on the same connection

  for (int i = 6; i <= 7; ++i) da.must_send(conv, "a-" + std::to_string(i), "m" + std::to_string(i));

  ASSERT_EQ(db.connect(port()), 101);
  std::vector<json::object> replay;
  ASSERT_TRUE(db.read_until("synced", kDefaultTimeout, &replay)) << dump_frames(replay);
  EXPECT_TRUE(dense_range(message_seqs(replay, conv), h0 + 4, h0 + 7))
      << "replay after ack " << h0 + 3 << " must be exactly the later messages:\n" << dump_frames(replay);
  for (const auto& m : only_type(replay, "message", conv)) {
    const Seq s = seq_of(m);
    EXPECT_EQ(unb64(jstr(m, "body")), "m" + std::to_string(s - h0)) << dump(m);
  }
  // Then live.
  Seq s8 = da.must_send(conv, "a-8", "m8");
  auto after = db.collect_messages(conv, s8);
  EXPECT_TRUE(dense_range(message_seqs(after, conv), s8, s8)) << dump_frames(after);

  // Without any further ack, the next connection replays again from the last ack.
  db.close();
  auto again = db.connect_synced(port());
  ASSERT_TRUE(again);
  EXPECT_TRUE(dense_range(message_seqs(*again, conv), h0 + 4, s8)) << dump_frames(*again);
}

// Guarantee 4 says each device of each member receives every message of the conversation;
// a device linked after some messages were written is such a device and has acked nothing.
TEST_F(TerndDelivery, NewlyLinkedDeviceReplaysEarlierMessages) {
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  Seq last = 0;
  for (int i = 1; i <= 3; ++i) last = da.must_send(conv, "early-" + std::to_string(i), "early");
  Account bob2 = api().must_link(bob);
  Device db2(bob2);
  auto fresh = db2.connect_synced(port());
  ASSERT_TRUE(fresh);
  EXPECT_TRUE(dense_range(message_seqs(*fresh, conv), 1, last))
      << "a device linked later replays nothing of the conversation's earlier messages:\n" << dump_frames(*fresh);
  // After synced only new messages arrive live (history belongs before synced).
  const Seq s = da.must_send(conv, "late", "late");
  auto after = db2.collect_messages(conv, s);
  EXPECT_TRUE(dense_range(message_seqs(after, conv), s, s))
      << "after synced the device must get only the new message:\n" << dump_frames(after);
}

TEST_F(TerndDelivery, AckIsCumulativeAcrossConversations) {
  api().must_register("carol");
  std::string conv2 = api().must_group(alice.token, "g", {"bob", "carol"});
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  const Seq h1 = api().head(alice.token, conv);
  const Seq h2 = api().head(alice.token, conv2);
  for (int i = 1; i <= 3; ++i) {
    da.must_send(conv, "x-" + std::to_string(i), "d");
    da.must_send(conv2, "y-" + std::to_string(i), "g");
  }
  ASSERT_TRUE(db.ack(conv, h1 + 3));  // all of the direct conversation
  ASSERT_TRUE(db.ack(conv2, h2 + 1));  // only the first of the group
  db.close();
  auto replay = db.connect_synced(port());
  ASSERT_TRUE(replay);
  EXPECT_TRUE(message_seqs(*replay, conv).empty()) << dump_frames(*replay);
  EXPECT_TRUE(dense_range(message_seqs(*replay, conv2), h2 + 2, h2 + 3)) << dump_frames(*replay);
}

// A sender keeps sending while the receiver drops and reconnects: on every connection the
// receiver sees one contiguous run of seqs (replay, then `synced`, then live), starting right
// after its last ack, and in the end it has everything.
TEST_F(TerndDelivery, ReplayBeforeLiveUnderConcurrentSends) {
  constexpr int kMessages = 150;
  const Seq h0 = api().head(alice.token, conv);
  const Seq last = h0 + kMessages;
  std::atomic<bool> sender_done{false};
  std::atomic<int> sender_failures{0};
  std::thread sender([&] {
    Device da(alice);
    if (da.connect(port()) != 101 || !da.until_synced()) {
      sender_failures++;
      sender_done = true;
      return;
    }
    for (int i = 1; i <= kMessages; ++i) {
      auto a = da.send_wait(conv, "cc-" + std::to_string(i), "n" + std::to_string(i));
      if (!a || type_of(*a) != "sent") sender_failures++;
      std::this_thread::sleep_for(ms(4));
    }
    sender_done = true;
  });

  Device db(bob);
  Seq acked = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  int connections = 0;
  while (acked < last && std::chrono::steady_clock::now() < deadline && connections < 200) {
    ++connections;
    ASSERT_EQ(db.connect(port()), 101);
    std::vector<json::object> frames;
    bool synced = false;
    int live = 0;
    std::vector<Seq> seqs;
    // One connection: read until synced and then ~20 live messages (or the end).
    const auto conn_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < conn_deadline) {
      auto f = db.read_frame(ms(2000));
      if (!f) {
        if (sender_done && synced && (seqs.empty() ? acked : seqs.back()) >= last) break;
        continue;  // bounded by conn_deadline
      }
      const std::string t = type_of(*f);
      if (t == "synced") {
        EXPECT_FALSE(synced) << "second synced on one connection";
        synced = true;
      } else if (t == "message" && jstr(*f, "conversation_id") == conv) {
        seqs.push_back(seq_of(*f));
        if (synced) ++live;
        if (seqs.back() >= last && synced) break;
        if (live >= 20) break;
      }
      frames.push_back(std::move(*f));
    }
    ASSERT_TRUE(synced) << "connection " << connections << " never got synced:\n" << dump_frames(frames);
    ASSERT_TRUE(contiguous(seqs)) << "connection " << connections << ":\n" << dump_frames(frames, 80);
    if (!seqs.empty()) {
      // Resuming earlier than the ack only repeats messages (allowed: "may arrive twice");
      // resuming later would lose some. The exact resume point is AckThenReconnect's job.
      EXPECT_LE(seqs.front(), acked + 1) << "connection " << connections << " skipped messages after ack "
                                         << acked << ":\n" << dump_frames(frames);
      acked = std::max(acked, seqs.back());
      ASSERT_TRUE(db.ack(conv, acked));
    }
    db.close();
  }
  sender.join();
  EXPECT_EQ(sender_failures.load(), 0);
  EXPECT_EQ(acked, last) << "receiver ended at " << acked << " after " << connections << " connections";
  EXPECT_GE(connections, 2);
}

TEST_F(TerndDelivery, ReceiptsReachOnlineSenderDevices) {
  Account alice2 = api().must_link(alice);
  Device da(alice), da2(alice2), db(bob);
  for (Device* d : {&da, &da2, &db}) ASSERT_TRUE(d->connect_synced(port()));
  const Seq s1 = da.must_send(conv, "rcpt-1", "one");
  const Seq s2 = da.must_send(conv, "rcpt-2", "two");
  da.must_send(conv, "rcpt-3", "three");
  db.collect_messages(conv, s2 + 1);

  ASSERT_TRUE(db.ack(conv, s2));
  for (Device* d : {&da, &da2}) {
    std::vector<json::object> seen;
    auto r = d->read_until(
        [&](const json::object& o) { return type_of(o) == "receipt" && jstr(o, "status") == "delivered" && seq_of(o) >= s2; },
        kDefaultTimeout, &seen);
    ASSERT_TRUE(r) << d->account.key() << " got no delivered receipt:\n" << dump_frames(seen);
    EXPECT_EQ(jstr(*r, "conversation_id"), conv);
    EXPECT_EQ(jstr(*r, "user"), "bob");
    EXPECT_EQ(seq_of(*r), s2) << dump(*r);
    for (const auto& f : only_type(seen, "receipt"))
      EXPECT_LE(seq_of(f), s2) << "receipt beyond the ack: " << dump(f);
  }

  ASSERT_TRUE(db.read(conv, s1));
  for (Device* d : {&da, &da2}) {
    std::vector<json::object> seen;
    auto r = d->read_until(
        [&](const json::object& o) { return type_of(o) == "receipt" && jstr(o, "status") == "read"; }, kDefaultTimeout,
        &seen);
    ASSERT_TRUE(r) << d->account.key() << " got no read receipt:\n" << dump_frames(seen);
    EXPECT_EQ(jstr(*r, "conversation_id"), conv);
    EXPECT_EQ(jstr(*r, "user"), "bob");
    EXPECT_EQ(seq_of(*r), s1) << dump(*r);
  }
}

// Alice sends two messages and goes offline; Bob acks and reads them; returns the last seq.
Seq receipts_while_sender_offline(uint16_t port, const Account& alice, const Account& bob, const std::string& conv) {
  Seq s2 = 0;
  {
    Device da(alice);
    EXPECT_TRUE(da.connect_synced(port));
    da.must_send(conv, "off-1", "one");
    s2 = da.must_send(conv, "off-2", "two");
    da.close();
  }
  Device db(bob);
  auto replay = db.connect_synced(port);
  EXPECT_TRUE(replay);
  if (replay) {
    EXPECT_FALSE(message_seqs(*replay, conv).empty()) << dump_frames(*replay);
  }
  EXPECT_TRUE(db.ack(conv, s2));
  EXPECT_TRUE(db.read(conv, s2));
  db.close();
  return s2;
}

// Alice reconnects and must get delivered and read receipts from Bob for `seq`.
void expect_receipts_on_reconnect(uint16_t port, const Account& alice, const std::string& conv, Seq seq) {
  Device da(alice);
  ASSERT_EQ(da.connect(port), 101);
  // Receipts may come before or after `synced`; gather for a bounded time.
  std::vector<json::object> frames;
  bool delivered = false, read = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(delivered && read) && std::chrono::steady_clock::now() < until) {
    auto f = da.read_frame(ms(500));
    if (!f) continue;
    if (type_of(*f) == "receipt" && jstr(*f, "conversation_id") == conv && jstr(*f, "user") == "bob" &&
        seq_of(*f) == seq) {
      if (jstr(*f, "status") == "delivered") delivered = true;
      if (jstr(*f, "status") == "read") read = true;
    }
    frames.push_back(std::move(*f));
  }
  EXPECT_TRUE(delivered) << "no delivered receipt for seq " << seq << ":\n" << dump_frames(frames);
  EXPECT_TRUE(read) << "no read receipt for seq " << seq << ":\n" << dump_frames(frames);
}

TEST_F(TerndDelivery, GroupReceiptsGoToTheSendersOfCoveredMessagesOnly) {
  Account carol = api().must_register("carol");
  const std::string group = api().must_group(alice.token, "trio", {"bob", "carol"});
  Device da(alice), db(bob), dc(carol);
  for (Device* d : {&da, &db, &dc}) ASSERT_TRUE(d->connect_synced(port()));
  const Seq s = da.must_send(group, "g-1", "from alice");
  db.collect_messages(group, s);
  dc.collect_messages(group, s);
  ASSERT_TRUE(db.ack(group, s));
  auto r = da.read_until([](const json::object& o) { return type_of(o) == "receipt"; });
  ASSERT_TRUE(r) << "the sender got no receipt";
  EXPECT_EQ(jstr(*r, "user"), "bob");
  EXPECT_EQ(seq_of(*r), s);
  for (const auto& f : dc.drain(ms(500)))
    EXPECT_NE(type_of(f), "receipt") << "carol sent nothing, so bob's receipt is not hers: " << dump(f);
  // The durable state still reaches any member that reconnects.
  dc.close();
  Device dc2(carol);
  ASSERT_TRUE(dc2.connect_synced(port()));
  auto state = dc2.read_until([](const json::object& o) { return type_of(o) == "receipt"; });
  ASSERT_TRUE(state);
  EXPECT_EQ(jstr(*state, "user"), "bob");
}

TEST_F(TerndDelivery, ReceiptsReachOfflineSenderOnReconnect) {
  const Seq s2 = receipts_while_sender_offline(port(), alice, bob, conv);
  ASSERT_GT(s2, 0u);
  expect_receipts_on_reconnect(port(), alice, conv, s2);
}

TEST_F(TerndDelivery, ReceiptsAreDurableAcrossRestart) {
  const Seq s2 = receipts_while_sender_offline(port(), alice, bob, conv);
  ASSERT_GT(s2, 0u);
  ASSERT_NO_FATAL_FAILURE(restart_server(/*graceful=*/true));
  expect_receipts_on_reconnect(port(), alice, conv, s2);
}

TEST_F(TerndDelivery, PerDeviceBodiesAndDeviceMismatch) {
  Account alice2 = api().must_link(alice);
  Account bob2 = api().must_link(bob);
  Device da(alice), da2(alice2), db(bob), db2(bob2);
  for (Device* d : {&da, &da2, &db, &db2}) ASSERT_TRUE(d->connect_synced(port()));

  // Wrong key set: bob:2 and alice:2 missing, carol:1 extra (and the sender's own device is
  // not a recipient, so it is extra too).
  api().must_register("carol");
  ASSERT_TRUE(da.send_bodies(conv, "pd-1", {{"bob:1", "for b1"}, {"carol:1", "for c1"}, {"alice:1", "self"}}));
  auto err = da.wait_answer("pd-1");
  ASSERT_TRUE(err);
  ASSERT_EQ(type_of(*err), "error") << dump(*err);
  EXPECT_EQ(jstr(*err, "code"), "device_mismatch") << dump(*err);
  EXPECT_EQ(jstr(*err, "ref"), "pd-1");
  auto keys = [](const json::object& o, std::string_view k) {
    std::set<std::string> out;
    if (const auto* v = o.if_contains(k); v && v->is_array())
      for (const auto& e : v->as_array())
        if (e.is_string()) out.insert(std::string(e.as_string()));
    return out;
  };
  EXPECT_EQ(keys(*err, "missing"), (std::set<std::string>{"alice:2", "bob:2"})) << dump(*err);
  EXPECT_EQ(keys(*err, "extra"), (std::set<std::string>{"alice:1", "carol:1"})) << dump(*err);

  // Nothing was stored; the retry with the same client_msg_id and the right keys succeeds.
  const Seq h = api().head(alice.token, conv);
  ASSERT_TRUE(da.send_bodies(conv, "pd-1", {{"bob:1", "for b1"}, {"bob:2", "for b2"}, {"alice:2", "for a2"}}));
  auto ok = da.wait_answer("pd-1");
  ASSERT_TRUE(ok && type_of(*ok) == "sent") << (ok ? dump(*ok) : "none");
  EXPECT_EQ(seq_of(*ok), h + 1);
  const std::pair<Device*, const char*> expect[] = {{&db, "for b1"}, {&db2, "for b2"}, {&da2, "for a2"}};
  for (const auto& [d, body] : expect) {
    auto m = d->read_until("message");
    ASSERT_TRUE(m) << d->account.key();
    EXPECT_EQ(seq_of(*m), h + 1);
    EXPECT_EQ(unb64(jstr(*m, "body")), body) << d->account.key() << ": " << dump(*m);
    EXPECT_FALSE(m->contains("bodies")) << "a device must see only its own payload: " << dump(*m);
  }
  // Replay renders the per-device body too.
  db2.close();
  auto replay = db2.connect_synced(port());
  ASSERT_TRUE(replay);
  auto msgs = only_type(*replay, "message", conv);
  ASSERT_FALSE(msgs.empty());
  EXPECT_EQ(seq_of(msgs.back()), h + 1);
  EXPECT_EQ(unb64(jstr(msgs.back(), "body")), "for b2") << dump(msgs.back());
}

}  // namespace
}  // namespace tern::test
