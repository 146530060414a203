// Integration: fan-out on read (issue 9) against the real ternd.
//  - A group crossing --fanout-read-threshold up and down while messages flow: every device
//    gets every seq of its era exactly once, in order (live and on replay), on both sides.
//  - Channels: who may post, join/leave, private channels, subscriptions that go live without
//    a reconnect, replay from the last ack, no receipts to the poster, typing not relayed.
//  - A slow subscriber is cut off (1008) without delaying the others or the poster, and
//    replays everything when it comes back.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "support/media_http.h"
#include "support/server_test.h"

namespace tern::test {
namespace {

const std::vector<std::string> kFast = {"--send-rate",   "100000", "--send-burst",         "100000",
                                        "--create-rate", "0",      "--frame-rate",         "100000",
                                        "--frame-burst", "100000", "--channel-post-rate",  "100000",
                                        "--channel-post-burst", "100000"};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class TerndFanout : public ServerTest {
 protected:
  HttpResult post(const Account& who, const std::string& target, std::string body = "{}") {
    return http_request(port(), "POST", target, std::move(body), who.token);
  }
  HttpResult get(const Account& who, const std::string& target) {
    return http_request(port(), "GET", target, std::nullopt, who.token);
  }
  std::string must_channel(const Account& owner, const std::string& name, bool is_public = true) {
    auto r = post(owner, "/v1/conversations",
                  json::serialize(json::object{{"type", "channel"}, {"name", name}, {"public", is_public}}));
    EXPECT_EQ(r.status, 201) << r.body;
    return jstr(r.obj(), "conversation_id");
  }
  HttpResult join(const Account& who, const std::string& ch) { return post(who, "/v1/conversations/" + ch + "/join"); }
  HttpResult leave(const Account& who, const std::string& ch) {
    return post(who, "/v1/conversations/" + ch + "/leave");
  }
  HttpResult info(const Account& who, const std::string& conv) { return get(who, "/v1/conversations/" + conv); }

  // Reads the device's messages of `conv` until `last` (all seqs seen, in arrival order).
  static std::vector<Seq> seqs_until(Device& d, const std::string& conv, Seq last) {
    std::vector<json::object> skipped;
    auto msgs = d.collect_messages(conv, last, kDefaultTimeout, &skipped);
    return message_seqs(msgs, conv);
  }
};

// ---------------------------------------------------------------- threshold crossing

TEST_F(TerndFanout, GroupCrossingTheThresholdBothWaysLosesAndRepeatsNothing) {
  ASSERT_NO_FATAL_FAILURE(start_server(with(kFast, {"--fanout-read-threshold", "4"})));
  Account alice = api().must_register("alice"), bob = api().must_register("bob"),
          carol = api().must_register("carol"), dave = api().must_register("dave"),
          erin = api().must_register("erin");
  Account bob2 = api().must_link(bob);  // offline the whole time: replays everything at the end
  const std::string g = api().must_group(alice.token, "g", {"bob", "carol"});
  ASSERT_FALSE(g.empty());
  EXPECT_FALSE(jbool(info(alice, g).obj(), "fanout_on_read", true));

  Device da(alice), db(bob), dc(carol), dd(dave);
  std::map<Device*, std::vector<Seq>> replayed;  // what each device got before synced (seq 1)
  for (Device* d : {&da, &db, &dc, &dd}) {
    auto r = d->connect_synced(port());
    ASSERT_TRUE(r) << d->account.key();
    replayed[d] = message_seqs(*r, g);
  }
  auto all_seqs = [&](Device& d, Seq last) {
    std::vector<Seq> out = replayed[&d];
    for (Seq s : seqs_until(d, g, last)) out.push_back(s);
    return out;
  };

  // A sender that keeps sending while the membership changes under it.
  std::atomic<int> sent{0};
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread sender([&] {
    Device s(api().must_link(alice));
    if (!s.connect_synced(port())) {
      ++failures;
      return;
    }
    for (int i = 0; i < 400 && !stop.load(); ++i) {
      auto a = s.send_wait(g, "m" + std::to_string(i), "x");
      if (!a || type_of(*a) != "sent") ++failures;
      ++sent;
    }
  });
  auto await_sent = [&](int n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (sent.load() < n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return sent.load() >= n;
  };

  ASSERT_TRUE(await_sent(20));
  ASSERT_EQ(api().add_members(alice.token, g, {"dave"}).status, 200);  // 4 members: read side
  ASSERT_TRUE(await_sent(50));
  EXPECT_TRUE(jbool(info(alice, g).obj(), "fanout_on_read"));
  ASSERT_EQ(api().add_members(alice.token, g, {"erin"}).status, 200);  // 5
  ASSERT_TRUE(await_sent(80));
  ASSERT_EQ(api().remove_members(alice.token, g, {"erin"}).status, 200);  // 4: still read side
  ASSERT_TRUE(await_sent(110));
  ASSERT_EQ(api().remove_members(alice.token, g, {"dave"}).status, 200);  // 3: write side again
  const Seq dave_removed = api().head(alice.token, g);
  ASSERT_TRUE(await_sent(140));
  EXPECT_FALSE(jbool(info(alice, g).obj(), "fanout_on_read", true));
  ASSERT_EQ(api().add_members(alice.token, g, {"dave"}).status, 200);  // read side once more
  const Seq dave_back = api().head(alice.token, g);  // at or after the re-add's seq
  ASSERT_TRUE(await_sent(170));
  stop = true;
  sender.join();
  EXPECT_EQ(failures.load(), 0);
  const Seq head = api().head(alice.token, g);
  ASSERT_GT(head, 170u);

  // Live devices: every seq exactly once, in order (own sends included as messages for the
  // other alice device; the sending device is not among these).
  EXPECT_TRUE(dense_range(all_seqs(db, head), 1, head)) << "bob";
  EXPECT_TRUE(dense_range(all_seqs(dc, head), 1, head)) << "carol";
  EXPECT_TRUE(dense_range(all_seqs(da, head), 1, head)) << "alice's other device";
  // dave: his first era up to his removal, then the second era from his re-add.
  std::vector<Seq> dave_seqs = all_seqs(dd, head);
  // His eras from the log's system messages (heads read after a change may already be past it).
  std::vector<std::pair<std::string, Seq>> dave_changes;  // ("add"|"remove", seq)
  for (const auto& m : api().backfill_all(alice.token, g)) {
    const auto* sys = m.if_contains("system");
    if (!sys || !sys->is_object()) continue;
    const auto* users = sys->as_object().if_contains("users");
    if (!users || !users->is_array()) continue;
    for (const auto& u : users->as_array())
      if (u.is_string() && u.as_string() == "dave") dave_changes.emplace_back(jstr(sys->as_object(), "action"), seq_of(m));
  }
  ASSERT_EQ(dave_changes.size(), 3u);
  ASSERT_EQ(dave_changes[0].first, "add");
  ASSERT_EQ(dave_changes[1].first, "remove");
  ASSERT_EQ(dave_changes[2].first, "add");
  const Seq dave_joined = dave_changes[0].second;
  std::vector<Seq> expect;
  EXPECT_GE(dave_removed, dave_changes[1].second);
  EXPECT_GE(dave_back, dave_changes[2].second);
  for (Seq s = dave_joined; s <= dave_changes[1].second; ++s) expect.push_back(s);
  for (Seq s = dave_changes[2].second; s <= head; ++s) expect.push_back(s);
  EXPECT_EQ(dave_seqs, expect) << "dave joined " << dave_joined << ", removed " << dave_removed << ", back "
                               << dave_back << ", head " << head << "; got " << dave_seqs.size() << " seqs: "
                               << [&] {
                                    std::string out;
                                    for (size_t i = 0; i < dave_seqs.size(); ++i)
                                      if (i == 0 || dave_seqs[i] != dave_seqs[i - 1] + 1)
                                        out += "[" + std::to_string(i) + "]=" + std::to_string(dave_seqs[i]) + " ";
                                    return out;
                                  }();

  // A device that was offline across every crossing replays the whole log, then synced.
  Device db2(bob2);
  auto replay = db2.connect_synced(port());
  ASSERT_TRUE(replay);
  EXPECT_TRUE(dense_range(message_seqs(*replay, g), 1, head));
  // bob acks half, reconnects (read side now): replay resumes after the ack.
  ASSERT_TRUE(db2.ack(g, head / 2));
  db2.drain(std::chrono::milliseconds(300));
  db2.close();
  Device db2b(bob2);
  replay = db2b.connect_synced(port());
  ASSERT_TRUE(replay);
  EXPECT_TRUE(dense_range(message_seqs(*replay, g), head / 2 + 1, head));
}

TEST_F(TerndFanout, ReceiptsInALargeGroupAreCoalescedPerSender) {
  ASSERT_NO_FATAL_FAILURE(
      start_server(with(kFast, {"--fanout-read-threshold", "3", "--receipt-batch-ms", "1000"})));
  Account alice = api().must_register("alice"), bob = api().must_register("bob"),
          carol = api().must_register("carol");
  const std::string g = api().must_group(alice.token, "big", {"bob", "carol"});
  ASSERT_FALSE(g.empty());
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  ASSERT_TRUE(db.ack(g, 1));  // the create message
  da.drain(std::chrono::milliseconds(1500));
  std::vector<Seq> sent;
  for (int i = 0; i < 10; ++i) sent.push_back(da.must_send(g, "r" + std::to_string(i), "x"));
  auto got = db.collect_messages(g, sent.back());
  ASSERT_EQ(message_seqs(got, g).size(), 10u);
  for (Seq s : sent) ASSERT_TRUE(db.ack(g, s));  // ten acks, one per message
  // alice gets bob's latest delivered mark, in at most a few frames (one per window).
  std::vector<json::object> receipts;
  auto last = da.read_until(
      [&](const json::object& f) {
        if (type_of(f) != "receipt") return false;
        receipts.push_back(f);
        return jstr(f, "user") == "bob" && seq_of(f) == sent.back();
      },
      std::chrono::seconds(10));
  ASSERT_TRUE(last) << dump_frames(receipts);
  EXPECT_EQ(jstr(*last, "status"), "delivered");
  EXPECT_LE(receipts.size(), 3u) << "ten acks, coalesced: " << dump_frames(receipts);
}

// ---------------------------------------------------------------- channels

TEST_F(TerndFanout, ChannelPermissionsJoinLeaveAndPrivateChannels) {
  ASSERT_NO_FATAL_FAILURE(start_server(kFast));
  Account alice = api().must_register("alice"), bob = api().must_register("bob"),
          carol = api().must_register("carol");
  const std::string ch = must_channel(alice, "news");
  ASSERT_EQ(ch.rfind("ch-", 0), 0u) << ch;

  // Not yet a subscriber: the channel's details are not shown.
  EXPECT_EQ(info(bob, ch).status, 403);
  auto j = join(bob, ch);
  ASSERT_EQ(j.status, 200) << j.body;
  EXPECT_EQ(jint(j.obj(), "subscribers"), 2);
  EXPECT_EQ(jint(j.obj(), "joined_seq"), 1);
  EXPECT_EQ(jint(join(bob, ch).obj(), "subscribers"), 2) << "joining twice changes nothing";

  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  // A subscriber may not post; channels carry no per-device bodies.
  auto refused = db.send_wait(ch, "b1", "hi");
  ASSERT_TRUE(refused);
  EXPECT_EQ(type_of(*refused), "error");
  EXPECT_EQ(jstr(*refused, "code"), "forbidden") << dump(*refused);
  ASSERT_TRUE(da.send_bodies(ch, "bodies", {{"bob:1", "x"}}));
  auto bodies = da.wait_answer("bodies");
  ASSERT_TRUE(bodies);
  EXPECT_EQ(jstr(*bodies, "code"), "invalid_argument") << dump(*bodies);

  const Seq s1 = da.must_send(ch, "a1", "first post");
  EXPECT_EQ(s1, 1u);
  auto m = db.read_until("message");
  ASSERT_TRUE(m);
  EXPECT_EQ(seq_of(*m), s1);
  EXPECT_EQ(unb64(jstr(*m, "body")), "first post");
  // The subscriber acks and reads: no receipt frame goes to the poster, the view is counted.
  ASSERT_TRUE(db.ack(ch, s1));
  ASSERT_TRUE(db.read(ch, s1));
  // Typing in a channel is not relayed (and is no error).
  ASSERT_TRUE(db.typing(ch, true));
  auto quiet = da.drain(std::chrono::milliseconds(400));
  EXPECT_TRUE(only_type(quiet, "receipt").empty()) << dump_frames(quiet);
  EXPECT_TRUE(only_type(quiet, "typing").empty()) << dump_frames(quiet);
  EXPECT_TRUE(only_type(db.drain(std::chrono::milliseconds(100)), "error").empty());
  // The view is counted by the node that sequences the channel: on two nodes the read may
  // have been handled by the other one, which sends it there with its next batch (100 ms).
  HttpResult inf;
  EXPECT_TRUE(eventually([&] {
    inf = info(alice, ch);
    const auto* views = inf.status == 200 ? inf.obj().if_contains("views") : nullptr;
    if (!views || !views->is_array()) return false;
    const auto& v = views->as_array();
    return v.size() == 1 && v[0].is_object() && jint(v[0].as_object(), "views") == 1;
  })) << inf.body;
  ASSERT_EQ(inf.status, 200) << inf.body;
  EXPECT_EQ(jstr(inf.obj(), "type"), "channel");
  EXPECT_EQ(jstr(inf.obj(), "owner"), "alice");
  EXPECT_EQ(jint(inf.obj(), "subscribers"), 2);
  EXPECT_EQ(jint(inf.obj(), "head"), 1);
  ASSERT_TRUE(inf.obj().at("views").is_array());
  ASSERT_EQ(inf.obj().at("views").as_array().size(), 1u) << inf.body;
  EXPECT_EQ(jint(inf.obj().at("views").as_array()[0].as_object(), "views"), 1) << inf.body;

  // The list shows the channel to the subscriber.
  auto list = api().list_conversations(bob.token);
  ASSERT_EQ(list.status, 200);
  bool listed = false;
  for (const auto& c : list.obj().at("conversations").as_array())
    if (jstr(c.as_object(), "conversation_id") == ch) {
      listed = true;
      EXPECT_EQ(jstr(c.as_object(), "type"), "channel");
      EXPECT_EQ(jint(c.as_object(), "subscribers"), 2);
    }
  EXPECT_TRUE(listed) << list.body;

  // Leaving: no more posts reach bob; the owner cannot leave.
  ASSERT_EQ(leave(bob, ch).status, 200);
  EXPECT_EQ(leave(alice, ch).status, 400);
  const Seq s2 = da.must_send(ch, "a2", "second");
  auto after = db.drain(std::chrono::milliseconds(400));
  EXPECT_TRUE(message_seqs(after, ch).empty()) << dump_frames(after);
  EXPECT_EQ(api().messages(bob.token, ch).status, 403);

  // Admins: the owner names bob admin; bob may post now.
  auto admins = post(alice, "/v1/conversations/" + ch + "/admins", R"({"add":["bob"]})");
  ASSERT_EQ(admins.status, 200) << admins.body;
  EXPECT_EQ(post(bob, "/v1/conversations/" + ch + "/admins", R"({"add":["carol"]})").status, 403);
  const Seq s3 = db.must_send(ch, "b2", "from an admin");
  EXPECT_EQ(s3, s2 + 1);

  // Private channel: a join answers as if it did not exist; an admin's add lets carol in.
  const std::string priv = must_channel(alice, "inner", /*is_public=*/false);
  EXPECT_EQ(join(carol, priv).status, 404);
  EXPECT_EQ(join(carol, "ch-doesnotexist").status, 404);
  Device dc(carol);
  ASSERT_TRUE(dc.connect_synced(port()));
  auto add = post(alice, "/v1/conversations/" + priv + "/members", R"({"add":["carol"]})");
  ASSERT_EQ(add.status, 200) << add.body;
  EXPECT_EQ(jint(add.obj(), "subscribers"), 2);
  EXPECT_EQ(post(carol, "/v1/conversations/" + priv + "/members", R"({"add":["bob"]})").status, 403);
  // carol's open connection follows the channel at once (no reconnect).
  const Seq p1 = da.must_send(priv, "p1", "members only");
  auto got = dc.collect_messages(priv, p1);
  EXPECT_EQ(message_seqs(got, priv), std::vector<Seq>{p1});
}

TEST_F(TerndFanout, ChannelPostsAreRateLimitedPerChannel) {
  // Each post reaches every subscriber: the channel, not only each admin, has a post rate.
  ASSERT_NO_FATAL_FAILURE(start_server({"--send-rate", "100000", "--send-burst", "100000", "--channel-post-rate", "1",
                                        "--channel-post-burst", "5"}));
  Account alice = api().must_register("alice"), bob = api().must_register("bob");
  const std::string ch = must_channel(alice, "news");
  ASSERT_EQ(post(alice, "/v1/conversations/" + ch + "/admins", R"({"add":["bob"]})").status, 200);
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  int sent = 0, limited = 0;
  for (int i = 0; i < 8; ++i) {
    Device& d = i % 2 ? db : da;  // two admins share the channel's budget
    auto a = d.send_wait(ch, "p" + std::to_string(i), "x");
    ASSERT_TRUE(a);
    if (type_of(*a) == "sent") ++sent;
    else if (jstr(*a, "code") == "rate_limited" && jstr(*a, "ref") == "p" + std::to_string(i)) ++limited;
  }
  EXPECT_GE(sent, 5);
  EXPECT_LE(sent, 6);  // the burst, plus at most one token refilled meanwhile
  EXPECT_EQ(sent + limited, 8);
}

TEST_F(TerndFanout, ChannelsShareNoPresenceAndJoinsAreCapped) {
  ASSERT_NO_FATAL_FAILURE(start_server(with(kFast, {"--max-conversations-per-user", "2"})));
  Account alice = api().must_register("alice"), bob = api().must_register("bob"),
          carol = api().must_register("carol");
  const std::string a = must_channel(alice, "a"), b = must_channel(carol, "b"), c = must_channel(carol, "c");
  ASSERT_EQ(join(bob, a).status, 200);
  ASSERT_EQ(join(bob, b).status, 200);
  auto third = join(bob, c);
  EXPECT_EQ(third.status, 403) << third.body;
  EXPECT_EQ(third.error_code(), "limit_exceeded");
  // A subscriber does not see the owner's presence (they share no conversation but a channel).
  Device db(bob);
  ASSERT_TRUE(db.connect_synced(port()));
  ASSERT_TRUE(db.presence_subscribe({"alice"}));
  {
    Device da(alice);
    ASSERT_TRUE(da.connect_synced(port()));
    da.close();
  }
  for (const auto& f : db.drain(std::chrono::milliseconds(700)))
    EXPECT_NE(type_of(f), "presence") << "bob got " << dump(f);
  // Leaving one makes room for another.
  ASSERT_EQ(leave(bob, a).status, 200);
  EXPECT_EQ(join(bob, c).status, 200);
}

TEST_F(TerndFanout, SubscriberReplaysFromItsLastAckAndPosterDevicesAllGetPosts) {
  ASSERT_NO_FATAL_FAILURE(start_server(kFast));
  Account alice = api().must_register("alice"), bob = api().must_register("bob");
  Account alice2 = api().must_link(alice);
  const std::string ch = must_channel(alice, "feed");
  ASSERT_EQ(join(bob, ch).status, 200);
  Device da(alice), da2(alice2);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(da2.connect_synced(port()));
  for (int i = 1; i <= 50; ++i) ASSERT_EQ(da.must_send(ch, "p" + std::to_string(i), "post"), static_cast<Seq>(i));
  // The poster's other device gets every post; the posting device none of its own.
  EXPECT_TRUE(dense_range(seqs_until(da2, ch, 50), 1, 50));
  EXPECT_TRUE(message_seqs(da.drain(std::chrono::milliseconds(300)), ch).empty());

  // bob was offline: everything, then synced.
  Device db(bob);
  auto replay = db.connect_synced(port());
  ASSERT_TRUE(replay);
  EXPECT_TRUE(dense_range(message_seqs(*replay, ch), 1, 50));
  ASSERT_TRUE(db.ack(ch, 30));
  db.drain(std::chrono::milliseconds(300));
  db.close();
  for (int i = 51; i <= 60; ++i) ASSERT_EQ(da.must_send(ch, "p" + std::to_string(i), "post"), static_cast<Seq>(i));
  Device db2(bob);
  replay = db2.connect_synced(port());
  ASSERT_TRUE(replay);
  EXPECT_TRUE(dense_range(message_seqs(*replay, ch), 31, 60));
  // And live after synced.
  const Seq s = da.must_send(ch, "live", "post");
  EXPECT_EQ(message_seqs(db2.collect_messages(ch, s), ch), std::vector<Seq>{s});
  // A restart keeps subscriptions, count and log.
  ASSERT_NO_FATAL_FAILURE(restart_server());
  EXPECT_EQ(jint(info(alice, ch).obj(), "subscribers"), 2);
  Device db3(bob);
  replay = db3.connect_synced(port());
  ASSERT_TRUE(replay);
  EXPECT_TRUE(dense_range(message_seqs(*replay, ch), 31, s));
}

// A following subscriber's acks move its cursor without reading its subscription row from
// the store (its session verified the row when it followed): with 19,000 subscribers that
// is 19,000 store reads per post saved on the channel's owning loop.
TEST_F(TerndFanout, FollowingSubscribersAckWithoutStoreReads) {
  ASSERT_NO_FATAL_FAILURE(start_server(kFast));
  Account alice = api().must_register("alice"), bob = api().must_register("bob");
  const std::string ch = must_channel(alice, "feed");
  ASSERT_EQ(join(bob, ch).status, 200);
  Device da(alice), db(bob);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_TRUE(db.connect_synced(port()));
  constexpr int kPosts = 10;
  for (int i = 1; i <= kPosts; ++i) ASSERT_EQ(da.must_send(ch, "p" + std::to_string(i), "post"), static_cast<Seq>(i));
  ASSERT_TRUE(dense_range(seqs_until(db, ch, kPosts), 1, kPosts));

  // Reading /metrics authenticates, which may read the store itself: measure that first.
  const double probe = metric(alice, "tern_store_reads_total");
  const double reads_before = metric(alice, "tern_store_reads_total");
  const double reads_per_probe = reads_before - probe;
  const double writes_before = metric(alice, "tern_store_writes_total");
  int probes = 1;
  for (int i = 1; i <= kPosts; ++i) ASSERT_TRUE(db.ack(ch, static_cast<Seq>(i)));
  // Each ack commits one cursor write: await all of them (bounded).
  const auto deadline = std::chrono::steady_clock::now() + kDefaultTimeout;
  double writes = writes_before;
  while (writes < writes_before + kPosts && std::chrono::steady_clock::now() < deadline) {
    db.drain(std::chrono::milliseconds(20));
    writes = metric(alice, "tern_store_writes_total");
    ++probes;
  }
  ASSERT_GE(writes, writes_before + kPosts);
  const double reads = metric(alice, "tern_store_reads_total") - reads_before - reads_per_probe * (probes + 1);
  EXPECT_LT(reads, kPosts) << "a store read per ack (" << reads_per_probe << " per /metrics call)";
  // The cursor moved: a new connection replays nothing of the acked posts.
  db.close();
  Device db2(bob);
  auto replay = db2.connect_synced(port());
  ASSERT_TRUE(replay);
  EXPECT_TRUE(message_seqs(*replay, ch).empty());
}

TEST_F(TerndFanout, SlowSubscriberIsCutOffWithoutDelayingTheOthers) {
  ASSERT_NO_FATAL_FAILURE(start_server(kFast));
  Account alice = api().must_register("alice"), bob = api().must_register("bob"),
          carol = api().must_register("carol");
  const std::string ch = must_channel(alice, "big");
  ASSERT_EQ(join(bob, ch).status, 200);
  ASSERT_EQ(join(carol, ch).status, 200);
  Device da(alice), slow(bob), fast(carol);
  ASSERT_TRUE(da.connect_synced(port()));
  WsOptions small;
  small.receive_buffer_bytes = 4096;
  ASSERT_EQ(slow.connect(port(), small), 101);
  ASSERT_TRUE(slow.until_synced());
  ASSERT_TRUE(fast.connect_synced(port()));
  slow.pause_reading();

  // 160 posts of 48 KiB: 7.5 MiB, more than the per-connection write queue (1 MiB) plus
  // what the kernel's socket buffers on both sides take on loopback (up to 4 MiB + 6 MiB).
  const std::string body(48 * 1024, 'p');
  const int n = 160;
  for (int i = 1; i <= n; ++i) {
    auto a = da.send_wait(ch, "big" + std::to_string(i), body);
    ASSERT_TRUE(a);
    ASSERT_EQ(type_of(*a), "sent") << dump(*a);
  }
  // The fast subscriber got everything while the slow one was stuck.
  EXPECT_TRUE(dense_range(seqs_until(fast, ch, n), 1, n));
  // The slow one is disconnected as a slow consumer...
  slow.resume_reading();
  ASSERT_TRUE(slow.wait_closed(std::chrono::seconds(20)));
  EXPECT_EQ(slow.close_code().value_or(0), 1008);
  // ...and replays everything when it comes back.
  Device again(bob);
  auto replay = again.connect_synced(port(), std::chrono::seconds(30));
  ASSERT_TRUE(replay);
  EXPECT_TRUE(dense_range(message_seqs(*replay, ch), 1, n));
}

}  // namespace
}  // namespace tern::test
