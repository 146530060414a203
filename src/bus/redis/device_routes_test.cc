// DeviceRoutes: what a node knows of where the other nodes' devices are connected, and when
// it may say "nowhere" (docs/scaling.md "Device events go to the node that holds the device").
#include "bus/redis/device_routes.h"

#include <algorithm>

#include <gtest/gtest.h>

namespace tern::bus {
namespace {

using Where = DeviceRoutes::Where;
using namespace std::chrono_literals;

std::vector<std::string> find(const DeviceRoutes& r, const DeviceRef& d, Where& where) {
  std::vector<std::string> nodes;
  where = r.find(d, nodes);
  return nodes;
}

TEST(DeviceRoutes, UnknownUntilTheLiveNodesAreListedAndEveryOneSentItsSet) {
  DeviceRoutes r("n1", 30s);
  Where w;
  EXPECT_TRUE(find(r, {"bob", 1}, w).empty());
  EXPECT_EQ(w, Where::kUnknown) << "nothing listed yet";
  r.set_live({"n1", "n2", "n3"});
  find(r, {"bob", 1}, w);
  EXPECT_EQ(w, Where::kUnknown) << "n2 and n3 have not sent their sets";
  EXPECT_EQ(r.waiting_for(), (std::vector<std::string>{"n2", "n3"}));
  r.replace("n2", {{"bob", 1}, {"carol", 2}});
  EXPECT_EQ(find(r, {"bob", 1}, w), (std::vector<std::string>{"n2"}));
  EXPECT_EQ(w, Where::kNodes) << "a known device is routed even while the view is incomplete";
  find(r, {"dave", 1}, w);
  EXPECT_EQ(w, Where::kUnknown);
  r.replace("n3", {});
  find(r, {"dave", 1}, w);
  EXPECT_EQ(w, Where::kNowhere);
  EXPECT_TRUE(r.complete());
  EXPECT_TRUE(r.waiting_for().empty());
}

TEST(DeviceRoutes, AttachesAndDetachesOfTwoNodesCommute) {
  DeviceRoutes r("n1", 30s);
  r.set_live({"n1", "n2", "n3"});
  r.replace("n2", {});
  r.replace("n3", {});
  // bob/1 moves from n2 to n3; n3's attach arrives before n2's detach.
  r.add("n2", {"bob", 1});
  r.add("n3", {"bob", 1});
  Where w;
  EXPECT_EQ(find(r, {"bob", 1}, w), (std::vector<std::string>{"n2", "n3"})) << "on both for a moment";
  r.remove("n2", {"bob", 1});
  EXPECT_EQ(find(r, {"bob", 1}, w), (std::vector<std::string>{"n3"}));
  r.add("n3", {"bob", 1});  // said twice: still one pair
  EXPECT_EQ(r.devices(), 1u);
  r.remove("n3", {"bob", 1});
  find(r, {"bob", 1}, w);
  EXPECT_EQ(w, Where::kNowhere);
  EXPECT_EQ(r.devices(), 0u);
}

TEST(DeviceRoutes, ASetReplacesWhatWasKnownOfItsNodeOnly) {
  DeviceRoutes r("n1", 30s);
  r.set_live({"n1", "n2", "n3"});
  r.replace("n2", {{"bob", 1}, {"bob", 2}});
  r.replace("n3", {{"bob", 3}});
  r.replace("n2", {{"bob", 2}});
  Where w;
  find(r, {"bob", 1}, w);
  EXPECT_EQ(w, Where::kNowhere);
  EXPECT_EQ(find(r, {"bob", 2}, w), (std::vector<std::string>{"n2"}));
  EXPECT_EQ(find(r, {"bob", 3}, w), (std::vector<std::string>{"n3"}));
  std::vector<std::string> nodes;
  EXPECT_EQ(r.find_user("bob", nodes), Where::kNodes);
  std::sort(nodes.begin(), nodes.end());
  EXPECT_EQ(nodes, (std::vector<std::string>{"n2", "n3"}));
  nodes.clear();
  EXPECT_EQ(r.find_user("zed", nodes), Where::kNowhere);
}

TEST(DeviceRoutes, ARollCallOrAResetMakesTheViewIncompleteUntilTheSetsCome) {
  DeviceRoutes r("n1", 30s);
  r.set_live({"n1", "n2"});
  r.replace("n2", {{"bob", 1}});
  ASSERT_TRUE(r.complete());
  r.forget("n2");  // n2 made a roll call: its set follows
  EXPECT_FALSE(r.complete());
  Where w;
  EXPECT_EQ(find(r, {"bob", 1}, w), (std::vector<std::string>{"n2"})) << "what is known still routes";
  std::vector<std::string> nodes;
  EXPECT_EQ(r.find_user("bob", nodes), Where::kUnknown) << "a user's devices need a complete view";
  r.replace("n2", {{"bob", 1}});
  EXPECT_TRUE(r.complete());
  r.reset();  // this node's subscription came back: it may have missed announcements
  EXPECT_FALSE(r.complete());
  r.replace("n2", {{"bob", 1}});
  EXPECT_FALSE(r.complete()) << "the live nodes are not listed since the reset";
  r.set_live({"n1", "n2"});
  EXPECT_TRUE(r.complete());
}

TEST(DeviceRoutes, ANodeThatIsNotLiveIsNotRoutedToAndIsForgottenLater) {
  DeviceRoutes r("n1", 30s);
  const auto t0 = DeviceRoutes::Clock::now();
  r.set_live({"n1", "n2"}, t0);
  r.replace("n2", {{"bob", 1}}, t0);
  r.set_live({"n1"}, t0 + 1s);  // n2 died
  Where w;
  EXPECT_TRUE(find(r, {"bob", 1}, w).empty());
  EXPECT_EQ(w, Where::kNowhere) << "n2 is not live: not routed to";
  EXPECT_EQ(r.devices(), 1u) << "kept a while: a set can arrive before the list that shows its node";
  r.set_live({"n1", "n2"}, t0 + 2s);
  EXPECT_EQ(find(r, {"bob", 1}, w), (std::vector<std::string>{"n2"}));
  r.set_live({"n1"}, t0 + 3s);
  r.set_live({"n1"}, t0 + 34s);
  EXPECT_EQ(r.devices(), 0u);
  r.set_live({"n1", "n2"}, t0 + 35s);  // back (restarted): its set is needed again
  EXPECT_FALSE(r.complete());
}

// A node that announces a device before any list shows it (it just connected) is routed to:
// it spoke, so it is live until a list leaves it out.
TEST(DeviceRoutes, ANodeHeardFromIsLiveUntilAListLeavesItOut) {
  DeviceRoutes r("n1", 30s);
  r.set_live({"n1"});
  r.add("n3", {"dan", 1});
  Where w;
  EXPECT_EQ(find(r, {"dan", 1}, w), (std::vector<std::string>{"n3"}));
  EXPECT_EQ(w, Where::kNodes);
  EXPECT_FALSE(r.complete()) << "n3 is live and its set has not come";
  r.set_live({"n1"});
  EXPECT_TRUE(find(r, {"dan", 1}, w).empty());
}

TEST(DeviceRoutes, ItsOwnAnnouncementsAreIgnored) {
  DeviceRoutes r("n1", 30s);
  r.set_live({"n1"});
  r.add("n1", {"bob", 1});
  r.replace("n1", {{"bob", 2}});
  EXPECT_EQ(r.devices(), 0u);
  EXPECT_TRUE(r.complete());
}

TEST(DeviceRoutes, TheSetRoundTripsAndABadOneIsRefused) {
  const std::vector<DeviceRef> set{{"bob", 1}, {"carol", 70000}};
  const std::string wire = DeviceRoutes::encode_set(set);
  std::vector<DeviceRef> got;
  ASSERT_TRUE(DeviceRoutes::decode_set(wire, got));
  EXPECT_EQ(got, set);
  const size_t first = 4 + 3 + 4;  // "bob", 1: a whole entry, so a valid set of one
  for (size_t len = 1; len < wire.size(); ++len) {
    if (len == first) continue;
    std::vector<DeviceRef> cut;
    EXPECT_FALSE(DeviceRoutes::decode_set(std::string_view(wire).substr(0, len), cut)) << len;
  }
  std::vector<DeviceRef> none;
  EXPECT_TRUE(DeviceRoutes::decode_set("", none));
  EXPECT_TRUE(none.empty());
}

// A set says which of its devices the view did not hold on that node (announcements missed),
// and whether the node takes kMissed; only when every live node does may an event be dropped.
TEST(DeviceRoutes, ASetNamesTheDevicesItAddsAndWhetherItsNodeTakesKMissed) {
  DeviceRoutes r("n1", 30s);
  r.set_live({"n1", "n2", "n3"});
  EXPECT_EQ(r.replace("n2", {{"bob", 1}, {"carol", 1}}, DeviceRoutes::Clock::now(), true),
            (std::vector<DeviceRef>{{"bob", 1}, {"carol", 1}}));
  EXPECT_FALSE(r.may_drop()) << "n3's set has not arrived";
  EXPECT_TRUE(r.replace("n3", {}, DeviceRoutes::Clock::now(), false).empty());
  EXPECT_TRUE(r.complete());
  EXPECT_FALSE(r.may_drop()) << "n3 does not take kMissed";
  r.replace("n3", {}, DeviceRoutes::Clock::now(), true);
  EXPECT_TRUE(r.may_drop());
  r.add("n2", {"dave", 1});
  r.remove("n2", {"carol", 1});
  EXPECT_EQ(r.replace("n2", {{"bob", 1}, {"carol", 1}, {"dave", 1}, {"erin", 2}}, DeviceRoutes::Clock::now(), true),
            (std::vector<DeviceRef>{{"carol", 1}, {"erin", 2}}))
      << "only what the view did not hold on n2";
  r.forget("n3");
  EXPECT_FALSE(r.may_drop()) << "incomplete again";
}

// A node absent from the lists for gone_after, counted from the first list without it, is
// returned once with the devices held there; one listed again in time, or one that spoke,
// starts over. No list is read while Redis is away, so that time does not count.
TEST(DeviceRoutes, ANodeAbsentFromTheListsForGoneAfterIsReturnedOnceWithItsDevices) {
  DeviceRoutes r("n1", 30s, 5s);
  const auto t0 = DeviceRoutes::Clock::now();
  EXPECT_TRUE(r.set_live({"n1", "n2", "n3"}, t0).empty());
  r.replace("n2", {{"bob", 1}, {"carol", 2}}, t0);
  r.replace("n3", {{"dave", 1}}, t0);
  // Redis away for 60 s: the next list, without n2 and n3, is the first to miss them.
  EXPECT_TRUE(r.set_live({"n1"}, t0 + 60s).empty());
  EXPECT_TRUE(r.set_live({"n1", "n3"}, t0 + 62s).empty()) << "n3 is back in time";
  auto gone = r.set_live({"n1", "n3"}, t0 + 65s);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].node, "n2");
  std::sort(gone[0].devices.begin(), gone[0].devices.end());
  EXPECT_EQ(gone[0].devices, (std::vector<DeviceRef>{{"bob", 1}, {"carol", 2}}));
  EXPECT_TRUE(r.set_live({"n1", "n3"}, t0 + 66s).empty()) << "returned once";
  // n3 leaves; it announces something meanwhile (it spoke): its absence starts over.
  EXPECT_TRUE(r.set_live({"n1"}, t0 + 70s).empty());
  r.add("n3", {"erin", 1}, t0 + 72s);
  EXPECT_TRUE(r.set_live({"n1"}, t0 + 73s).empty());
  gone = r.set_live({"n1"}, t0 + 78s);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].node, "n3");
  EXPECT_EQ(gone[0].devices.size(), 2u);
}

