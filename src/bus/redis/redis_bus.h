// RedisBus: the Bus (bus/bus.h) across several ternd nodes on one Redis (docs/scaling.md).
//
// Local delivery is a LocalBus. What may concern another node goes over Redis pub/sub on one
// channel, `tern:bus`, that every node subscribes to:
//   publish(device)        delivered here if the device is attached here, else published
//                          (to its node, or to every node: below)
//   publish_user(user)     delivered to this node's devices of the user and published
//   publish_conversation   published (read-side posts; the other nodes' LiveFanout)
//   publish_presence       published on `{tern:bus}presence` (a presence change counted here;
//                          the other nodes' subscribers of the user)
// Each node ignores its own batches and hands the others' to its LocalBus (a device not
// attached here is a no-op) or its conversation sink. Requests to one node (forwarded sends)
// and their replies go on that node's own channel, `{tern:bus}:<node>` (same slot), and so
// do events for a device (or a user's devices) that this node's DeviceRoutes place on that
// node (device_routes.h: learned from the nodes' kAttached / kDetached / kNodeSet
// announcements). An event for a device that no node holds goes nowhere, once every node
// takes kMissed: a node that dropped one of a device's events after the device's connection
// elsewhere started tells that node kMissed (dropped_devices.h); while the view is incomplete
// such an event goes to every node.
//
// One connection per device across nodes: a kAttached carries when its connection started;
// a node holding an older connection of that device closes it (replaced(), 1008) and sends
// it nothing more, and every node that sent the device's events elsewhere until then tells
// the announcing node kMissed, whose session reads its inbox again (Endpoint::missed;
// docs/scaling.md "One connection per device, across nodes").
//
// Batching: an event raised on one of the server's event loops (set_loops: every message,
// receipt and forwarded-send reply of the services) is queued on that loop's LoopPublisher
// (loop_publisher.h), which ends the loop's turn with one PUBLISH per run of events for the
// same channel, in queue order (batches()), over the loop's own asynchronous connection: no
// thread hop and no blocking call. Events raised elsewhere (HTTP handlers on reader threads,
// presence, tests) go to the publisher thread, which sends everything queued the same way,
// pipelined (one Redis round trip per batch, however many events). The subscription is held by
// loop 0 (LoopSubscriber, loop_subscriber.h), which decodes what other nodes publish and hands
// it to the endpoints and sinks there (an endpoint of another loop: one mailbox wake-up per
// batch); without loops (tests) by a loop of the bus's own, on its own thread.
//
// Never trusted for durability: a publish lost while Redis is away (or the queue is over its
// bound) is dropped and counted. The message is in the store: a session notices the gap at
// its next message or reconnect and reads the log (services/device_session.h); typing and
// presence are ephemeral by definition.
//
// Membership caches: a system message (membership change) also goes out once as a kChanged
// event, on which every other node drops its cached snapshot of the conversation (the
// change sink: services' Directory), so their next send reads the new members from Redis.
//
// Redis Cluster: the channel is a sharded channel (SPUBLISH / SSUBSCRIBE, Redis 7): it lives
// on the master that serves its slot, so every node publishes to and subscribes on that one
// shard. The publisher thread reads which master serves the channel's slot (at start and
// with every liveness check, and at once when a loop asks after a redirect); the loops publish
// and the subscriber holds an SSUBSCRIBE there. When the slot moves or the master fails over
// (an `sunsubscribe` push, a MOVED answer, or a broken connection) the subscriber has the
// topology read again and subscribes again (events published meanwhile are lost: replay heals
// messages). On one redis-server it uses
// plain PUBLISH / SUBSCRIBE. Registry keys are routed by their slot (RedisCluster).
//
// Registry: every attached device is written to Redis as {r:<user>} <device> → "<node>
// <expires ms>", refreshed every ttl/3 (only while this node's entry is there) and removed
// on detach (only if this node wrote it: a device that moved keeps its new node's entry);
// online(user) is true if a device is attached here or an unexpired entry counts (one of a
// run that is over is removed first: online()). A dead node's entries expire after the ttl
// unless a node mends them first (gone(), new_run(), online()).
//
// Presence counts: attach() and detach() write or remove the device's entry and count the
// user's unexpired entries in one script (atomic on Redis), so the count they return covers
// the user's devices on every node: the first device of a user to attach anywhere sees 1
// (online), the last to detach anywhere sees 0 (offline), even when two nodes do it at the
// same moment. Both are one Redis round trip on the calling loop (the same blocking
// deviation as RedisStore's reads; docs/scaling.md); if Redis cannot be reached they fall
// back to this node's own count and queue the registry write.
//
// Users' cached state: announce_user_changed(user) publishes a kDevices event (the name of its
// first use, a device link; kept on the wire so that older nodes still decode it); the other
// nodes hand it to their user-changed sink (services drop their cached device list, block
// list and presence policy of the user).
//
// Thread-safety: every method from any thread. Owns its threads (joined by stop()), the
// LocalBus and the loops' LoopPublishers (the loops must be joined before the bus is destroyed).
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>
#include <map>
#include <array>
#include <atomic>
#include <optional>

