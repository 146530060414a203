#include "bus/redis/redis_bus.h"

#include "bus/redis/loop_publisher.h"
#include "bus/redis/loop_subscriber.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include "base/byte_codec.h"
#include "base/clock.h"
#include "base/metrics.h"
#include "base/thread_name.h"

namespace tern::bus {

namespace {

using store::redis::RedisCluster;
using store::redis::RedisConnection;
using store::redis::key_slot;
// A node's own channel: requests to it and replies to its requests (forwarded sends), which
// no other node needs to receive and decode. The hash tag puts it in kChannel's slot, so on a
// Cluster one SSUBSCRIBE on that shard holds both and one pipeline publishes to both.
std::string node_channel(std::string_view node) { return "{tern:bus}:" + std::string(node); }
bool for_one_node(const RedisBus::Event& e) {
  return e.target == RedisBus::Target::kRequest || e.target == RedisBus::Target::kReply;
}
// The device routes' bookkeeping (device_routes.h), not an event the services raised.
bool route_announcement(const RedisBus::Event& e) {
  return e.target == RedisBus::Target::kAttached || e.target == RedisBus::Target::kDetached ||
         e.target == RedisBus::Target::kNodeSet || e.target == RedisBus::Target::kRollCall;
}
// While a live node's set has not arrived, a roll call (to every node) is made again at most
// this often (docs/scaling.md "Device events go to the node that holds the device").
constexpr std::chrono::seconds kRollCallEvery{2};

Counter& dropped_metric = MetricsRegistry::global().counter(
    "tern_bus_dropped_total", "cross-node events dropped (Redis away or queue full); replay heals messages");
Counter& published_metric =
    MetricsRegistry::global().counter("tern_bus_published_total", "cross-node events published to Redis");
Counter& received_metric =
    MetricsRegistry::global().counter("tern_bus_received_total", "cross-node events received from other nodes");
Counter& routed_metric = MetricsRegistry::global().counter(
    "tern_bus_routed_total", "device events sent on the channel of the node that holds the device");
Gauge& routes_metric = MetricsRegistry::global().gauge(
    "tern_bus_routes", "devices this node knows to be connected to another node (device routes)");
Counter& moved_metric = MetricsRegistry::global().counter(
    "tern_bus_moved_total", "connections closed because their device connected to another node since (1008 replaced)");
Gauge& complete_metric = MetricsRegistry::global().gauge(
    "tern_bus_routes_complete",
    "1 while this node knows every live node's devices and every node takes kMissed: events for devices connected nowhere go nowhere");
Counter& nowhere_metric = MetricsRegistry::global().counter(
    "tern_bus_nowhere_total", "device events sent to no node: no node holds the device (offline)");
Counter& broadcast_metric = MetricsRegistry::global().counter(
    "tern_bus_broadcast_total", "device events sent to every node (where the device is, is not known here)");

using Reader = ByteReader;

Counter& requests_failed_metric = MetricsRegistry::global().counter(
    "tern_bus_requests_failed_total", "requests to another node (forwarded sends) not answered in time or not published");

}  // namespace

void RedisBus::encode(std::string& out, const Event& e) {
  const Notification& n = *e.n;
  out.push_back(static_cast<char>(e.target));
  put_str(out, e.device.user);
  put_u32(out, e.device.device);
  out.push_back(static_cast<char>(n.kind));
  put_str(out, n.conversation_id);
  put_u64(out, n.seq);
  out.push_back(static_cast<char>((n.per_device ? 1 : 0) | (n.system ? 2 : 0) | (n.droppable ? 4 : 0) |
                                  (n.frame ? 8 : 0)));
  put_str(out, n.frame ? std::string_view(*n.frame) : std::string_view());
  put_str(out, n.origin.user);
  put_u32(out, n.origin.device);
}

bool RedisBus::decode(std::string_view in, std::vector<Event>& out) {
  Reader r{in};
  while (r.ok && !r.in.empty()) {
    Event e;
    const auto target = static_cast<Target>(r.num(1));
    if (target != Target::kDevice && target != Target::kUser && target != Target::kConversation &&
        target != Target::kChanged && target != Target::kDisconnect && target != Target::kDevices &&
        target != Target::kRequest && target != Target::kReply && target != Target::kResync &&
        target != Target::kAttached && target != Target::kDetached && target != Target::kNodeSet &&
        target != Target::kRollCall && target != Target::kRouted && target != Target::kMissed &&
        target != Target::kPresence)
      return false;
    e.target = target;
    e.device.user = r.str();
    e.device.device = static_cast<uint32_t>(r.num(4));
    auto n = std::make_shared<Notification>();
    const uint64_t kind = r.num(1);
    if (kind > static_cast<uint64_t>(Notification::Kind::kMembership)) return false;
    n->kind = static_cast<Notification::Kind>(kind);
    n->conversation_id = r.str();
    n->seq = r.num(8);
    const uint64_t flags = r.num(1);
    n->per_device = flags & 1;
    n->system = flags & 2;
    n->droppable = flags & 4;
    std::string frame = r.str();
    if (flags & 8) n->frame = std::make_shared<const std::string>(std::move(frame));
    n->origin.user = r.str();
    n->origin.device = static_cast<uint32_t>(r.num(4));
    if (!r.ok) return false;
    e.n = std::move(n);
    out.push_back(std::move(e));
  }
  return r.ok;
}

RedisBus::RedisBus(RedisBusOptions options)
    : options_(std::move(options)),
      ring_(options_.node_id, options_.suspect_for),
      routes_(options_.node_id, options_.registry_ttl, options_.node_gone_after),
      run_start_expiry_ms_(local_wall_us() / 1000 + options_.registry_ttl.count()) {}

RedisBus::~RedisBus() { stop(); }

void RedisBus::stop() {
  stopped_.store(true, std::memory_order_relaxed);  // the loops publish nothing more
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  {
    std::lock_guard lock(counts_mu_);
    counts_stopping_ = true;
  }
  counts_cv_.notify_all();
  if (subscriber_) subscriber_->stop();  // delivers nothing more; closes on its loop
  if (own_io_) {
    // After the subscriber's close (handlers run in order), the bus's own loop ends.
    boost::asio::post(*own_io_, [io = own_io_.get()] { io->stop(); });
  }
  if (publisher_thread_.joinable()) publisher_thread_.join();
  if (subscriber_thread_.joinable()) subscriber_thread_.join();
  if (counter_thread_.joinable()) counter_thread_.join();
  std::lock_guard lock(leaving_mu_);
  leaving_.reset();  // the other nodes see this node gone with its bus connection
}

std::chrono::milliseconds RedisBus::leave() {
  auto target = channel_target();
  if (!target) return {};  // never reached Redis: no node routes here
  auto conn = store::redis::RedisConnection::connect(target->address, options_.command_timeout, options_.command_timeout,
                                                     options_.credentials);
  if (!conn) {
    spdlog::warn("event=bus_leave_failed node={} error=\"{}\"", options_.node_id, conn.error().message);
    return {};
  }
  // Who may be routing here: the live nodes now (this node's last look may be up to
  // node_check old, and a node that just started has seen nobody yet).
  size_t others = 0;
  if (auto list = (*conn)->command({"CLIENT", "LIST", "TYPE", "pubsub"}); list && (*list)->type == REDIS_REPLY_STRING) {
    auto live = live_nodes_from_client_list(std::string_view((*list)->str, (*list)->len));
    others = live.size() - static_cast<size_t>(std::binary_search(live.begin(), live.end(), options_.node_id));
  }
  const std::string name = std::string(kLeavingConnectionPrefix) + options_.node_id;
  auto named = (*conn)->command({"CLIENT", "SETNAME", name});
  auto subscribed = named ? (*conn)->command({target->cluster ? "SSUBSCRIBE" : "SUBSCRIBE", kLeavingChannel})
                          : Result<store::redis::Reply>(named.error());
  // A refusal (MOVED: the slot moved since the target was read) is an error reply, not an array.
  if (!subscribed || (*subscribed)->type != REDIS_REPLY_ARRAY) {
    spdlog::warn("event=bus_leave_failed node={} error=\"the marker connection was refused\"", options_.node_id);
    return {};
  }
  {
    std::lock_guard lock(leaving_mu_);
    leaving_ = std::move(*conn);
  }
  // Another node will mend the entries of this node's devices (a device that reconnects there
  // overwrites its entry; one that does not is removed node_gone_after after this node's next
  // run makes its roll call, or when this node counts as gone): keeping them spares the users
  // whose devices reconnect elsewhere an `offline` and an `online` (a rolling restart).
  const bool keep = others > 0 && options_.route_devices;
  keep_entries_.store(keep, std::memory_order_relaxed);
  spdlog::info("event=bus_leaving node={} other_nodes={} keeps_entries={}", options_.node_id, others, keep);
  // Without send routing no node forwards here: nothing to serve.
  return others > 0 && options_.route_sends ? 2 * options_.node_check : std::chrono::milliseconds{};
}

bool RedisBus::start(std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  // The subscription is held by loop 0, or by a loop of the bus's own without loops (made
  // before the publisher thread, which tells it where to subscribe).
  boost::asio::io_context* io = nullptr;
  if (loops_) {
    io = &loops_->context(0);
  } else {
    own_io_ = std::make_unique<boost::asio::io_context>(1);
    io = own_io_.get();
    subscriber_thread_ = std::thread([this] {
      set_thread_name("tern-bus-sub");
      auto guard = boost::asio::make_work_guard(*own_io_);
      own_io_->run();
    });
  }
  subscriber_ = std::make_shared<LoopSubscriber>(*this, *io);
  publisher_thread_ = std::thread([this] {
    set_thread_name("tern-bus-pub");
    publisher();
  });
  counter_thread_ = std::thread([this] {
    set_thread_name("tern-bus-count");
    counter();
  });
  std::unique_lock lock(mu_);
  // The publisher thread reads where the channels live first (after Redis's clock, which
  // sets this run's start); the subscriber uses it.
  const bool located = subscribed_cv_.wait_until(
      lock, until, [&] { return target_generation_.load(std::memory_order_acquire) > 0; });
  subscriber_->start();
  if (!located) return false;
  // With loops, the subscription is made once they run (await_subscribed()).
  if (loops_) return true;
  return subscribed_cv_.wait_until(lock, until, [&] { return subscribed_; });
}

bool RedisBus::await_subscribed(std::chrono::milliseconds deadline) {
  std::unique_lock lock(mu_);
  return subscribed_cv_.wait_for(lock, deadline, [&] { return subscribed_; });
}

void RedisBus::on_subscribed(bool again) {
  // Events published while this node was not subscribed are lost: what they would have
  // invalidated is dropped now (messages themselves are healed by replay).
  if (again && resync_sink_) resync_sink_();
  // The same for the device routes: every node's set is asked for again (a roll call, with
  // this node's own set after it).
  routes_.reset();
  subscribed_now_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard lock(mu_);
    subscribed_ = true;
    owe_roll_call_ = options_.route_devices;
    // Away from the bus long enough, this node counted as gone for the others, which removed
    // its devices' registry entries: they are written back (unless the device moved). On the
    // counter thread, queued under mu_ (which a detach takes before it queues its own op), so
    // a detach of one of them is counted after its write-back.
    if (again) {
      CountOp back{'r', {}, 0, nullptr, {}, {}};
      for (const auto& [key, here] : attached_)
        if (!here.moved) back.devices.push_back(DeviceRef{key.first, key.second});
      std::lock_guard counts(counts_mu_);
      if (!back.devices.empty()) counts_.push_back(std::move(back));
    }
  }
  counts_cv_.notify_one();
  subscribed_cv_.notify_all();
  cv_.notify_one();
}

