// DeviceRoutes: this node's view of which other node holds which device's connection, so that
// an event for a device goes on that node's channel only (RedisBus), and an event for a device
// connected nowhere goes nowhere (docs/scaling.md "Device events go to the node that holds
// the device").
//
// Learned from the other nodes' announcements on the bus, never read from Redis on a send:
//   add / remove      a node attached or detached a device (kAttached / kDetached)
//   replace           a node's whole attached set (kNodeSet): it answers a roll call, follows
//                     its own roll call, and ends every batch that tells of dropped events
//   forget            a node made a roll call (its set follows) or dropped events (kResync):
//                     what it holds is unknown until its set arrives
//   set_live          the live nodes (the bus's liveness check); a node absent from every list
//                     for `forget_after` (counted from the first list without it) is dropped. A node absent from every list read for
//                     `gone_after` (counted from the first list without it, so that a Redis
//                     outage, during which no list is read, does not count) is returned once,
//                     with the devices held there: it died (or is cut off from Redis), and the
//                     bus removes their registry entries (presence: docs/scaling.md). A node that announces something counts as
//                     live until the next list (it spoke; a list read before it connected may
//                     arrive after its first announcement). Routing to a node that is gone
//                     costs nothing lasting: a PUBLISH that no subscriber heard is sent again
//                     to every node (RedisBus::Batch::unheard).
//   reset             this node's subscription (re)started: it may have missed announcements,
//                     so every node is unknown until its set arrives (the bus makes a roll call)
// Announcements of one node arrive in the order it made them (one publisher thread), so
// add/remove/replace of one node apply in order; those of two nodes commute (each touches only
// its own (device, node) pairs), which is why a device is kept per node and may be on two for
// a moment (its old connection not yet closed).
//
// An event for a device that is nowhere is dropped only while may_drop(): every live node's
// last set said that it takes kMissed, which heals a drop that raced the device's connect
// (dropped_devices.h).
//
// find() answers kUnknown unless the view is complete: the live nodes were listed since the
// last reset and every live node other than this one has sent its set since then. The bus then
// sends the event to every node (the behaviour without routes), so an incomplete view costs
// traffic, never a delivery. A complete view can still be stale by one pub/sub hop (a device
// that moved): the old node hands such an event back to every node (RedisBus::deliver), and
// replay heals what pub/sub loses.
//
// Thread-safety: every method from any thread (one shared mutex: find() from every loop, the
// writes from loop 0, which holds the subscription, and the bus's publisher thread).
#pragma once
#include <chrono>
#include <cstdint>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/ids.h"

namespace tern::bus {

class DeviceRoutes {
 public:
  using Clock = std::chrono::steady_clock;
  DeviceRoutes(std::string self, std::chrono::milliseconds forget_after,
               std::chrono::milliseconds gone_after = std::chrono::seconds(5))
      : self_(std::move(self)), forget_after_(forget_after), gone_after_(gone_after) {}

  enum class Where {
    kNodes,    // on the nodes appended to `nodes` (live ones other than this one)
    kNowhere,  // the view is complete and no other node holds it
    kUnknown,  // the view is not complete: send to every node
  };
  Where find(const DeviceRef& device, std::vector<std::string>& nodes) const;
  // Every node that holds one of the user's devices (each once).
  Where find_user(const std::string& user, std::vector<std::string>& nodes) const;

