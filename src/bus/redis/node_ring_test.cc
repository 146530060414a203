// NodeRing (node_ring.h): every node that sees the same live set picks the same owner, the
// owners spread over the nodes, a leaving node moves only its own conversations, and a
// suspected node owns nothing here for a while.
#include "bus/redis/node_ring.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace tern::bus {
namespace {

using namespace std::chrono_literals;

// The owner as node `self` sees it (its own name when the ring says "here").
std::string owner_seen_by(const NodeRing& ring, const std::string& self, const std::string& conv) {
  auto o = ring.owner(conv);
  return o.empty() ? self : o;
}

TEST(NodeRing, NodesWithTheSameLiveSetAgreeAndShareTheWork) {
  const std::vector<std::string> nodes{"n1", "n2", "n3"};
  std::vector<std::unique_ptr<NodeRing>> rings;
  for (const auto& n : nodes) {
    rings.push_back(std::make_unique<NodeRing>(n, 3000ms));
    rings.back()->set_live({"n3", "n1", "n2"});  // any order
  }
  std::map<std::string, int> owned;
  for (int i = 0; i < 300; ++i) {
    const std::string conv = "g-" + std::to_string(i);
    const std::string o = owner_seen_by(*rings[0], nodes[0], conv);
    for (size_t k = 1; k < rings.size(); ++k) EXPECT_EQ(owner_seen_by(*rings[k], nodes[k], conv), o) << conv;
    ++owned[o];
  }
  ASSERT_EQ(owned.size(), 3u);
  for (const auto& [n, count] : owned) EXPECT_GT(count, 50) << n << " owns too few of 300";
}

TEST(NodeRing, ANodeLeavingMovesOnlyItsOwnConversations) {
  NodeRing three("n1", 3000ms), two("n1", 3000ms);
  three.set_live({"n1", "n2", "n3"});
  two.set_live({"n1", "n2"});
  int moved = 0;
  for (int i = 0; i < 300; ++i) {
    const std::string conv = "d-" + std::to_string(i);
    const std::string before = owner_seen_by(three, "n1", conv), after = owner_seen_by(two, "n1", conv);
    if (before != "n3") EXPECT_EQ(after, before) << conv;
    else ++moved;
  }
  EXPECT_GT(moved, 0);
}

TEST(NodeRing, NoLiveSetOrNotListedYetMeansHere) {
  NodeRing ring("n1", 3000ms);
  EXPECT_EQ(ring.owner("g-1"), "");
  ring.set_live({"n2", "n3"});  // this node's first heartbeat not in yet
  EXPECT_EQ(ring.owner("g-1"), "");
}

TEST(NodeRing, ASuspectedNodeOwnsNothingUntilItsTimePassed) {
  NodeRing ring("n1", 3000ms);
  ring.set_live({"n1", "n2"});
  std::string conv;
  for (int i = 0; i < 100 && conv.empty(); ++i)
    if (ring.owner("c-" + std::to_string(i)) == "n2") conv = "c-" + std::to_string(i);
  ASSERT_FALSE(conv.empty()) << "n2 owns none of 100 conversations";
  const auto now = NodeRing::Clock::now();
  ring.suspect("n2", now);
  EXPECT_EQ(ring.owner(conv, now + 1s), "");
  EXPECT_EQ(ring.owner(conv, now + 4s), "n2");
}

// A node that fails again soon after it was let back is hung, not briefly slow: each such
// suspicion lasts twice the last (capped); an answer starts over; a node that fails again
// only long after it was let back gets the first period.
TEST(NodeRing, ANodeFailingAgainSoonAfterItsSuspicionIsSuspectedTwiceAsLongUntilItAnswers) {
  NodeRing ring("n1", 1000ms);
  ring.set_live({"n1", "n2"});
  std::string conv;
  for (int i = 0; i < 100 && conv.empty(); ++i)
    if (ring.owner("c-" + std::to_string(i)) == "n2") conv = "c-" + std::to_string(i);
  ASSERT_FALSE(conv.empty()) << "n2 owns none of 100 conversations";
  auto t = NodeRing::Clock::now();
  // The periods of successive suspicions, each failure coming right after the node is back.
  std::vector<int> periods_s;
  for (int round = 0; round < 7; ++round) {
    ring.suspect("n2", t);
    ring.suspect("n2", t + 100ms);  // a second request of the same burst: same suspicion
    int s = 0;
    while (ring.owner(conv, t + std::chrono::seconds(s) + 1ms) == "" && s < 100) ++s;
    periods_s.push_back(s);
    t += std::chrono::seconds(s) + 1ms;  // let back: the next request times out at once
  }
  EXPECT_EQ(periods_s, (std::vector<int>{1, 2, 4, 8, 16, 16, 16}));
  // It answered: the next suspicion is the first period again.
  ring.answered("n2");
  ring.suspect("n2", t);
  EXPECT_EQ(ring.owner(conv, t + 500ms), "");
  EXPECT_EQ(ring.owner(conv, t + 1001ms), "n2");
  // Failing again long after it was let back (its suspicion ended at t + 1 s; 5 s is more
  // than its period): the first period, not a doubled one.
  const auto later = t + 1000ms + 5s;
  ring.suspect("n2", later);
  EXPECT_EQ(ring.owner(conv, later + 999ms), "");
  EXPECT_EQ(ring.owner(conv, later + 1001ms), "n2");
}

// ---- live_nodes_from_client_list: CLIENT LIST TYPE pubsub as Redis 7 prints it ----

// One client line as Redis prints it; `name` as given (empty: an unnamed client).
std::string client_line(int id, const std::string& name, const std::string& cmd = "subscribe") {
  return "id=" + std::to_string(id) + " addr=127.0.0.1:" + std::to_string(40000 + id) +
         " laddr=127.0.0.1:6379 fd=" + std::to_string(8 + id) + " name=" + name +
         " age=12 idle=0 flags=P db=0 sub=1 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0"
         " rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=1928 events=r cmd=" + cmd +
         " user=default redir=-1 resp=2 lib-name= lib-ver=\n";
}

using Nodes = std::vector<std::string>;

TEST(LiveNodesFromClientList, OnlyClientsNamedAsNodesAreNodesSortedOnce) {
  const std::string list = client_line(3, "tern-bus:b") + client_line(4, "") +  // unnamed
                           client_line(5, "tern-bus:127.0.0.1:8080/4242") +        // the default id
                           client_line(6, "monitoring") + client_line(7, "tern-bus:a") +
                           client_line(8, "tern-bus:b") +                          // b reconnecting
                           client_line(9, "tern-bus:") +                           // no id
                           client_line(10, "tern-bus") + client_line(11, "xtern-bus:c") +
                           client_line(12, "TERN-BUS:d") + client_line(13, "tern-bus:a", "ssubscribe");
  EXPECT_EQ(live_nodes_from_client_list(list), (Nodes{"127.0.0.1:8080/4242", "a", "b"}));
}

// A stopping node shows twice: its bus connection (still live: it holds its devices) and its
// marker (RedisBus::leave); an older node, which does not know the marker, sees it live.
TEST(LiveNodesFromClientList, AStoppingNodesMarkerNamesItLeavingAndLeavesItLive) {
  const std::string list = client_line(3, "tern-bus:a") + client_line(4, "tern-bus:b") +
                           client_line(5, "tern-leaving:b", "ssubscribe") + client_line(6, "tern-leaving:") +
                           client_line(7, "xtern-leaving:a") + client_line(8, "tern-leaving:c");
  EXPECT_EQ(live_nodes_from_client_list(list), (Nodes{"a", "b"}));
  EXPECT_EQ(leaving_nodes_from_client_list(list), (Nodes{"b", "c"}));
}

TEST(LiveNodesFromClientList, OnlyTheNameFieldCounts) {
  // lib-name and a name-like value elsewhere are not the client's name; an unnamed client.
  const std::string list =
      "id=3 addr=127.0.0.1:1 laddr=127.0.0.1:6379 fd=8 name= age=1 cmd=subscribe lib-name=tern-bus:x lib-ver=\n"
      "id=4 addr=127.0.0.1:2 fd=9 name=tern-bus:real user=name=tern-bus:y\n"
      "id=5 addr=127.0.0.1:3 fd=10 name=tern-bus:crlf age=1\r\n"
      "\n"
      "id=6   addr=127.0.0.1:4  name=tern-bus:spaced  age=1\n";
  EXPECT_EQ(live_nodes_from_client_list(list), (Nodes{"crlf", "real", "spaced"}));
}

TEST(LiveNodesFromClientList, ATruncatedLastLineCountsOnlyAWholeName) {
  const std::string first = client_line(3, "tern-bus:n1");
  // Cut inside or right after the name: it might be longer (n2 of n20); not a node.
  EXPECT_EQ(live_nodes_from_client_list(first + "id=4 addr=127.0.0.1:2 fd=9 name=tern-bus:n2"), (Nodes{"n1"}));
  EXPECT_EQ(live_nodes_from_client_list(first + "id=4 addr=127.0.0.1:2 fd=9 name=tern-b"), (Nodes{"n1"}));
  EXPECT_EQ(live_nodes_from_client_list(first + "id=4 addr=127.0.0.1:2 fd=9 na"), (Nodes{"n1"}));
  // Cut after the next field started: the name is whole.
  EXPECT_EQ(live_nodes_from_client_list(first + "id=4 addr=127.0.0.1:2 fd=9 name=tern-bus:n2 ag"),
            (Nodes{"n1", "n2"}));
  EXPECT_EQ(live_nodes_from_client_list(""), Nodes{});
  EXPECT_EQ(live_nodes_from_client_list("\n\n"), Nodes{});
}

TEST(LiveNodesFromClientList, AVeryLongListGivesExactlyItsNodes) {
  std::string list;
  const std::string long_id(64 * 1024, 'z');
  for (int i = 0; i < 20000; ++i) {
    list += client_line(i, i % 2 ? "" : "app-" + std::to_string(i));
    if (i == 7) list += client_line(i, "tern-bus:n3");
    if (i == 9999) list += client_line(i, "tern-bus:" + long_id);
    if (i == 19998) list += client_line(i, "tern-bus:n1");
  }
  list += client_line(20000, "tern-bus:n3");
  ASSERT_GT(list.size(), 4u * 1000 * 1000);
  EXPECT_EQ(live_nodes_from_client_list(list), (Nodes{"n1", "n3", long_id}));
}

}  // namespace
}  // namespace tern::bus