std::string RedisBus::connection_name() const { return std::string(kNodeConnectionPrefix) + options_.node_id; }

std::array<std::string, 3> RedisBus::subscription_channels() const {
  return {std::string(kChannel), node_channel(options_.node_id), std::string(kPresenceChannel)};
}

void RedisBus::announce_locked(Target target, const DeviceRef& device, int64_t since_us) {
  if (!options_.route_devices) return;
  // In the publisher thread's queue, under the lock that changed attached_: the other nodes
  // get this node's attaches, detaches and sets in the order attached_ went through them.
  if (queue_.size() >= options_.queue_limit) {
    dropped_metric.inc();
    dropped_ = true;  // the next batch carries a kResync and this node's whole set
    return;
  }
  auto n = std::make_shared<Notification>();
  n->seq = static_cast<Seq>(since_us);
  queue_.push_back(Event{target, device, std::move(n)});
}

void RedisBus::attached_here(const DeviceRef& device, const Endpoint* endpoint) {
  // Microseconds: a device that reconnects at once still gets a later start than before.
  const int64_t since_us = clock_us();
  {
    std::lock_guard lock(mu_);
    attached_[{device.user, device.device}] = Here{endpoint, since_us, false, {}};
    announce_locked(Target::kAttached, device, since_us);
  }
  cv_.notify_one();
}