#include <boost/asio/io_context.hpp>

#include "base/loops.h"
#include "bus/bus.h"
#include "bus/local/local_bus.h"
#include "bus/redis/device_routes.h"
#include "bus/redis/dropped_devices.h"
#include "bus/redis/node_ring.h"
#include "bus/redis/pending_requests.h"
#include "store/redis/redis_cluster.h"
#include "store/redis/redis_connection.h"

namespace tern::bus {

class LoopPublisher;
class LoopSubscriber;

struct RedisBusOptions {
  store::redis::RedisAddress address;
  // Seeds of a Redis Cluster (or of one redis-server); when set, used instead of `address`.
  std::vector<store::redis::RedisAddress> seeds;
  store::redis::RedisCredentials credentials{};      // every connection of the bus logs in with these
  std::string node_id;                               // unique among the nodes on this Redis
  std::chrono::milliseconds registry_ttl{30000};
  std::chrono::milliseconds command_timeout{1000};
  size_t queue_limit = 100000;                       // events waiting to be published; more are dropped
  // Send routing (NodeRing): a node is live while its subscriber connection is open (named
  // "tern-bus:<node_id>"); every node_check the publisher reads the live nodes (CLIENT LIST
  // on the channel's Redis). A forwarded send unanswered after request_timeout fails
  // `unavailable`, and its node is left out of the ring here for suspect_for.
  bool route_sends = true;  // false: route() always answers "here" (every node sequences)
  // Device routes (device_routes.h): announce this node's attaches, detaches and set, and send
  // a device's events to the node that holds it. false: announce nothing, send to every node
  // (what a version without routes does; for a rolling upgrade).
  bool route_devices = true;
  // With route_devices: an event for a device that no node holds goes nowhere (kMissed heals a
  // drop that raced a connect, by the nodes' wall clocks: dropped_devices.h). false: it goes
  // to every node. This node's sets say it takes kMissed either way.
  bool drop_nowhere = true;
  std::chrono::milliseconds node_check{500};
  std::chrono::milliseconds request_timeout{2000};
  std::chrono::milliseconds suspect_for{5000};
  // A node absent from every liveness list for this long (counted from the first list
  // without it) has left the bus: the registry entries of the devices this node's routes
  // place there are removed, and a user left with none is reported offline
  // (set_presence_change_sink). Longer than a node takes to subscribe again after a Redis
  // restart or failover. Also how long after a node's new run is seen the entries of its
  // last run are removed (RedisBus::new_run): the time its devices have to reconnect.
  std::chrono::milliseconds node_gone_after{5000};
  // This node's wall clock in µs since the epoch; empty: the system clock. The bus corrects it
  // by its offset to Redis's clock (RedisBus::clock_us). Tests set a skewed one.
  std::function<int64_t()> local_wall_us;
};

class RedisBus final : public Bus {
 public:
  explicit RedisBus(RedisBusOptions options);
  ~RedisBus() override;

  // The server's event loops: events raised on one of them are published by that loop
  // (LoopPublisher). Before start(); without it every event goes through the publisher thread.
  void set_loops(Loops& loops);
  // Events handed to Redis by the loops and by the publisher thread (tests, profiles; the
  // route announcements of device_routes.h are not counted).
  uint64_t published_by_loops() const { return published_by_loops_.load(std::memory_order_relaxed); }
  uint64_t published_by_thread() const { return published_by_thread_.load(std::memory_order_relaxed); }
  uint64_t dropped_by_loops() const { return dropped_by_loops_.load(std::memory_order_relaxed); }
  // Device and user events (kDevice, kRouted, kUser) this node received from other nodes;
  // device events it sent on one node's channel (routed) or to every node (tests, profiles).
  uint64_t device_events_received() const { return received_.load(std::memory_order_relaxed); }
  uint64_t routed() const { return routed_.load(std::memory_order_relaxed); }
  uint64_t broadcast() const { return broadcast_.load(std::memory_order_relaxed); }
  // Device events sent nowhere: no node holds the device (dropped_devices.h).
  uint64_t sent_nowhere() const { return nowhere_.load(std::memory_order_relaxed); }
  // Where this node believes the other nodes' devices are (device_routes.h).
  const DeviceRoutes& routes() const { return routes_; }

