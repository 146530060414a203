// The bus: which devices are connected to this node, and delivery of events to them.
// The services publish to a device without knowing where it is connected; the local
// implementation (local/) delivers in-process, the Redis one (redis/) across nodes.
//
// Sinks (set_*_sink, request replies) are called on the bus's delivery thread: for RedisBus
// with the server's loops, loop 0 (which holds the subscription), so a sink must not block; it
// hops to another loop as the endpoints do.
// Thread-safety: every Bus method may be called from any thread. Endpoint::notify is called on
// the publisher's thread and must not block (implementations hop to their own loop, inline when
// the publisher already runs on it).
// Ownership: the composition root owns the Bus; endpoints are held weakly.
#pragma once
#include "base/clock.h"
#include <cstdint>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/ids.h"
#include "base/result.h"

namespace tern::bus {

// One event for a connected device. Immutable once published and shared by every recipient.
struct Notification {
  enum class Kind {
    kMessage,   // a durable message of `conversation_id` with `seq`
    kOwnSent,   // the device's own message got `seq` (advances its replay position; not sent)
    kFrame,     // an ephemeral or receipt frame to write as-is (typing, presence, receipt)
    kMembership,  // the device's user joined or left `conversation_id` without a seq (a
                  // channel subscription): the session re-reads its membership there
  };
  Kind kind = Kind::kFrame;
  std::string conversation_id;
  Seq seq = 0;
  bool per_device = false;                   // frame carries `bodies`: render per device
  bool system = false;                       // a membership change: recipients re-read their membership
  std::shared_ptr<const std::string> frame;  // the stored message frame or the frame to write
  int64_t send_started_us = 0;               // mono_us() when the send arrived (latency metric)
  bool droppable = false;                    // typing/presence: dropped first when the connection's queue is above half
  DeviceRef origin;                          // kMessage sent to a whole conversation: the sending device (not written back to it)
};

class Endpoint {
 public:
  virtual ~Endpoint() = default;
  virtual void notify(std::shared_ptr<const Notification> n) = 0;
  // Another connection of the same device took over: close this one.
  virtual void replaced() = 0;
  // Some of the device's events may have gone elsewhere since this connection read its inbox
  // (to an older connection of the device on another node, which had not heard of this one
  // yet): read the inbox again and catch up. Any thread. Default: nothing to catch up.
  virtual void missed() {}
};

// What a node knows of the nodes that share its store (the admin API's GET /admin/v1/nodes).
struct NodesView {
  bool shared = false;  // a bus across nodes (RedisBus); false: this node alone (LocalBus)
  std::string self;  // this node's id on the bus (--node-id); empty for a node alone
  bool subscribed = true;  // other nodes' events reach this node now
  int64_t listed_ms_ago = -1;  // age of the last list of live nodes read; -1: none read yet
  int64_t clock_offset_ms = 0;  // the shared clock's minus this node's (RedisBus: Redis's TIME)
  std::vector<std::string> live;  // sorted: the nodes connected to the bus at the last look
  std::vector<std::string> leaving;  // sorted: those of them that announced they are stopping
  // Nodes this node does not forward sends to for now (they did not answer one in time),
  // with the milliseconds left.
  std::vector<std::pair<std::string, int64_t>> suspected;
};

class Bus {
 public:
  virtual ~Bus() = default;
  // Registers the device's endpoint; an earlier endpoint of the same device is told
  // replaced() and dropped. Returns the number of the user's devices now attached.
  virtual size_t attach(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint) = 0;
  // Removes the endpoint if it is still the device's current one; returns the number of the
  // user's devices still attached (0 → the user went offline).
  virtual size_t detach(const DeviceRef& device, const Endpoint* endpoint) = 0;
  // The same, for a caller on an event loop: the endpoint is attached (or detached) at once,
  // and the count, which on several nodes takes a network round trip, reaches `counted`
  // later, on another thread, in the order of the calls. Default: the calls above, inline.
  // `order` places the call among every attach and detach of the user on every node (larger
  // is later; the registry in Redis assigns it), so that a presence change decided here and
  // one decided on another node reach a third node's subscribers in their true order
  // (Presence drops an older one that arrives last). 0: no order known (a single node, or
  // Redis away): never dropped. `added` (an attach): the device did not count before; false
  // when the attach took over a connection of the device that still counted (its own older
  // one, or its registry entry from another node: it moved), so that the user, online
  // already, is not reported online again. Always true for a detach.
  using Counted = std::function<void(size_t devices_online, uint64_t order, bool added)>;
  virtual void attach_async(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint, Counted counted) {
    counted(attach(device, std::move(endpoint)), 0, true);
  }
  virtual void detach_async(const DeviceRef& device, const Endpoint* endpoint, Counted counted) {
    counted(detach(device, endpoint), 0, true);
  }
  // Delivers to the device if attached; a no-op otherwise (it replays on connect). Returns
  // whether an endpoint was attached (false: the device is offline; push may wake it).
  virtual bool publish(const DeviceRef& device, const std::shared_ptr<const Notification>& n) = 0;
  // Delivers to every attached device of the user.
  virtual void publish_user(const std::string& user, const std::shared_ptr<const Notification>& n) = 0;
  // Whether a device of the user is attached on any node. A bus that finds a stale record
  // of a device (RedisBus: a registry entry of a node's run that is over) removes it first,
  // reporting the user offline if it was the last one (its presence-change sink);
  // `reported_offline`, when not null, says whether it did, so that a caller about to tell
  // the same (a presence subscription's answer) does not tell it twice.
  virtual bool online(const std::string& user, bool* reported_offline) = 0;
  bool online(const std::string& user) { return online(user, nullptr); }