bool RedisBus::attached_elsewhere(const std::string& node, const DeviceRef& device, int64_t since_us) {
  const Endpoint* older = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = attached_.find({device.user, device.device});
    if (it == attached_.end()) return false;
    if (it->second.moved) return true;
    // 0: a node that does not send its connections' start; ties go to the greater node name.
    if (since_us <= 0 || it->second.since_us > since_us ||
        (it->second.since_us == since_us && options_.node_id > node))
      return true;
    it->second.moved = true;
    it->second.moved_to = node;
    older = it->second.endpoint;
  }
  moved_metric.inc();
  local_.replace(device, older);
  return true;
}

bool RedisBus::held_here(const DeviceRef& device) {
  std::lock_guard lock(mu_);
  auto it = attached_.find({device.user, device.device});
  return it != attached_.end() && !it->second.moved;
}

char RedisBus::detach_here(const DeviceRef& device, const Endpoint* endpoint, size_t& local, std::string& moved_to) {
  local = local_.detach(device, endpoint);
  // Only the device's current endpoint removes it (a replaced one's detach comes later).
  bool moved = false;
  {
    std::lock_guard lock(mu_);
    auto it = attached_.find({device.user, device.device});
    if (it == attached_.end() || it->second.endpoint != endpoint) return '=';
    moved = it->second.moved;
    moved_to = std::move(it->second.moved_to);
    attached_.erase(it);
    // Leaving with its entries kept: the others' routes keep the device here too, so that the
    // node that mends this node's entries (new_run, gone) finds it.
    if (!keep_entries_.load(std::memory_order_relaxed)) announce_locked(Target::kDetached, device);
  }
  cv_.notify_one();
  if (keep_entries_.load(std::memory_order_relaxed)) return '=';
  return moved ? '>' : '-';
}