  // Starts the threads and waits (at most `deadline`) for the subscription to be in place
  // (and, with loops, for the publisher thread to have read where the loops publish); false
  // if Redis could not be reached in time (the threads keep trying).
  bool start(std::chrono::milliseconds deadline = std::chrono::milliseconds(5000));
  // With loops: waits (at most `deadline`) until loop 0 holds the subscription; call it once
  // the loops run. True at once if subscribed.
  bool await_subscribed(std::chrono::milliseconds deadline = std::chrono::milliseconds(5000));

  size_t attach(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint) override;
  size_t detach(const DeviceRef& device, const Endpoint* endpoint) override;
  // The registry write and count run on the counter thread (one Redis round trip each);
  // `counted` runs there, in call order.
  void attach_async(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint, Counted counted) override;
  void detach_async(const DeviceRef& device, const Endpoint* endpoint, Counted counted) override;
  // Here if attached here; else on the channel of each live node that the device routes name
  // (true); else (false: offline as far as this node knows, push may wake it) nowhere when
  // the routes know that no node holds it and every node takes kMissed, or to every node
  // (docs/scaling.md "Device events go to the node that holds the device").
  bool publish(const DeviceRef& device, const std::shared_ptr<const Notification>& n) override;
  void publish_user(const std::string& user, const std::shared_ptr<const Notification>& n) override;
  // A registry entry of a run that is over (DeviceRoutes::over; this node's last run, over
  // node_gone_after after this one started) is removed here and now, with its 'x' script;
  // one that will be over is checked again then (counter thread, check_again), so that a
  // user shown online on its strength is shown offline when it is over (docs/scaling.md
  // "Entries that no node mends").
  using Bus::online;
  bool online(const std::string& user, bool* reported_offline) override;
  void publish_conversation(const std::shared_ptr<const Notification>& n) override;
  void set_conversation_sink(std::function<void(std::shared_ptr<const Notification>)> sink) override;
  void set_change_sink(std::function<void(const std::string& conversation_id)> sink) override;
  // A kChanged that carries no message (seq 0): what older nodes decode as one with a message.
  void announce_created(const std::string& conversation_id) override;
  void announce_user_changed(const std::string& user) override;
  // A kDevices naming the device (older nodes read the user only).
  void announce_keys_changed(const DeviceRef& device) override;
  void set_user_changed_sink(UserChangedSink sink) override;
  // On a channel of its own (kPresenceChannel), so that a node of an older version, which
  // does not subscribe to it, never receives an event it cannot decode.
  void publish_presence(const std::string& user, const std::shared_ptr<const Notification>& n) override;
  void set_presence_sink(PresenceSink sink) override;
  void set_presence_change_sink(PresenceChangeSink sink) override;
  void set_resync_sink(std::function<void()> sink) override;
  void set_head_sink(HeadSink sink) override;
  std::string route(const std::string& conversation_id) override;
  void request(const std::string& node, std::string payload, Reply reply) override;
  void set_request_sink(std::function<void(std::string payload, Respond respond)> sink) override;
  // Closes the device's connection here and on every other node (a kDisconnect event).
  void disconnect(const DeviceRef& device) override;
  // Opens a subscriber connection named kLeavingConnectionPrefix + node id on the channels'
  // Redis (node_ring.h): the other nodes leave this node out of their rings at their next
  // look (node_check), so it is asked to sequence nothing new; it keeps answering what they
  // asked before. Returns twice node_check when another node is live (read on that
  // connection first) and sends are routed (zero otherwise, or when the connection could not
  // be made: then they learn it when the node's bus connection closes, as before). Open
  // until stop(). When another node is live and devices are routed, the detaches from then on
  // keep their registry entries and are not announced (keep_entries_), and no set is sent:
  // the others mend them (a device that reconnects there overwrites its entry, and the rest
  // are removed by new_run or gone()), so a user whose device reconnects is never `offline`.
  std::chrono::milliseconds leave() override;
  void stop() override;  // also run by the destructor
  // The time every node's bus compares: this node's wall clock (options.local_wall_us) plus
  // its offset to the clock of the Redis that serves the channels, measured with TIME when the
  // publisher connects and every kClockEvery after (0 until the first answer). Connection
  // starts, drops (kMissed) and registry expiries are in it, so nodes whose own clocks
  // disagree (by more than kClockSkewUs, or than the registry TTL) still agree; what is left is
  // each measurement's error, at most half its round trip (kClockMaxRoundTrip). Any thread.
  int64_t clock_us() const override;
  // The last measured offset of this node's clock to Redis's (µs; Redis's minus this node's).
  int64_t clock_offset_us() const { return clock_offset_us_.load(std::memory_order_relaxed); }
  static constexpr std::chrono::seconds kClockEvery{10};
  static constexpr std::chrono::milliseconds kClockMaxRoundTrip{50};
  // An offset above this is logged (event=clock_offset): the bus corrects its own times, but
  // message timestamps and expiries are the node's own clock.
  static constexpr int64_t kClockWarnUs = 1'000'000;

