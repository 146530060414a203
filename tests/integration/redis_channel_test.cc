// Integration: channels on two ternd nodes on one redis-server (issue 10, docs/scaling.md
// "Channels across nodes"): a channel's changes and its views are made and counted by the
// node that sequences it, whichever node the client reached.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "integration/channel_joins.h"
#include "integration/redis_nodes.h"
#include "store/redis/testing/redis_server.h"
#include "support/server_test.h"

namespace tern::test {
namespace {

// A public channel "news" of `owner`'s, made through node n; its id ("" on failure, reported).
std::string public_channel(Node& n, const Account& owner) {
  auto made = http_request(n.server->port(), "POST", "/v1/conversations",
                           R"({"type":"channel","name":"news","public":true})", owner.token);
  EXPECT_EQ(made.status, 201) << made.body;
  return made.status == 201 ? jstr(made.obj(), "conversation_id") : "";
}

// A channel's subscriber count changed through one node is the count on the other: a join
// takes no seq and no system message, so the node announces the change and the other drops
// its copy of the channel. Without it node b answered the count it had cached, and a join
// through b wrote that stale count back (one subscriber lost from the count).
TEST_F(RedisTest, AChannelJoinedThroughOneNodeIsCountedOnTheOther) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b"));
  Account alice = a_.api->must_register("alice");
  Account bob = a_.api->must_register("bob");
  Account carol = a_.api->must_register("carol");
  const std::string ch = public_channel(a_, alice);
  ASSERT_FALSE(ch.empty());
  auto count_on = [&](Node& n) {
    auto r = http_request(n.server->port(), "GET", "/v1/conversations/" + ch, std::nullopt, alice.token);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.status == 200 ? jint(r.obj(), "subscribers") : -1;
  };
  auto await_count = [&](Node& n, int64_t want) {
    for (int i = 0; i < 100; ++i) {
      if (count_on(n) == want) return true;
      std::this_thread::sleep_for(ms(50));
    }
    return false;
  };
  EXPECT_EQ(count_on(b_), 1);  // node b holds the channel now
  auto joined = http_request(a_.server->port(), "POST", "/v1/conversations/" + ch + "/join", "{}", bob.token);
  ASSERT_EQ(joined.status, 200) << joined.body;
  EXPECT_EQ(jint(joined.obj(), "subscribers"), 2);
  EXPECT_TRUE(await_count(b_, 2)) << "node b kept the count it cached";
  joined = http_request(b_.server->port(), "POST", "/v1/conversations/" + ch + "/join", "{}", carol.token);
  ASSERT_EQ(joined.status, 200) << joined.body;
  EXPECT_EQ(jint(joined.obj(), "subscribers"), 3);
  EXPECT_TRUE(await_count(a_, 3));
}

class RedisChannelTest : public RedisTest {
 protected:
  // 16 users join alice's public channel at once, half through each node (started with
  // `args`): the answers are the counts 2 to 17, each once, and both nodes then show 17.
  void expect_joins_at_once_each_counted_on_two_nodes(const std::vector<std::string>& args);
};

void RedisChannelTest::expect_joins_at_once_each_counted_on_two_nodes(const std::vector<std::string>& args) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a", args));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b", args));
  Account alice = a_.api->must_register("alice");
  std::vector<Account> users;
  for (int i = 0; i < 16; ++i) users.push_back((i % 2 ? b_ : a_).api->must_register("user" + std::to_string(i)));
  ASSERT_NO_FATAL_FAILURE(await_both_live(alice, users[1]));
  const std::string ch = public_channel(a_, alice);
  ASSERT_FALSE(ch.empty());
  expect_joins_at_once_each_counted({a_.server->port(), b_.server->port()}, users, ch, alice);
}

// Joins through two nodes at once are made by the channel's sequencing node, one after the
// other (channel_forwarding.h). Made where they arrived, two joins within the other node's
// announcement counted from the same copy: an answer twice, and a subscriber lost from the
// stored count.
TEST_F(RedisChannelTest, JoinsThroughTwoNodesAtOnceAreEachCounted) {
  expect_joins_at_once_each_counted_on_two_nodes({});
}

// With routing off (`--redis-route-sends 0`) each node makes the changes it receives, as two
// nodes whose live sets differ both do: a join computed from a copy of the channel that is no
// longer stored is refused by the store and made again from the stored record
// (store::PutConversation::expected). Before, answers came twice and the count lost joins.
TEST_F(RedisChannelTest, JoinsThroughTwoNodesThatBothSequenceTheChannelAreEachCounted) {
  expect_joins_at_once_each_counted_on_two_nodes({"--redis-route-sends", "0"});
}

// A channel's views are counted by its sequencing node whichever node handled the read: bob
// reads through a and carol through b, so one of the two reads reaches the node that does not
// sequence the channel, which sends it there with its next batch (ChannelViews), and the
// channel's info through either node shows both. Counted where each read was handled, the
// nodes showed 1 and 1, or 2 and 0.
TEST_F(RedisTest, AChannelsViewsCountTheReadsThroughEitherNode) {
  ASSERT_NO_FATAL_FAILURE(start_node(a_, redis_, "a"));
  ASSERT_NO_FATAL_FAILURE(start_node(b_, redis_, "b"));
  Account alice = a_.api->must_register("alice");
  Account bob = a_.api->must_register("bob");
  Account carol = b_.api->must_register("carol");
  ASSERT_NO_FATAL_FAILURE(await_both_live(alice, carol));
  const std::string ch = public_channel(a_, alice);
  ASSERT_FALSE(ch.empty());
  for (auto [n, who] : {std::pair{&a_, &bob}, std::pair{&b_, &carol}}) {
    auto joined = http_request(n->server->port(), "POST", "/v1/conversations/" + ch + "/join", "{}", who->token);
    ASSERT_EQ(joined.status, 200) << joined.body;
  }
  Device da(alice), db(bob), dc(carol);
  ASSERT_TRUE(da.connect_synced(a_.server->port()));
  ASSERT_TRUE(db.connect_synced(a_.server->port()));
  ASSERT_TRUE(dc.connect_synced(b_.server->port()));
  const Seq post = da.must_send(ch, "p1", "post");
  ASSERT_EQ(post, 1u);
  for (Device* d : {&db, &dc}) {
    auto m = d->read_until("message");
    ASSERT_TRUE(m);
    ASSERT_EQ(seq_of(*m), post);
    ASSERT_TRUE(d->read(ch, post));
  }
  // The post's views through node n (-1 until the info lists them).
  auto views_on = [&](Node& n) -> int64_t {
    auto r = http_request(n.server->port(), "GET", "/v1/conversations/" + ch, std::nullopt, alice.token);
    const auto* v = r.status == 200 ? r.obj().if_contains("views") : nullptr;
    if (!v || !v->is_array() || v->as_array().size() != 1 || !v->as_array()[0].is_object()) return -1;
    return jint(v->as_array()[0].as_object(), "views");
  };
  for (Node* n : {&a_, &b_}) {
    int64_t views = -1;
    for (int i = 0; i < 100 && views != 2; ++i) {
      if (i) std::this_thread::sleep_for(ms(50));
      views = views_on(*n);
    }
    EXPECT_EQ(views, 2) << "through node " << (n == &a_ ? "a" : "b");
  }
}

}  // namespace
}  // namespace tern::test