bool RedisBus::publish(const DeviceRef& device, const std::shared_ptr<const Notification>& n) {
  bool here, changed = false;
  {
    std::lock_guard lock(mu_);
    // A connection that moved to another node gets nothing more: the device's events follow
    // the newer connection (the routes below know it: its kAttached moved this one).
    auto it = attached_.find({device.user, device.device});
    here = it != attached_.end() && !it->second.moved;
    if (n->system && n->kind == Notification::Kind::kMessage &&
        (last_changed_.first != n->conversation_id || last_changed_.second != n->seq)) {
      last_changed_ = {n->conversation_id, n->seq};
      changed = true;
    }
  }
  if (changed) enqueue(Event{Target::kChanged, DeviceRef{}, n});
  if (here) return local_.publish(device, n);
  // On the channel of each live node that holds it; nowhere when no node does; to every node
  // when this node cannot tell (it may have attached somewhere a moment ago: device_routes.h).
  thread_local std::vector<std::string> nodes;
  nodes.clear();
  if (options_.route_devices) {
    auto where = routes_.find(device, nodes);
    if (where == DeviceRoutes::Where::kNowhere)
      where = options_.drop_nowhere ? drop_if_nowhere(device, nodes) : DeviceRoutes::Where::kUnknown;
    if (where == DeviceRoutes::Where::kNowhere) {
      nowhere_metric.inc();
      nowhere_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (where == DeviceRoutes::Where::kNodes) {
      for (std::string& node : nodes) enqueue(Event{Target::kRouted, device, n, std::move(node)});
      routed_metric.inc();
      routed_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  broadcast_metric.inc();
  broadcast_.fetch_add(1, std::memory_order_relaxed);
  enqueue(Event{Target::kDevice, device, n});
  return false;
}

DeviceRoutes::Where RedisBus::drop_if_nowhere(const DeviceRef& device, std::vector<std::string>& nodes) {
  std::lock_guard lock(drops_mu_);
  nodes.clear();
  const auto where = routes_.find(device, nodes);
  if (where != DeviceRoutes::Where::kNowhere) return where;
  if (!routes_.may_drop()) return DeviceRoutes::Where::kUnknown;
  dropped_devices_.note(device, clock_us());
  return where;
}

void RedisBus::note_routes_complete() { complete_metric.set(options_.drop_nowhere && routes_.may_drop() ? 1 : 0); }

bool RedisBus::dropped_since(const DeviceRef& device, int64_t from_us) {
  std::lock_guard lock(drops_mu_);
  return dropped_devices_.since(device, from_us);
}

void RedisBus::disconnect(const DeviceRef& device) {
  local_.disconnect(device);
  enqueue(Event{Target::kDisconnect, device, std::make_shared<const Notification>()});
}

void RedisBus::publish_user(const std::string& user, const std::shared_ptr<const Notification>& n) {
  local_.publish_user(user, n);
  // Typing and presence are lossy: a complete view that knows no other node with one of the
  // user's devices sends nothing (a device attached elsewhere a moment ago may miss it).
  thread_local std::vector<std::string> nodes;
  nodes.clear();
  switch (options_.route_devices ? routes_.find_user(user, nodes) : DeviceRoutes::Where::kUnknown) {
    case DeviceRoutes::Where::kNodes:
      for (std::string& node : nodes) enqueue(Event{Target::kUser, DeviceRef{user, 0}, n, std::move(node)});
      break;
    case DeviceRoutes::Where::kNowhere: break;
    case DeviceRoutes::Where::kUnknown: enqueue(Event{Target::kUser, DeviceRef{user, 0}, n}); break;
  }
}

void RedisBus::publish_conversation(const std::shared_ptr<const Notification>& n) {
  enqueue(Event{Target::kConversation, DeviceRef{}, n});
}

void RedisBus::announce_created(const std::string& conversation_id) {
  auto n = std::make_shared<Notification>();
  n->kind = Notification::Kind::kMessage;
  n->system = true;  // what deliver() hands to the change sink
  n->conversation_id = conversation_id;
  enqueue(Event{Target::kChanged, DeviceRef{}, std::move(n)});
}

void RedisBus::announce_user_changed(const std::string& user) {
  enqueue(Event{Target::kDevices, DeviceRef{user, 0}, std::make_shared<const Notification>()});
}

void RedisBus::announce_keys_changed(const DeviceRef& device) {
  enqueue(Event{Target::kDevices, device, std::make_shared<const Notification>()});
}

void RedisBus::set_user_changed_sink(UserChangedSink sink) { user_changed_sink_ = std::move(sink); }

void RedisBus::publish_presence(const std::string& user, const std::shared_ptr<const Notification>& n) {
  enqueue(Event{Target::kPresence, DeviceRef{user, 0}, n});
}

void RedisBus::set_presence_sink(PresenceSink sink) { presence_sink_ = std::move(sink); }

void RedisBus::set_presence_change_sink(PresenceChangeSink sink) {
  presence_change_sink_ = std::move(sink);
}

void RedisBus::set_resync_sink(std::function<void()> sink) { resync_sink_ = std::move(sink); }

void RedisBus::set_head_sink(HeadSink sink) { head_sink_ = std::move(sink); }

void RedisBus::set_change_sink(std::function<void(const std::string& conversation_id)> sink) {
  change_sink_ = std::move(sink);
}

void RedisBus::set_conversation_sink(std::function<void(std::shared_ptr<const Notification>)> sink) {
  sink_ = std::move(sink);
}

store::redis::RedisClusterOptions RedisBus::cluster_options(std::chrono::milliseconds command_timeout) const {
  store::redis::RedisClusterOptions o;
  o.seeds = options_.seeds.empty() ? std::vector<store::redis::RedisAddress>{options_.address} : options_.seeds;
  o.credentials = options_.credentials;
  o.command_timeout = command_timeout;
  return o;
}

void RedisBus::set_loops(Loops& loops) {
  loops_ = &loops;
  publishers_.clear();
  for (size_t i = 0; i < loops.size(); ++i)
    publishers_.push_back(std::make_shared<LoopPublisher>(*this, loops.context(i)));
}

bool RedisBus::enqueue(Event e) {
  if (loops_) {
    const size_t i = loops_->here();
    if (i != Loops::kNone) {
      if (stopped_.load(std::memory_order_relaxed)) return false;
      return publishers_[i]->enqueue(std::move(e));
    }
  }
  return enqueue_thread(std::move(e));
}

void RedisBus::count_published(size_t events, bool by_loop) {
  published_metric.inc(events);
  (by_loop ? published_by_loops_ : published_by_thread_).fetch_add(events, std::memory_order_relaxed);
}

void RedisBus::count_dropped(size_t events) {
  dropped_metric.inc(events);
  dropped_by_loops_.fetch_add(events, std::memory_order_relaxed);
}

std::optional<RedisBus::ChannelTarget> RedisBus::channel_target() const {
  std::lock_guard lock(target_mu_);
  return target_;
}

void RedisBus::note_channel_target(const RedisCluster& conn) {
  auto address = store::redis::parse_redis_url(conn.owner(key_slot(kChannel)));
  if (!address) return;  // no node serves the slot now: keep the last
  std::lock_guard lock(target_mu_);
  if (target_ && target_->address.host == address->host && target_->address.port == address->port &&
      target_->cluster == conn.is_cluster())
    return;
  const uint64_t generation = target_ ? target_->generation + 1 : 1;
  target_ = ChannelTarget{*address, conn.is_cluster(), generation};
  target_generation_.store(generation, std::memory_order_release);
  if (generation > 1 && subscriber_) subscriber_->retarget();  // the subscription follows
  std::lock_guard wake(mu_);  // start() waits for the first target under mu_
  subscribed_cv_.notify_all();
}

void RedisBus::want_refresh() {
  refresh_wanted_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard lock(mu_);  // so that the publisher thread cannot miss the wake-up
  }
  cv_.notify_one();
}

bool RedisBus::enqueue_thread(Event e) {
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= options_.queue_limit) {
      dropped_metric.inc();
      dropped_ = true;
      return false;
    }
    queue_.push_back(std::move(e));
  }
  cv_.notify_one();
  return true;
}