// A node that made a roll call with a new run keeps its pairs until its set comes (held_on
// names them for RedisBus::new_run), and the node that mends for it is the first live one by
// name other than it that is not leaving.
TEST(DeviceRoutes, ANewRunsDevicesAreHeldUntilItsSetAndTheFirstOtherLiveNodeMends) {
  DeviceRoutes n2("n2", 30s, 5s), n3("n3", 30s, 5s);
  const auto t0 = DeviceRoutes::Clock::now();
  for (DeviceRoutes* r : {&n2, &n3}) {
    EXPECT_TRUE(r->set_live({"n1", "n2", "n3"}, t0).empty());
    r->replace("n1", {{"bob", 1}, {"carol", 2}}, t0);
  }
  EXPECT_TRUE(n3.held_on("n9").empty());
  n2.forget("n1");  // n1's roll call
  auto held = n2.held_on("n1");
  std::sort(held.begin(), held.end());
  EXPECT_EQ(held, (std::vector<DeviceRef>{{"bob", 1}, {"carol", 2}}));
  EXPECT_TRUE(n2.first_live_except("n1")) << "n1 itself does not count";
  EXPECT_FALSE(n3.first_live_except("n1")) << "n2 is live and first";
  n3.set_leaving({"n2"});
  EXPECT_TRUE(n3.first_live_except("n1")) << "n2 is stopping (leave()): n3 mends";
  n3.set_leaving({});
  EXPECT_FALSE(n3.first_live_except("n1")) << "the next list without its marker";
  EXPECT_TRUE(n3.set_live({"n1", "n3"}, t0 + 1s).empty());
  EXPECT_TRUE(n3.first_live_except("n1")) << "n2 is not live any more";
  n2.replace("n1", {}, t0 + 1s);  // its set: nothing
  EXPECT_TRUE(n2.held_on("n1").empty());
}