  // The nodes as the publisher thread's last liveness check listed them (CLIENT LIST of the
  // channels' Redis), the suspicions of send routing, and whether the subscription is held.
  NodesView nodes() const override;

  // The wire form of one event (exposed for the tests): target + notification.
  // kChanged: a system message of n->conversation_id (sent once per seq, even when every
  // recipient is attached here): the other nodes drop their cached membership of it.
  // kDisconnect: close the device's connection (admin revocation) wherever it is attached.
  // kDevices: what the nodes cache of .device.user changed (a device link, blocks, presence setting).
  // kRequest / kReply: a forwarded request or its response for node .device.user; n->seq is
  // the request's id at the asking node, n->frame the payload.
  enum class Target : uint8_t {
    kDevice = 'D', kUser = 'U', kConversation = 'C', kChanged = 'X', kDisconnect = 'K', kDevices = 'V',
    kRequest = 'Q', kReply = 'A',
    // The sending node dropped events since its last batch (Redis away, its queue full): the
    // others drop their caches (set_resync_sink) and what they knew of its devices (a
    // kNodeSet ends the batch). First in the batch that carries it.
    kResync = 'S',
    // Device routes (device_routes.h): the sender attached / detached .device; its whole
    // attached set (n->frame, DeviceRoutes::encode_set); a roll call (every node answers with
    // its kNodeSet; the caller's own follows it).
    // A kNodeSet's seq is at least kSetKnowsMissed from a node that takes kMissed (older ones
    // send 0): its run_start_expiry_ms_ (older ones send kSetKnowsMissed itself).
    // A kRollCall's seq is its node's run_start_expiry_ms_ (older ones send 0): the node's
    // registry entries that expire before it are from an earlier run (new_run()).
    kAttached = 'T', kDetached = 'F', kNodeSet = 'N', kRollCall = 'R',
    // A device event sent on the channel of the node the routes name (kDevice goes to every
    // node): if the device is not attached there (it moved), that node sends it on as kDevice.
    kRouted = 'H',
    // To the node that announced a newer connection of .device, from a node that until then
    // sent the device's events elsewhere (to its own older connection, or to the nodes its
    // routes named): the device's session there reads its inbox again (Endpoint::missed).
    kMissed = 'M',
    // A presence change of .device.user decided on the sending node (n->frame: the presence
    // frame), for the other nodes' subscribers; on kPresenceChannel only.
    kPresence = 'P',
  };
  // The channel of kPresence events, in the slot of the others (one SSUBSCRIBE holds all three
  // on a Cluster); no node channel ("{tern:bus}:<node>") can have this name.
  static constexpr const char* kPresenceChannel = "{tern:bus}presence";
  // The channel a leaving node's marker connection subscribes to (leave()): in the slot of
  // tern:bus, so that its CLIENT LIST shows it; nothing is published there.
  static constexpr const char* kLeavingChannel = "{tern:bus}leaving";
  static constexpr Seq kSetKnowsMissed = 2;
  // How far the nodes' wall clocks may disagree when a drop is compared with a connection's
  // start (a kAttached's): a drop up to this long before the start still counts.
  static constexpr int64_t kClockSkewUs = 1'000'000;
  struct Event {
    Event() = default;
    Event(Target t, DeviceRef d, std::shared_ptr<const Notification> notification, std::string to_node = {})
        : target(t), device(std::move(d)), n(std::move(notification)), to(std::move(to_node)) {}
    Target target = Target::kDevice;
    DeviceRef device;  // kDevice: the device; kUser: .user; kRequest/kReply: .user is the node
    std::shared_ptr<const Notification> n;
    std::string to;  // not encoded: the node whose channel carries it (empty: kChannel)
  };
  static void encode(std::string& out, const Event& e);
  // Decodes every event of a batch body (after the node header); false if malformed.
  static bool decode(std::string_view in, std::vector<Event>& out);
  // The PUBLISHes of one publisher turn: each is a channel and its payload (the node header
  // `node`, then its events; a kResync first when `resync`), with how many events it carries
  // and the ids of the requests among them (what a failed PUBLISH must fail). A node receives
  // kChannel and its own channel, and must get the events of those two in the order they
  // were queued (a session steps over its own message's seq when the reply to its forwarded
  // send arrives; a message to it queued after that reply must not overtake it). So the
  // events are cut into runs at every switch between kChannel and the node channels, and
  // within a run of node channels grouped by channel (one PUBLISH per node per run): the
  // order each node sees is the queue's.
  // `unheard`: the batch's device and user events for one node (routed), sent again to every
  // node (as_broadcast) when its PUBLISH reached no subscriber: that node is gone (SIGKILLed,
  // before the liveness check has seen it), and its devices may have reconnected elsewhere.
  struct Batch {
    std::string channel, payload;
    size_t events = 0;
    std::vector<uint64_t> requests;
    std::vector<Event> unheard;
  };
  static Event as_broadcast(Event e);
  static std::vector<Batch> batches(const std::deque<Event>& events, bool resync, const std::string& node);
  // The channel an event goes on: `{tern:bus}:<node>` for a request or reply (to node
  // .device.user) or an event with `to`, kPresenceChannel for kPresence, else tern:bus.
  static std::string channel_of(const Event& e);