std::string RedisBus::route(const std::string& conversation_id) {
  return options_.route_sends ? ring_.owner(conversation_id) : std::string();
}

void RedisBus::set_request_sink(std::function<void(std::string payload, Respond respond)> sink) {
  request_sink_ = std::move(sink);
}

void RedisBus::request(const std::string& node, std::string payload, Reply reply) {
  const uint64_t id = requests_.add(node, std::chrono::steady_clock::now() + options_.request_timeout, std::move(reply));
  auto n = std::make_shared<Notification>();
  n->seq = id;
  n->frame = std::make_shared<const std::string>(std::move(payload));
  if (!enqueue(Event{Target::kRequest, DeviceRef{node, 0}, std::move(n)}))
    complete(id, make_error(ErrorCode::kUnavailable, "the cross-node queue is full; retry"));
}

void RedisBus::respond_to(const std::string& node, uint64_t id, std::string response) {
  auto n = std::make_shared<Notification>();
  n->seq = id;
  n->frame = std::make_shared<const std::string>(std::move(response));
  enqueue(Event{Target::kReply, DeviceRef{node, 0}, std::move(n)});  // dropped: the asker times out
}

std::vector<RedisBus::Batch> RedisBus::batches(const std::deque<Event>& events, bool resync, const std::string& node) {
  std::vector<Batch> out;
  size_t run_start = 0;  // the first batch of the current run of node channels
  bool in_node_run = false;
  auto batch_for = [&](std::string channel) -> Batch& {
    if (channel != kChannel) {
      if (!in_node_run) run_start = out.size();
      in_node_run = true;
      for (size_t i = run_start; i < out.size(); ++i)
        if (out[i].channel == channel) return out[i];
    } else {
      in_node_run = false;
      if (!out.empty() && out.back().channel == kChannel) return out.back();
    }
    out.push_back(Batch{std::move(channel), {}, 0, {}, {}});
    put_str(out.back().payload, node);
    return out.back();
  };
  if (resync) encode(batch_for(kChannel).payload, Event{Target::kResync, DeviceRef{}, std::make_shared<const Notification>()});
  for (const Event& e : events) {
    Batch& b = batch_for(channel_of(e));
    encode(b.payload, e);
    ++b.events;
    if (e.target == Target::kRequest) b.requests.push_back(e.n->seq);
    if (e.target == Target::kRouted || (e.target == Target::kUser && !e.to.empty())) b.unheard.push_back(e);
  }
  return out;
}

RedisBus::Event RedisBus::as_broadcast(Event e) {
  if (e.target == Target::kRouted) e.target = Target::kDevice;
  e.to.clear();
  return e;
}

std::string RedisBus::channel_of(const Event& e) {
  if (for_one_node(e)) return node_channel(e.device.user);
  if (e.target == Target::kPresence) return kPresenceChannel;
  return e.to.empty() ? std::string(kChannel) : node_channel(e.to);
}