// A node's run, from its roll call: the first value is no change, another one is. A set's
// value counts only while none is known.
TEST(DeviceRoutes, ARollCallTellsWhetherItsNodesRunChanged) {
  DeviceRoutes r("n1", 30s, 5s);
  auto seen = r.run_called("n2", 100);
  EXPECT_TRUE(seen.first);
  EXPECT_FALSE(seen.changed);
  seen = r.run_called("n2", 100);
  EXPECT_FALSE(seen.first || seen.changed) << "the same run again (a roll call after an outage)";
  seen = r.run_called("n2", 200);
  EXPECT_FALSE(seen.first);
  EXPECT_TRUE(seen.changed);
  r.run_in_set("n3", 300);
  r.run_in_set("n3", 400);  // known already: only a roll call tells of a change
  seen = r.run_called("n3", 300);
  EXPECT_FALSE(seen.first || seen.changed);
  EXPECT_EQ(r.run("n2"), 200);
  EXPECT_EQ(r.run("n3"), 300);
  EXPECT_EQ(r.run("n4"), 0) << "never heard of";
}

// A registry entry is over (RedisBus mends it when it reads it) once its node has been on a
// later run for gone_after (bound: that run), or absent from every list for gone_after
// (bound: none, 0); a live node's entry of its current run never is. A node never listed
// counts as absent from the first list after the last reset on; before any list, nothing is
// known and the entry is asked about again gone_after later.
TEST(DeviceRoutes, AnEntryIsOverGoneAfterItsRunEndedOrItsNodeLeftTheLists) {
  const auto t0 = DeviceRoutes::Clock::now();
  const auto never = DeviceRoutes::Clock::time_point::max();
  DeviceRoutes r("n1", 30s, 5s);
  auto o = r.over("n2", 150, t0);
  EXPECT_EQ(o.at, t0 + 5s) << "no list read yet";
  r.set_live({"n1", "n2", "n3"}, t0);
  r.run_called("n2", 100, t0);
  r.run_in_set("n3", 100, t0);
  EXPECT_EQ(r.over("n2", 150, t0).at, never) << "n2's current run";
  r.run_called("n2", 200, t0 + 1s);  // n2 started again
  o = r.over("n2", 150, t0 + 1s);
  EXPECT_EQ(o.at, t0 + 6s) << "its devices have gone_after to reconnect";
  EXPECT_EQ(o.below, 200);
  EXPECT_EQ(r.over("n2", 250, t0 + 1s).at, never) << "the new run's entry";

  r.set_live({"n1", "n2"}, t0 + 2s);  // n3 left
  o = r.over("n3", 150, t0 + 2s);
  EXPECT_EQ(o.at, t0 + 7s);
  EXPECT_EQ(o.below, 0);
  r.set_live({"n1", "n2", "n3"}, t0 + 3s);  // back (as before: its run is unchanged)
  EXPECT_EQ(r.over("n3", 150, t0 + 3s).at, never);

  // A node new here whose run has not come yet (its first announcements came before its roll
  // call): asked again gone_after after it became live; by then its run is known, or it is a
  // node of an older version, whose entries count.
  r.add("n5", {"erin", 1}, t0 + 3s);
  o = r.over("n5", 150, t0 + 3s);
  EXPECT_EQ(o.at, t0 + 8s);
  EXPECT_EQ(r.over("n5", 150, t0 + 8s).at, never) << "no run by then: an older node";
  r.set_live({"n1", "n2", "n3", "n5"}, t0 + 8s);
  r.run_called("n5", 500, t0 + 8s);
  EXPECT_EQ(r.over("n5", 150, t0 + 8s).at, t0 + 13s) << "its run came: the entry is its last run's";

  o = r.over("ghost", 150, t0 + 3s);
  EXPECT_EQ(o.at, t0 + 5s) << "never listed: absent since the first list";
  EXPECT_EQ(o.below, 0);
  r.reset();  // the subscription is lost: what was listed before does not count
  EXPECT_EQ(r.over("ghost", 150, t0 + 4s).at, t0 + 9s);
  r.set_live({"n1", "n2", "n3"}, t0 + 6s);
  EXPECT_EQ(r.over("ghost", 150, t0 + 6s).at, t0 + 11s);
}

}  // namespace
}  // namespace tern::bus