 private:
  friend class LoopPublisher;
  friend class LoopSubscriber;
  // The channel every node subscribes to. Its slot also holds the node channels and the
  // presence channel, and serves the liveness list and the clock (one shard on a Cluster).
  static constexpr const char* kChannel = "tern:bus";
  // For the subscriber: its connection's name (node_ring.h), its three channels (tern:bus,
  // its own, kPresenceChannel), and the news that it holds them (`again`: not the first
  // time, events may have been missed).
  std::string connection_name() const;
  std::array<std::string, 3> subscription_channels() const;
  void on_subscribed(bool again);
  // Where the loops publish: the master of the channels' slot as the publisher thread last
  // saw it; `generation` changes when it does.
  struct ChannelTarget {
    store::redis::RedisAddress address;
    bool cluster = false;
    uint64_t generation = 0;
  };
  std::optional<ChannelTarget> channel_target() const;
  void note_channel_target(const store::redis::RedisCluster& conn);  // publisher thread
  void want_refresh();  // a loop saw a redirect: the publisher thread reads the topology again
  void count_published(size_t events, bool by_loop);
  void count_dropped(size_t events);
  bool enqueue(Event e);  // this loop's publisher, or the thread's queue; false: dropped
  bool enqueue_thread(Event e);  // the publisher thread's queue; false: dropped (queue full)
  void respond_to(const std::string& node, uint64_t id, std::string response);
  // The requests among `events` that were not published fail at once (`unavailable`).
  void fail_requests(const std::deque<Event>& events);
  // Hands request `id` its answer (or error) and forgets it; a no-op if already answered.
  void complete(uint64_t id, Result<std::string> answer);
  // Fails the requests past their deadline (suspecting their nodes); the earliest deadline
  // still pending, or `later` if none is earlier.
  std::chrono::steady_clock::time_point expire_requests(std::chrono::steady_clock::time_point later);
  // Reads the live nodes into the ring (publisher thread).
  void heartbeat(store::redis::RedisCluster& conn);
  void publisher();
  void counter();  // the counter thread: registry writes whose count a caller awaits
  // Local detach; returns the registry op that counts it: '-' if `endpoint` was the device's
  // current connection here (its entry goes); '>' if its device moved to another node (named
  // in `moved_to`): the entry, if still this node's, becomes that node's, which its '+'
  // overwrites, perhaps after this op (removing it would show the user offline until then;
  // keeping it as this node's would outlive that node if it died before its '+', with no
  // offline told: a gone node's mend removes only its own entries); else '=' (the entry
  // stays): a replaced connection (its replacement's detach comes later), or leaving with the
  // entries kept (leave()).
  char detach_here(const DeviceRef& device, const Endpoint* endpoint, size_t& local, std::string& moved_to);
  // The registry op failed: the publisher retries the write; the local count stands in.
  void registry_later(bool attach, const DeviceRef& device);
  // attached_ gets the device's endpoint, and the publisher thread's queue its kAttached.
  void attached_here(const DeviceRef& device, const Endpoint* endpoint);
  // Queues a kAttached / kDetached for the publisher thread (mu_ held); a kAttached carries
  // the connection's start (`since_us`) in its seq.
  void announce_locked(Target target, const DeviceRef& device, int64_t since_us = 0);
  // Another node announced a connection of `device` that started at `since_us`: if the one
  // here is older, it is marked moved and closed (1008 "replaced"), as a second connection on
  // one node closes the first (docs/protocol.md "One connection per device"). True if the
  // device has a connection here (so its events went here until now).
  bool attached_elsewhere(const std::string& node, const DeviceRef& device, int64_t since_us);
  // The device has a connection here that has not moved (mu_ taken).
  bool held_here(const DeviceRef& device);
  // find() said kNowhere: under drops_mu_, asks again and, if still nowhere and every node
  // takes kMissed, notes the drop and answers kNowhere; else what find() answers now
  // (kNowhere that may not drop counts as kUnknown). The lock orders a drop against
  // deliver()'s check of a kAttached, made after the route was added: either the check sees
  // the drop, or this find sees the route.
  DeviceRoutes::Where drop_if_nowhere(const DeviceRef& device, std::vector<std::string>& nodes);
  // tern_bus_routes_complete: whether events for devices nowhere go nowhere now.
  void note_routes_complete();
  // An event for `device` may have been dropped here at or after `from_us` (drops_mu_ taken).
  bool dropped_since(const DeviceRef& device, int64_t from_us);
  void roll_call_later();  // a roll call was not published: the next turn sends it
  void deliver(std::string_view payload);
  // Writes ('+'), removes ('-'), hands to `moved_to` ('>') or leaves ('=') the device's
  // registry entry and returns how many of the user's entries have not expired; an error if
  // Redis cannot be reached.
  struct Count {
    size_t devices;  // the user's unexpired entries after the op
    uint64_t order;  // the op's place among the user's presence changes (bus.h Counted)
    bool added;      // a '+' found no unexpired entry of the device (bus.h Counted)
  };
  Result<Count> registry_count(char op, const DeviceRef& device, const std::string& moved_to = {});
  // This node's registry entry as of now: "<node id> <expiry ms>", the expiry registry_ttl
  // from now and never before run_start_expiry_ms_.
  std::string entry_value() const;
  // 'x': removes each device's entry if `node` (which left the bus, or started a new run)
  // wrote it and, when `below_ms` is not 0, it expires before that; 'r': writes this node's
  // entry unless another node's is there (back on the bus). Pipelined. Reports each presence
  // change it made (presence_change_sink_). Counter thread.
  // Returns false if Redis could not be reached for every device (the rest are not mended).
  struct CountOp;  // an op of the counter thread, below
  // `seen`: the user's unexpired entries after the last script that answered (-1: none did),
  // and whether an offline was reported (online() passes a single user's devices).
  struct MendSeen {
    int64_t after = -1;
    bool reported_offline = false;
  };
  bool registry_mend(char op, const std::vector<DeviceRef>& devices, const std::string& node, int64_t below_ms = 0,
                     MendSeen* seen = nullptr);
  // When an entry `node` wrote, expiring at expiry_ms, is over (DeviceRoutes::over; for this
  // node's own: written by its last run, over node_gone_after after this one started).
  DeviceRoutes::Over entry_over(const std::string& node, int64_t expiry_ms, std::chrono::steady_clock::time_point now) const;
  // The bound of a mend of a node that is gone (DeviceRoutes::Over::below 0): later than
  // every entry it wrote before it was absent for node_gone_after, earlier than every entry
  // a new run of it, not listed yet, writes (half of node_gone_after to spare on each side).
  int64_t gone_bound() const;
  // Queues the 'c' op (entries of op.node for op.device.user that will be over at
  // op.not_before), at most one per user and node and kMaxChecks in all (more: those
  // entries expire unmended, as before). Any thread.
  void check_later(CountOp op);
  // The 'c' ops due (counter thread): mends their entries that are over (pipelined, by node
  // and bound), queues again those not yet over, drops those whose node is live on their run
  // again.
  void check_again(std::vector<CountOp> ops);
  // Removes the entries that are over, by node and bound (DeviceRoutes::Over::below; 0: a gone
  // node's, bounded by gone_bound()), pipelined (registry_mend, `seen` passed on).
  void mend_stale(const std::map<std::pair<std::string, int64_t>, std::vector<DeviceRef>>& over, MendSeen* seen);
  // The user's unexpired registry entries in `a` (device, value pairs from element `from`
  // on), sorted by entry_over(): how many count (live, or not over yet), those over now (by
  // node and bound; with `defer_over`, a 'c' op due now instead), and a 'c' op per node of
  // those not over yet (due when the first is). online() reads them; a '-' count gets them
  // back when it leaves some (registry_count), since one that is over would keep the user
  // online after the last real device left.
  struct Entries {
    size_t counted = 0;
    std::map<std::pair<std::string, int64_t>, std::vector<DeviceRef>> over;
    std::map<std::string, CountOp> later;
  };
  Entries sort_entries(const std::string& user, const redisReply* a, size_t from, bool defer_over) const;
  static constexpr size_t kMaxChecks = 100000;
  // Queues the 'x' op of the devices of nodes that left the bus (bounded by gone_bound()),
  // due at once, made by mend_run as a new run's is: by the first of the `live` ones (not
  // leaving), or by another node_gone_after later with no mark (publisher thread).
  void gone(std::vector<DeviceRoutes::Gone> nodes, const std::vector<std::string>& live);
  // `node` made a roll call naming the start of its run (`start_expiry_ms`, its first entries'
  // expiry): if that is new here, the entries of the devices these routes hold there that
  // expire before it are from its last run (it died and was started again before it counted
  // as gone, or it stopped for a restart and left them: leave()): queued for removal ('x'),
  // node_gone_after from now (mend_run). Every node that saw the value change queues it, so
  // that the mend outlives the node that would make it; a value seen for the first time only
  // the first live node does. Subscriber's loop.
  void new_run(const std::string& node, int64_t start_expiry_ms);
  // A new run's mend, or a gone node's (op.gone), due (counter thread): made here unless a
  // node marked it done (run_mended_key, gone_mended_key) or this node is leaving, if this node is the first live one other than
  // op.node and not leaving, or (op.take_over: this node saw the run change) no mark came
  // node_gone_after after it was due (op.anyway_at); then marked done. Returns false to be
  // asked again later: another node is first (it may stop before it is done, or hold none of
  // the devices), or Redis was away.
  bool mend_run(const CountOp& op);
  // The key that says up to which run start (a value of new_run's) `node`'s entries were
  // mended: the nodes that are not first read it before taking a mend over.
  static std::string run_mended_key(const std::string& node) { return "tern:mended:{" + node + "}"; }
  // The same for gone(): up to which bound (gone_bound() of the node that made it) the
  // entries of `node`, which left the bus, were removed.
  static std::string gone_mended_key(const std::string& node) { return "tern:mended-gone:{" + node + "}"; }
  // The publisher thread's registry writes of one turn (`reg`: writes and removals Redis
  // missed; `refresh`: this node's entries), added to its pipelines by slot; the strings the
  // views name go into `owned`. In redis_bus_registry.cc, with the rest of the registry.
  void registry_writes(const std::deque<std::pair<bool, DeviceRef>>& reg,
                       const std::vector<std::pair<std::string, uint32_t>>& refresh, std::deque<std::string>& owned,
                       std::map<uint16_t, std::vector<std::vector<std::string_view>>>& by_slot);
  store::redis::RedisClusterOptions cluster_options(std::chrono::milliseconds command_timeout) const;