void RedisBus::fail_requests(const std::deque<Event>& events) {
  for (const Event& e : events)
    if (e.target == Target::kRequest)
      complete(e.n->seq, make_error(ErrorCode::kUnavailable, "redis: the request to another node was not published"));
}

void RedisBus::complete(uint64_t id, Result<std::string> answer) {
  auto r = requests_.take(id);
  if (!r) return;  // answered already (a late reply after the timeout)
  if (!answer) requests_failed_metric.inc();
  else ring_.answered(r->node);  // it is not hung: a later timeout is suspected from scratch
  r->reply(std::move(answer));
}

std::chrono::steady_clock::time_point RedisBus::expire_requests(std::chrono::steady_clock::time_point later) {
  for (auto& [id, node] : requests_.past(std::chrono::steady_clock::now(), later)) {
    // Not answered in time: that node may be dead; route around it for a while.
    ring_.suspect(node);
    spdlog::warn("event=bus_request_timeout node={} to={}", options_.node_id, node);
    complete(id, make_error(ErrorCode::kUnavailable, "the node that sequences this conversation did not answer; retry"));
  }
  return later;
}

void RedisBus::publisher() {
  std::unique_ptr<RedisCluster> conn;
  std::chrono::steady_clock::time_point retry_after{};
  store::redis::ReconnectBackoff backoff(std::chrono::milliseconds(200), std::chrono::milliseconds(2000));
  const auto refresh_every = options_.registry_ttl / 3;
  auto next_refresh = std::chrono::steady_clock::now() + refresh_every;
  const auto beat_every = options_.node_check;
  auto next_beat = std::chrono::steady_clock::now();  // at once: the ring is empty until then
  std::deque<Event> events;
  std::deque<std::pair<bool, DeviceRef>> reg;
  std::vector<std::pair<std::string, uint32_t>> refresh;
  // Events of this node were dropped (not published, or refused by a full queue): the next
  // batch that reaches Redis tells the other nodes first (Target::kResync).
  bool owe_resync = false;
  auto last_roll_call = std::chrono::steady_clock::time_point{};
  bool clock_measured = false;  // the first connection measured the clock (or tried)
  auto next_clock = std::chrono::steady_clock::time_point::max();
  for (;;) {
    bool rolled = false;
    const auto wake = expire_requests(std::min(next_refresh, next_beat));
    {
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, wake, [&] {
        return stopping_ || !queue_.empty() || !registry_ops_.empty() || owe_roll_call_ || owe_node_set_ ||
               refresh_wanted_.load(std::memory_order_relaxed);
      });
      if (stopping_) return;
      events.swap(queue_);
      reg.swap(registry_ops_);
      owe_resync = owe_resync || dropped_;
      dropped_ = false;
      // Device routes: a roll call, then this node's whole set (attached_ now, after every
      // attach and detach queued before it), also after dropped events.
      if (owe_roll_call_) {
        auto n = std::make_shared<Notification>();
        n->seq = static_cast<Seq>(run_start_expiry_ms_.load(std::memory_order_relaxed));
        events.push_back(Event{Target::kRollCall, DeviceRef{}, std::move(n)});
        owe_roll_call_ = false;
        rolled = true;
        last_roll_call = std::chrono::steady_clock::now();
      }
      // Leaving with its entries kept, this node sends no set: one without the devices it
      // closed would drop them from the others' routes (leave()).
      if (keep_entries_.load(std::memory_order_relaxed)) owe_node_set_ = false;
      else if (options_.route_devices && (rolled || owe_node_set_ || owe_resync)) {
        std::vector<DeviceRef> here;
        here.reserve(attached_.size());
        for (const auto& [d, h] : attached_)
          if (!h.moved) here.push_back(DeviceRef{d.first, d.second});
        auto n = std::make_shared<Notification>();
        // Its run's start (as its roll calls), which says kSetKnowsMissed too: the receivers
        // compare with >=, older ones as well.
        n->seq = std::max<Seq>(kSetKnowsMissed + 1, static_cast<Seq>(run_start_expiry_ms_.load(std::memory_order_relaxed)));
        n->frame = std::make_shared<const std::string>(DeviceRoutes::encode_set(here));
        events.push_back(Event{Target::kNodeSet, DeviceRef{}, std::move(n)});
        owe_node_set_ = false;
      }
      refresh.clear();
      if (std::chrono::steady_clock::now() >= next_refresh) {
        for (const auto& [d, h] : attached_)
          if (!h.moved) refresh.push_back(d);
        next_refresh = std::chrono::steady_clock::now() + refresh_every;
      }
    }
    if (!conn && std::chrono::steady_clock::now() >= retry_after) {
      auto c = RedisCluster::open(cluster_options(options_.command_timeout));
      if (c) {
        conn = std::move(c).value();
        backoff.reset();
        // The clock first: this run's start is set from it before start() learns the target
        // (the subscription, and so the first roll call, comes after).
        if (!clock_measured) {
          clock_measured = true;
          if (measure_clock(*conn)) {
            // Lowered only, if an entry was written before (an attach before start(), tests): no
            // entry of this run may expire before its start.
            int64_t start = clock_ms() + options_.registry_ttl.count();
            if (entry_written_.load(std::memory_order_relaxed))
              start = std::min(start, run_start_expiry_ms_.load(std::memory_order_relaxed));
            run_start_expiry_ms_.store(start, std::memory_order_relaxed);
            next_clock = std::chrono::steady_clock::now() + kClockEvery;
          } else {
            next_clock = {};  // again at the next liveness check
          }
        }
        note_channel_target(*conn);
      } else {
        retry_after = std::chrono::steady_clock::now() + backoff.next();
      }
    }
    if (!conn) {
      dropped_metric.inc(events.size());
      if (!events.empty()) owe_resync = true;  // the next batch carries the set again
      fail_requests(events);
      events.clear();
      reg.clear();
      if (rolled) roll_call_later();
      continue;
    }
    if (refresh_wanted_.exchange(false, std::memory_order_relaxed)) {
      if (auto r = conn->refresh(); !r) spdlog::warn("event=bus_topology_refresh_failed node={}", options_.node_id);
      note_channel_target(*conn);
    }
    if (std::chrono::steady_clock::now() >= next_beat) {
      // On a Cluster the topology is read again first: a failover moves the channels' slot
      // without a redirect for this thread to see (the loops publish, and CLIENT LIST has no key).
      if (conn->is_cluster()) (void)conn->refresh();
      heartbeat(*conn);
      if (std::chrono::steady_clock::now() >= next_clock && measure_clock(*conn))
        next_clock = std::chrono::steady_clock::now() + kClockEvery;
      note_channel_target(*conn);
      next_beat = std::chrono::steady_clock::now() + beat_every;
      // A live node whose set has not come (it started after the roll call, or the answer
      // was lost): ask again, at most every kRollCallEvery.
      if (options_.route_devices && std::chrono::steady_clock::now() - last_roll_call >= kRollCallEvery &&
          !routes_.waiting_for().empty()) {
        std::lock_guard lock(mu_);
        if (subscribed_) owe_roll_call_ = true;  // the next turn sends it
      }
    }
    // The batches (batches(): kChannel's for every node, a node's own for requests to it and
    // replies to it, in queue order), plus the registry writes; one round trip. On a cluster,
    // the publishes go to the channels' shard (one slot) and each registry write to its key's
    // slot: one pipeline per slot, all nodes written before any reply is read.
    std::deque<std::string> owned;  // stable addresses for the argv views
    std::map<uint16_t, std::vector<std::vector<std::string_view>>> by_slot;
    const bool resync = owe_resync;
    std::vector<Batch> published;
    if (!events.empty() || resync) {
      const char* publish = conn->is_cluster() ? "SPUBLISH" : "PUBLISH";
      published = batches(events, resync, options_.node_id);
      for (Batch& b : published) {
        owned.push_back(std::move(b.channel));
        const std::string_view ch = owned.back();
        owned.push_back(std::move(b.payload));
        by_slot[key_slot(kChannel)].push_back({publish, ch, owned.back()});
      }
    }
    registry_writes(reg, refresh, owned, by_slot);
    if (by_slot.empty()) continue;
    std::vector<store::redis::SlotCommands> batches;
    for (auto& [slot, cmds] : by_slot) batches.push_back({slot, std::move(cmds)});
    auto r = conn->run_many(batches);
    if (!r) {
      dropped_metric.inc(events.size());
      if (!events.empty()) owe_resync = true;
      fail_requests(events);
      if (rolled) roll_call_later();
    } else {
      count_published(events.size() - static_cast<size_t>(
                                           std::count_if(events.begin(), events.end(), route_announcement)),
                      false);
      if (resync) owe_resync = false;
      // The publishes come first in their slot's pipeline: a node channel nobody heard.
      const uint16_t channel_slot = key_slot(kChannel);
      for (size_t i = 0; i < batches.size() && !published.empty(); ++i) {
        if (batches[i].slot != channel_slot) continue;
        for (size_t j = 0; j < published.size() && j < (*r)[i].size(); ++j) {
          const redisReply* reply = (*r)[i][j].get();
          if (reply->type != REDIS_REPLY_INTEGER || reply->integer != 0) continue;
          for (Event& e : published[j].unheard) enqueue_thread(as_broadcast(std::move(e)));
        }
      }
    }
    events.clear();
    reg.clear();
  }
}

