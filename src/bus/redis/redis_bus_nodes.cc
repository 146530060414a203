// RedisBus's view of the nodes on the bus: the liveness list read every node_check
// (heartbeat), the admin API's view of it (nodes), and this node's offset to Redis's clock
// (measure_clock, clock_us: docs/scaling.md "One clock for the bus"). The rest of the bus is
// in redis_bus.cc and redis_bus_registry.cc.
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "base/clock.h"
#include "base/metrics.h"
#include "bus/redis/redis_bus.h"

namespace tern::bus {

namespace {

using store::redis::RedisCluster;
using store::redis::key_slot;

Gauge& clock_offset_metric = MetricsRegistry::global().gauge(
    "tern_bus_clock_offset_ms", "Redis's clock minus this node's, as last measured (the bus corrects its times by it)");
Gauge& live_nodes_metric = MetricsRegistry::global().gauge(
    "tern_bus_live_nodes", "ternd nodes this node saw connected to the bus at its last look (send routing)");

}  // namespace

int64_t RedisBus::local_wall_us() const { return options_.local_wall_us ? options_.local_wall_us() : tern::wall_us(); }

int64_t RedisBus::clock_us() const { return local_wall_us() + clock_offset_us_.load(std::memory_order_relaxed); }

bool RedisBus::measure_clock(RedisCluster& conn) {
  const int64_t before = local_wall_us();
  auto r = conn.run1(key_slot(kChannel), {"TIME"});
  const int64_t after = local_wall_us();
  if (!r || (*r)->type != REDIS_REPLY_ARRAY || (*r)->elements != 2) return false;
  const redisReply* sec = (*r)->element[0];
  const redisReply* usec = (*r)->element[1];
  if (sec->type != REDIS_REPLY_STRING || usec->type != REDIS_REPLY_STRING) return false;
  // Its error is at most half the round trip: a slow answer says little, keep the last.
  if (after - before > std::chrono::duration_cast<std::chrono::microseconds>(kClockMaxRoundTrip).count()) return false;
  const int64_t redis_us = std::atoll(std::string(sec->str, sec->len).c_str()) * 1'000'000 +
                           std::atoll(std::string(usec->str, usec->len).c_str());
  const int64_t offset = redis_us - (before + (after - before) / 2);
  clock_offset_us_.store(offset, std::memory_order_relaxed);
  clock_offset_metric.set(offset / 1000);
  const bool large = offset > kClockWarnUs || offset < -kClockWarnUs;
  if (large != clock_warned_) {
    if (large)
      spdlog::warn("event=clock_offset node={} offset_ms={} hint=\"this node's clock is off Redis's: the bus corrects "
                   "its times and messages' timestamps and expiries by it; uploads' idle times use this clock; "
                   "run NTP\"",
                   options_.node_id, offset / 1000);
    else spdlog::info("event=clock_offset node={} offset_ms={} action=back_within_bound", options_.node_id, offset / 1000);
    clock_warned_ = large;
  }
  return true;
}

void RedisBus::heartbeat(RedisCluster& conn) {
  auto r = conn.run1(key_slot(kChannel), {"CLIENT", "LIST", "TYPE", "pubsub"});
  if (!r || (*r)->type != REDIS_REPLY_STRING) return;  // keep the last list
  // A node is live while its subscriber connection is open (node_ring.h): a SIGKILLed node's
  // connection closes at once, so the others stop routing to it at their next look.
  const std::string_view list((*r)->str, (*r)->len);
  std::vector<std::string> live = live_nodes_from_client_list(list);
  live_nodes_metric.set(static_cast<int64_t>(live.size()));
  auto gone_nodes = routes_.set_live(live);
  std::vector<std::string> leaving = leaving_nodes_from_client_list(list);
  {
    std::lock_guard lock(listed_mu_);
    listed_live_ = live;
    listed_leaving_ = leaving;
    listed_at_ = std::chrono::steady_clock::now();
  }
  // A stopping node (leave()) still holds its devices until they reconnect elsewhere, so the
  // routes keep it; it only owns no conversation any more, and mends no other node's entries
  // (it may exit before a mend is done).
  routes_.set_leaving(leaving);
  std::erase_if(live, [&](const std::string& n) { return std::binary_search(leaving.begin(), leaving.end(), n); });
  gone(std::move(gone_nodes), live);
  note_routes_complete();
  ring_.set_live(std::move(live));
}

NodesView RedisBus::nodes() const {
  NodesView v;
  v.shared = true;
  v.self = options_.node_id;
  v.subscribed = subscribed_now_.load(std::memory_order_relaxed);
  v.clock_offset_ms = clock_offset_us() / 1000;
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(listed_mu_);
    if (listed_at_ != std::chrono::steady_clock::time_point{}) {
      v.listed_ms_ago = std::chrono::duration_cast<std::chrono::milliseconds>(now - listed_at_).count();
      v.live = listed_live_;
      v.leaving = listed_leaving_;
    }
  }
  for (auto& [node, left] : ring_.suspected(now))
    v.suspected.emplace_back(std::move(node), std::chrono::ceil<std::chrono::milliseconds>(left).count());
  return v;
}

}  // namespace tern::bus