  const RedisBusOptions options_;
  LocalBus local_;
  std::function<void(std::shared_ptr<const Notification>)> sink_;
  std::function<void(const std::string&)> change_sink_;
  UserChangedSink user_changed_sink_;
  PresenceSink presence_sink_;
  PresenceChangeSink presence_change_sink_;
  std::function<void()> resync_sink_;
  HeadSink head_sink_;
  std::function<void(std::string, Respond)> request_sink_;
  NodeRing ring_;
  // The last liveness list (heartbeat(), publisher thread), kept for nodes().
  mutable std::mutex listed_mu_;
  std::vector<std::string> listed_live_, listed_leaving_;  // listed_mu_
  std::chrono::steady_clock::time_point listed_at_{};  // listed_mu_; epoch: none yet
  std::atomic<bool> subscribed_now_{false};  // set and cleared by the subscriber's loop
  std::atomic<int64_t> clock_offset_us_{0};  // written by the publisher thread (measure_clock)
  bool clock_warned_ = false;  // publisher thread: the offset was last logged as too large
  // Reads Redis's TIME on the channels' node; sets clock_offset_us_ unless the round trip took
  // longer than kClockMaxRoundTrip. Returns whether it measured. Publisher thread.
  bool measure_clock(store::redis::RedisCluster& conn);
  int64_t local_wall_us() const;  // options_.local_wall_us or the system clock
  DeviceRoutes routes_;
  PendingRequests requests_;  // sent to other nodes, waiting for their replies
  // The last head hint given (the subscriber's loop only): the same message comes once per
  // recipient device, one after the other; it is hinted once.
  std::string hinted_conversation_;
  Seq hinted_seq_ = 0;
  std::pair<std::string, Seq> last_changed_;  // guarded by mu_: one kChanged per system message
  // The earliest expiry of the registry entries this run writes (its start + registry_ttl,
  // this node's wall clock; entry_value() never writes an earlier one, even if the clock
  // steps back): carried by its roll calls (new_run()).
  // Set again by the publisher thread from the first measured clock, before the first
  // connection to Redis is announced to start() (nothing reads it before then but tests).
  std::atomic<int64_t> run_start_expiry_ms_;
  mutable std::atomic<bool> entry_written_{false};  // entry_value() was called (any thread)
  const std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();

