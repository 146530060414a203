// NodeRing (node_ring.h): every node that sees the same live set picks the same owner, the
// owners spread over the nodes, a leaving node moves only its own conversations, and a
// suspected node owns nothing here for a while.
#include "bus/redis/node_ring.h"

#include <gtest/gtest.h>

#include <map>

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

}  // namespace
}  // namespace tern::bus