void RedisBus::roll_call_later() {
  std::lock_guard lock(mu_);
  owe_roll_call_ = true;
}

void RedisBus::deliver(std::string_view payload) {
  Reader r{payload};
  const std::string from = r.str();
  if (!r.ok || from == options_.node_id) return;  // our own batch
  std::vector<Event> events;
  if (!decode(r.in, events)) {
    spdlog::warn("event=bus_bad_batch from={}", from);
    return;
  }
  received_metric.inc(events.size());
  bool routes_changed = false;
  for (Event& e : events) {
    routes_changed = routes_changed || route_announcement(e);
    // The head first: a local device that receives the message and answers at once finds
    // its node's sequencer already past it.
    if (head_sink_ && e.n->seq > 0 &&
        (e.n->kind == Notification::Kind::kMessage || e.n->kind == Notification::Kind::kOwnSent) &&
        !(hinted_seq_ == e.n->seq && hinted_conversation_ == e.n->conversation_id)) {
      hinted_conversation_ = e.n->conversation_id;
      hinted_seq_ = e.n->seq;
      head_sink_(e.n->conversation_id, e.n->seq, e.n->frame);
    }
    // Membership first: a local session told of the system message below re-reads it fresh.
    if (e.n->system && e.n->kind == Notification::Kind::kMessage && change_sink_) change_sink_(e.n->conversation_id);
    switch (e.target) {
      case Target::kChanged: break;
      case Target::kResync:
        if (resync_sink_) resync_sink_();
        break;
      case Target::kDisconnect: local_.disconnect(e.device); break;
      case Target::kDevices:
        if (user_changed_sink_) user_changed_sink_(e.device.user, e.device.device);
        break;
      case Target::kDevice:
        received_.fetch_add(1, std::memory_order_relaxed);
        local_.publish(e.device, e.n);
        break;
      case Target::kRouted:
        received_.fetch_add(1, std::memory_order_relaxed);
        // Sent here because this node held the device; it has moved (or left) since: on to
        // every node, once (as kDevice, which is never sent on).
        if (!held_here(e.device) || !local_.publish(e.device, e.n))
          enqueue(Event{Target::kDevice, e.device, std::move(e.n)});
        break;
      case Target::kAttached: {
        // Until now this node sent the device's events here (an older connection) or to the
        // nodes its routes named; `from`'s connection may have read its inbox before one of
        // them was committed: once the view below includes `from`, it is told to read again.
        // Only a node whose announcements carry a start knows kMissed (an older version would
        // refuse the whole batch).
        thread_local std::vector<std::string> nodes;
        nodes.clear();
        bool elsewhere = routes_.find(e.device, nodes) == DeviceRoutes::Where::kNodes &&
                         std::any_of(nodes.begin(), nodes.end(), [&](const std::string& n) { return n != from; });
        routes_.add(from, e.device);
        const auto since_us = static_cast<int64_t>(e.n->seq);
        elsewhere = attached_elsewhere(from, e.device, since_us) || elsewhere;
        // Or it sent them nowhere since the connection started (by the clocks, give or take
        // their skew): drop_if_nowhere() could not yet see the route added above.
        elsewhere = elsewhere || (since_us > 0 && dropped_since(e.device, since_us - kClockSkewUs));
        if (elsewhere && e.n->seq > 0)
          enqueue(Event{Target::kMissed, e.device, std::make_shared<const Notification>(), from});
        break;
      }
      case Target::kMissed:
        if (held_here(e.device)) local_.missed(e.device);
        break;
      case Target::kPresence:
        if (presence_sink_) presence_sink_(e.device.user, std::move(e.n));
        break;
      case Target::kDetached: routes_.remove(from, e.device); break;
      case Target::kNodeSet: {
        std::vector<DeviceRef> set;
        if (!e.n->frame || !DeviceRoutes::decode_set(*e.n->frame, set)) {
          spdlog::warn("event=bus_bad_node_set from={}", from);
          break;
        }
        const bool knows_missed = e.n->seq >= kSetKnowsMissed;
        // The run of a node whose roll call came before this node listened (it started
        // later): its next roll call with another value is then a new run for certain
        // (new_run). A value known already stays: only a roll call tells of a change.
        if (e.n->seq > kSetKnowsMissed) routes_.run_in_set(from, static_cast<int64_t>(e.n->seq));
        // A device of the set that this view did not hold there: its kAttached never arrived
        // (this node's subscription was lost, or `from` dropped events). It has no start to
        // compare with, so any drop this node remembers for it (or forgot: the horizon) is owed.
        for (DeviceRef& d : routes_.replace(from, set, DeviceRoutes::Clock::now(), knows_missed))
          if (knows_missed && dropped_since(d, 0))
            enqueue(Event{Target::kMissed, std::move(d), std::make_shared<const Notification>(), from});
        break;
      }
      case Target::kRollCall:
        if (e.n->seq > 0) new_run(from, static_cast<int64_t>(e.n->seq));
        // Its set follows in the same batch; this node answers with its own.
        routes_.forget(from);
        {
          std::lock_guard lock(mu_);
          owe_node_set_ = true;
        }
        cv_.notify_one();
        break;
      case Target::kUser:
        received_.fetch_add(1, std::memory_order_relaxed);
        local_.publish_user(e.device.user, e.n);
        break;
      case Target::kConversation:
        if (sink_) sink_(std::move(e.n));
        break;
      case Target::kRequest:
        if (e.device.user != options_.node_id) break;
        if (!request_sink_) {
          respond_to(from, e.n->seq, std::string());  // not serving: an empty answer is an error there
          break;
        }
        request_sink_(e.n->frame ? *e.n->frame : std::string(),
                      [this, from, id = e.n->seq](std::string response) { respond_to(from, id, std::move(response)); });
        break;
      case Target::kReply:
        if (e.device.user == options_.node_id) complete(e.n->seq, e.n->frame ? *e.n->frame : std::string());
        break;
    }
  }
  if (routes_changed) {
    routes_metric.set(static_cast<int64_t>(routes_.devices()));
    note_routes_complete();
  }
}

}  // namespace tern::bus