  // Read-side conversations (fan-out on read; services/live_fanout.h is node-local): n, a
  // kMessage of n->conversation_id, goes to the other nodes, which hand it to their
  // conversation sink. A single-node bus has no other nodes: both are no-ops there.
  virtual void publish_conversation(const std::shared_ptr<const Notification>& n) { (void)n; }
  // Where publish_conversation() of other nodes arrives (on the delivery thread). Set before serving.
  virtual void set_conversation_sink(std::function<void(std::shared_ptr<const Notification>)> sink) {
    (void)sink;
  }
  // A conversation's membership changed on another node (a system message was published
  // there): the sink drops what this node cached about it. Set before serving; called on a
  // the delivery thread. A single-node bus never calls it.
  virtual void set_change_sink(std::function<void(const std::string& conversation_id)> sink) { (void)sink; }
  // A conversation was created or changed here without a system message (a direct
  // conversation created; a channel's subscribers, admins or count changed): the other nodes'
  // change sink learns of it as of a membership change. A single-node bus: no-op.
  virtual void announce_created(const std::string& conversation_id) { (void)conversation_id; }
  // A message of `conversation_id` with `seq` (`frame`: the stored message) was committed on
  // another node and reached this one (for a local device or a following session): the sink
  // lets this node's sequencer move its cached head there, so that its next send into the
  // conversation is not behind (docs/scaling.md "Dense seqs across nodes"). A hint only: the
  // store's dense-append check stays the rule. With send routing on it still matters: an ack
  // commits on the acking device's node, which refuses a seq beyond its cached head, and
  // that node's head of a conversation sequenced elsewhere moves only through these hints.
  // Set before serving; called on the delivery thread, in the order the other node published. A
  // single-node bus never calls it.
  using HeadSink =
      std::function<void(const std::string& conversation_id, Seq seq, std::shared_ptr<const std::string> frame)>;
  virtual void set_head_sink(HeadSink sink) { (void)sink; }
  // What the nodes cache of `user` changed here: a device was linked (their next send must
  // address it too), or the user's block list or presence setting changed (their next send
  // must withhold from whom it blocks, their subscriptions to the user must be checked
  // again). The other nodes' sink drops what they cache of the user. Set the sink before
  // serving; it is called on the delivery thread. A single-node bus: both are no-ops.
  virtual void announce_user_changed(const std::string& user) { (void)user; }
  // The same for one device whose keys changed here (a new installation: a new registration
  // id): the sink gets the device too (0 from announce_user_changed), and the other nodes drop
  // its cached registration id as well.
  virtual void announce_keys_changed(const DeviceRef& device) { (void)device; }
  using UserChangedSink = std::function<void(const std::string& user, uint32_t device)>;
  virtual void set_user_changed_sink(UserChangedSink sink) { (void)sink; }
  // A presence change of `user` decided on this node: its first device attached anywhere, or
  // its last one left (the counts of attach/detach cover every node). `n`, the presence
  // frame, goes to the other nodes, whose presence sink hands it to their own subscribers of
  // the user (a subscription lives on its subscriber's node). Lossy, like every presence
  // frame. `n->seq` carries the change's order (Counted; 0: none), which the receiving node
  // compares with the last it saw of the user. Set the sink before serving; it is called on
  // the delivery thread. A single-node bus: both are no-ops.
  virtual void publish_presence(const std::string& user, const std::shared_ptr<const Notification>& n) {
    (void)user;
    (void)n;
  }
  using PresenceSink = std::function<void(const std::string& user, std::shared_ptr<const Notification> n)>;
  virtual void set_presence_sink(PresenceSink sink) { (void)sink; }
  // The bus found that a user's presence changed without a connect or disconnect here: the
  // node that held the user's last device left the bus (died) or started a new run, and
  // this node removed its entry, found so by the bus or by a read (online(); online false),
  // or this node, subscribed again after a loss, wrote back the entry of a device connected
  // here that another node had removed (online true). Exactly one node reports each change,
  // with its order (as Counted's). Called on a bus thread, or in online() on its caller's;
  // set it before serving. A single-node bus never calls it.
  using PresenceChangeSink = std::function<void(const std::string& user, bool online, uint64_t order)>;
  virtual void set_presence_change_sink(PresenceChangeSink sink) { (void)sink; }
  // This node may have missed other nodes' events that invalidate its caches (the change and
  // user-changed events above): its subscription was lost and is back, or another node could
  // not publish some of its events (Redis away, its queue full) and says so with its next
  // batch. Pub/sub is never trusted: the sink drops every cached membership snapshot, device
  // list, block list, presence policy and registration id (they are read again from the store
  // when next needed). Called on the delivery thread; set it before serving. A single-node bus never
  // calls it.
  virtual void set_resync_sink(std::function<void()> sink) { (void)sink; }
  // Send routing (docs/scaling.md "One sequencing node per conversation"): each conversation's
  // sends are sequenced on one node, its owner among the live nodes, so that nodes do not race
  // for its next seq. route() names the owner if it is another node (empty: sequence here;
  // always so on a single-node bus). request() carries an opaque payload to that node's
  // request sink and hands its response, or an `unavailable` error (no answer in time, or
  // the bus could not publish), to `reply`, once: an answer on the delivery thread, a timeout
  // on a bus thread, a failed publish on the loop that raised it. The payload's meaning is
  // the services' (services/send_forwarding.h); the bus only carries it.
  using Reply = std::function<void(Result<std::string>)>;
  using Respond = std::function<void(std::string response)>;
  virtual std::string route(const std::string& conversation_id) {
    (void)conversation_id;
    return {};
  }
  virtual void request(const std::string& node, std::string payload, Reply reply) {
    (void)node;
    (void)payload;
    reply(make_error(ErrorCode::kUnavailable, "no other nodes"));
  }
  // Where other nodes' requests arrive (the delivery thread); `respond` may be called from any
  // thread, at most once. Set before serving.
  virtual void set_request_sink(std::function<void(std::string payload, Respond respond)> sink) { (void)sink; }
  // This node is about to stop (SIGTERM): the other nodes should stop routing sends to it.
  // Returns how long it should go on serving their requests (those they sent before they
  // learnt it) before it stops; zero where no other node routes to it. The devices it
  // detaches from then on may stay counted online until another node mends them (RedisBus:
  // their users go `offline` only if they do not reconnect elsewhere). Blocking: call it on
  // a thread that may wait (the drain's), not on a loop.
  virtual std::chrono::milliseconds leave() { return {}; }
  // Stops cross-node delivery (its threads are joined; nothing reaches the sink afterwards);
  // local calls keep working. Called by the composition root before the services go.
  virtual void stop() {}
  // This node's view of the nodes on its store (admin). Default: a node alone.
  virtual NodesView nodes() const { return {}; }
  // The wall clock (µs since the Unix epoch) that the nodes sharing this bus agree on: what
  // a message's ts and expiry, and every time compared across nodes, are taken from. A node
  // alone: its own clock. RedisBus: its own plus its measured offset to Redis's. Any thread.
  virtual int64_t clock_us() const { return tern::wall_us(); }
  int64_t clock_ms() const { return clock_us() / 1000; }
  // Closes the device's connection if attached (its endpoint is told replaced(); admin
  // revocation and suspension). The endpoint detaches itself as it closes.
  virtual void disconnect(const DeviceRef& device) = 0;
};

}  // namespace tern::bus