  void add(const std::string& node, const DeviceRef& device, Clock::time_point now = Clock::now());
  void remove(const std::string& node, const DeviceRef& device, Clock::time_point now = Clock::now());
  // Returns the devices of the set that this view did not hold on that node (announcements it
  // missed). `knows_missed`: the node's set says it takes kMissed (RedisBus::kSetKnowsMissed).
  std::vector<DeviceRef> replace(const std::string& node, const std::vector<DeviceRef>& devices,
                                 Clock::time_point now = Clock::now(), bool knows_missed = false);
  void forget(const std::string& node);
  // The devices this view holds on `node` (a node that started a new run: RedisBus).
  std::vector<DeviceRef> held_on(const std::string& node) const;
  // No live node other than `node` and not leaving sorts before this one: the one that mends
  // the registry for `node` (RedisBus::new_run). Before this node has read a list (just
  // started or subscribed again), two nodes may both answer true: the mend is idempotent.
  bool first_live_except(const std::string& node) const;
  // The nodes that are stopping (their leave() marker is in the last list, sorted): still
  // live and holding devices, but no longer the ones to mend another node's entries.
  void set_leaving(const std::vector<std::string>& leaving);
  // A node's run: the earliest expiry of the registry entries it writes (RedisBus's
  // run_start_expiry_ms_). From its roll call (it spoke: live until the next list): `first`,
  // no value was known; `changed`, another was (a new run for certain). From its set: kept
  // only if none is known (only a roll call tells of a change). Either way this view notes
  // when it learned the value (over()).
  struct RunSeen {
    bool first;
    bool changed;
  };
  RunSeen run_called(const std::string& node, int64_t run, Clock::time_point now = Clock::now());
  void run_in_set(const std::string& node, int64_t run, Clock::time_point now = Clock::now());
  int64_t run(const std::string& node) const;  // 0: unknown
  // When a registry entry that `node` (not this node) wrote, expiring at `expiry_ms`, is
  // over: written by a run that ended (it expires before the node's run, learned gone_after
  // ago: its devices had that long to reconnect), or by a node absent from every list read
  // for gone_after (one this view never listed: absent from every list since its first after
  // the last reset). The registry mends such an entry when it finds it (RedisBus::online),
  // as it does for the devices these routes hold (new_run, gone). `at`: Clock::time_point::max()
  // for an entry of a live node's run (it counts); else when it is (or will be) over, or,
  // for a node live for less than gone_after whose run this view has not heard, when to ask
  // again (its announcements may come before its roll call).
  // `below`: the mend's bound, the node's run (0: a node that is gone; the bus bounds it by
  // its own clock).
  struct Over {
    Clock::time_point at;
    int64_t below;
  };
  Over over(const std::string& node, int64_t expiry_ms, Clock::time_point now = Clock::now()) const;
  // A node gone from the lists for gone_after, and the devices this view held there.
  struct Gone {
    std::string node;
    std::vector<DeviceRef> devices;
  };
  std::vector<Gone> set_live(const std::vector<std::string>& live, Clock::time_point now = Clock::now());
  void reset();

  bool complete() const;
  // The view is complete and every live node other than this one said, in its last set, that
  // it takes kMissed: an event for a device no node holds may then be dropped (RedisBus).
  bool may_drop() const;
  // Live nodes other than this one whose set has not arrived since the last reset or forget.
  std::vector<std::string> waiting_for() const;
  size_t devices() const;  // (device, node) pairs held, for tests and metrics

  // The wire form of a node's set (kNodeSet's frame): user, device, user, device, ...
  static std::string encode_set(const std::vector<DeviceRef>& devices);
  static bool decode_set(std::string_view in, std::vector<DeviceRef>& out);

 private:
  struct Node {
    bool has_set = false;  // its set arrived since the last reset / forget
    bool live = false;     // in the last live list, or heard from since
    bool knows_missed = false;  // its last set said so
    bool leaving = false;  // in the last set_leaving
    Clock::time_point seen{};  // last in a live list or heard from
    Clock::time_point absent_since{};  // the first list without it since (zero: in the last one)
    bool gone_told = false;  // set_live returned it since it was last live
    Clock::time_point live_since{};  // live without a list that left it out since
    int64_t run = 0;          // its run (run_called, run_in_set); 0: unknown
    Clock::time_point run_at{};  // when this view learned it
  };
  struct Held {
    uint32_t device;
    uint32_t node;  // index into names_
  };
  uint32_t node_index(const std::string& node);  // interned, under the write lock
  void touch(uint32_t node, Clock::time_point now);
  void drop_node(uint32_t node);  // every pair of the node (write lock held)
  void hold(const DeviceRef& device, uint32_t node);  // adds the pair once (write lock held)
  bool complete_locked() const;

  const std::string self_;
  const std::chrono::milliseconds forget_after_;
  const std::chrono::milliseconds gone_after_;
  mutable std::shared_mutex mu_;
  std::vector<std::string> names_;  // interned node names; an index is never reused
  std::unordered_map<std::string, uint32_t> index_;  // name → index
  std::vector<Node> nodes_;         // by index
  std::unordered_map<std::string, std::vector<Held>> users_;  // user → (device, node) pairs
  bool live_known_ = false;  // set_live since the last reset
  Clock::time_point lists_since_{};  // the first set_live since the last reset
  size_t pairs_ = 0;
};

}  // namespace tern::bus