  Loops* loops_ = nullptr;
  std::vector<std::shared_ptr<LoopPublisher>> publishers_;  // one per loop (set_loops)
  std::atomic<bool> stopped_{false};
  std::atomic<uint64_t> published_by_loops_{0}, published_by_thread_{0}, dropped_by_loops_{0};
  std::atomic<uint64_t> received_{0}, routed_{0}, broadcast_{0}, nowhere_{0};
  std::mutex drops_mu_;  // guards dropped_devices_ (drop_if_nowhere, dropped_since)
  DroppedDevices dropped_devices_{std::chrono::seconds(60), 262144};
  mutable std::mutex target_mu_;
  std::optional<ChannelTarget> target_;  // guarded by target_mu_
  std::atomic<uint64_t> target_generation_{0};
  std::atomic<bool> refresh_wanted_{false};
  std::atomic<bool> keep_entries_{false};  // leave(): detaches keep their entries (any thread)

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> queue_;
  std::deque<std::pair<bool, DeviceRef>> registry_ops_;  // (attach?, device) to write
  // A device's connection here. `since_us` (wall clock) travels in its kAttached, so that two
  // nodes holding one device agree which connection is the newer one; `moved`: another node
  // has the newer one, this one is being closed (it gets nothing more; device events go there).
  struct Here {
    const Endpoint* endpoint = nullptr;
    int64_t since_us = 0;
    bool moved = false;
    std::string moved_to;  // the node that has it, when moved
  };
  std::map<std::pair<std::string, uint32_t>, Here> attached_;  // guarded by mu_; refreshed in the registry
  bool stopping_ = false;
  bool dropped_ = false;  // enqueue() dropped an event since the publisher last looked (mu_)
  bool owe_roll_call_ = false;  // (mu_) subscribed anew: the next batch makes a roll call
  bool owe_node_set_ = false;   // (mu_) another node made a roll call: the next batch answers
  bool subscribed_ = false;  // guarded by mu_; the subscriber has held the channels once
  std::condition_variable subscribed_cv_;  // subscribed_ or the first channel target (mu_)
  std::unique_ptr<boost::asio::io_context> own_io_;  // without loops: the subscriber's loop
  std::shared_ptr<LoopSubscriber> subscriber_;       // after own_io_: destroyed before it
  std::mutex leaving_mu_;  // guards leaving_
  std::unique_ptr<store::redis::RedisConnection> leaving_;  // leave()'s marker, closed by stop()
  std::mutex query_mu_;  // online(): one client, one query at a time
  std::unique_ptr<store::redis::RedisCluster> query_;
  std::thread publisher_thread_;
  std::thread subscriber_thread_;
  struct CountOp {
    char op;  // registry_count's, or registry_mend's ('x', 'r': no `counted`)
    DeviceRef device;
    size_t local;  // this node's count when the call was made
    Counted counted;
    std::string node;  // 'x': the node that left; '>': the node the device moved to
    std::vector<DeviceRef> devices;  // 'x', 'r': the devices whose entries are mended
    int64_t below_ms = 0;  // 'x': only entries that expire before it (0: all of `node`'s)
    std::chrono::steady_clock::time_point not_before{};  // run no sooner (new_run's 'x')
    bool take_over = false;  // new_run's 'x' of a run that changed: made here if the first does not
    std::chrono::steady_clock::time_point anyway_at{};  // ... even if not first, from then on
    std::chrono::steady_clock::time_point until{};  // new_run's 'x': asked again until then
    bool local_added = true;  // '+': no connection of the device was attached here
    int64_t expiry_ms = 0;  // 'c': the latest expiry of the entries checked again
    bool gone = false;  // gone()'s 'x' (marked in gone_mended_key), else new_run's
  };
  std::mutex counts_mu_;
  std::condition_variable counts_cv_;
  std::deque<CountOp> counts_;  // guarded by counts_mu_; bounded by the connections (one op each way)
  bool counts_stopping_ = false;  // guarded by counts_mu_
  std::unordered_set<std::string> checks_;  // guarded by counts_mu_: "<user> <node>" of each queued 'c'
  std::thread counter_thread_;
};

}  // namespace tern::bus
