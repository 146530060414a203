// RedisBus's connection registry and presence counts (redis_bus.h "Registry", "Presence
// counts"): the registry's scripts, attach and detach with their counts on the counter thread,
// the registry writes of the publisher thread, the entries of a node that left the bus and of
// this node back on it. The rest of the bus is in redis_bus.cc and redis_bus_nodes.cc.
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <map>

#include "base/clock.h"
#include "base/metrics.h"
#include "bus/redis/redis_bus.h"

namespace tern::bus {

namespace {

using store::redis::RedisCluster;
using store::redis::key_slot;

std::string registry_key(const std::string& user) { return "{r:" + user + "}"; }

// The count of a user's registry entries whose expiry ("<node> <ms>") is after `now` (ms), a
// Lua function the scripts below share.
constexpr const char* kCountEntries = R"lua(
local function count(now)
  local n = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    local exp = tonumber(string.match(v, ' (%d+)$'))
    if exp and exp > now then n = n + 1 end
  end
  return n
end
-- The order of this op among the user's presence changes (bus.h Counted): Redis's clock in
-- microseconds, past the last one kept in field 'v' (a value without a space: count() and
-- online() skip it), so strictly increasing per user as long as the field lives. The field
-- goes with the last entry, so an empty hash is deleted; the next op's clock is later.
local function next_order()
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
  if us <= last then us = last + 1 end
  return us
end
local function keep_order(v, n)
  if n > 0 then redis.call('HSET', KEYS[1], 'v', string.format('%.0f', v)) else redis.call('HDEL', KEYS[1], 'v') end
end
)lua";

// KEYS[1]: a user's registry hash. ARGV: '+' (write ARGV[2] → ARGV[3]), '-' (remove ARGV[2]
// if this node, ARGV[3]'s, wrote it: a device that moved to another node keeps that node's
// entry), '>' (the device moved to node ARGV[5]: if this node wrote ARGV[2], it becomes
// ARGV[5]'s, with the same expiry) or '=' (neither), then now (ms). Returns {the entries whose expiry ("<node> <ms>")
// is later, the op's order, 1 unless a '+' found the device's entry unexpired (it counted
// already: it moved here, or reconnected before its old connection closed)}, and after a
// '-' that left some, each of them as device, value (RedisBus::check_left).
const std::string kRegistryCount = std::string(kCountEntries) + R"lua(
local order = next_order()
local added = 1
if ARGV[1] == '+' then
  local old = redis.call('HGET', KEYS[1], ARGV[2])
  local exp = old and tonumber(string.match(old, ' (%d+)$'))
  if exp and exp > tonumber(ARGV[4]) then added = 0 end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
elseif ARGV[1] == '-' then
  local v = redis.call('HGET', KEYS[1], ARGV[2])
  if v and string.match(v, '^(%S+) ') == string.match(ARGV[3], '^(%S+) ') then redis.call('HDEL', KEYS[1], ARGV[2]) end
elseif ARGV[1] == '>' then
  local v = redis.call('HGET', KEYS[1], ARGV[2])
  if v and string.match(v, '^(%S+) ') == string.match(ARGV[3], '^(%S+) ') then
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[5] .. ' ' .. string.match(v, ' (%d+)$'))
  end
end
local now = tonumber(ARGV[4])
local n = count(now)
keep_order(order, n)
local out = {n, order, added}
if ARGV[1] == '-' and n > 0 then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local exp = tonumber(string.match(all[i + 1], ' (%d+)$'))
    if exp and exp > now then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    end
  end
end
return out
)lua";

// KEYS[1]: a registry hash. ARGV: device, value ("<node> <ms>"). The periodic refresh:
// rewrites the entry only while this node's is there (a detach that removed it meanwhile is
// not undone, and another node's entry for a device that moved there is left alone).
constexpr const char* kRegistryRefresh = R"lua(
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.match(v, '^(%S+) ') == string.match(ARGV[2], '^(%S+) ') then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
)lua";
// KEYS[1]: a registry hash. ARGV: device, this node. A detach written later (Redis was away):
// removes the entry only if this node wrote it.
constexpr const char* kRegistryRemove = R"lua(
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.match(v, '^(%S+) ') == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
)lua";

// KEYS[1]: a user's registry hash. ARGV: 'x' (remove ARGV[2]'s entry if node ARGV[3] wrote
// it: that node left the bus, or started a new run; and, when ARGV[5] is not 0, only if the
// entry expires before ARGV[5] ms: written by the last run) or 'r' (write ARGV[3], "<node>
// <ms>", for ARGV[2] unless another node's entry is there: this node is back on the bus), then
// now (ms). Returns {1 if it wrote or removed, the entries unexpired before, after, the op's
// order}.
const std::string kRegistryMend = std::string(kCountEntries) + R"lua(
local now = tonumber(ARGV[4])
local order = next_order()
local before = count(now)
local v = redis.call('HGET', KEYS[1], ARGV[2])
local owner = v and string.match(v, '^(%S+) ')
local changed = 0
if ARGV[1] == 'x' then
  local below = tonumber(ARGV[5]) or 0
  local exp = v and tonumber(string.match(v, ' (%d+)$'))
  if owner == ARGV[3] and (below == 0 or (exp and exp < below)) then
    redis.call('HDEL', KEYS[1], ARGV[2])
    changed = 1
  end
elseif not owner or owner == string.match(ARGV[3], '^(%S+) ') then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  changed = 1
end
local after = count(now)
keep_order(order, after)
return {changed, before, after, order}
)lua";

Counter& gone_metric = MetricsRegistry::global().counter(
    "tern_bus_nodes_gone_total", "nodes that left the bus (absent from its liveness lists for node_gone_after), as seen here");
Counter& stale_mended_metric = MetricsRegistry::global().counter(
    "tern_bus_stale_entries_mended_total",
    "registry entries of a run that is over (a node gone, or started again) found by a read or a detach and removed here");
Counter& gone_mends_metric = MetricsRegistry::global().counter(
    "tern_bus_gone_mends_total", "removals of the registry entries of a node that left the bus made here");
Counter& run_mends_metric = MetricsRegistry::global().counter(
    "tern_bus_run_mends_total", "mends of the registry entries of a node's last run (it started again) made here");
}  // namespace

std::string RedisBus::entry_value() const {
  entry_written_.store(true, std::memory_order_relaxed);
  const int64_t expiry =
      std::max(clock_ms() + options_.registry_ttl.count(), run_start_expiry_ms_.load(std::memory_order_relaxed));
  return options_.node_id + " " + std::to_string(expiry);
}

Result<RedisBus::Count> RedisBus::registry_count(char op, const DeviceRef& device, const std::string& moved_to) {
  const std::string key = registry_key(device.user), dev = std::to_string(device.device);
  const std::string value = entry_value();
  const std::string now = std::to_string(clock_ms());
  const std::string mode(1, op);
  std::lock_guard lock(query_mu_);
  if (!query_) {
    auto c = RedisCluster::open(cluster_options(options_.command_timeout));
    if (!c) return c.error();
    query_ = std::move(c).value();
  }
  auto r = op == '>' ? query_->run1(key_slot(key), {"EVAL", kRegistryCount, "1", key, mode, dev, value, now, moved_to})
                     : query_->run1(key_slot(key), {"EVAL", kRegistryCount, "1", key, mode, dev, value, now});
  if (!r) return r.error();
  const redisReply* a = r->get();
  if (a->type != REDIS_REPLY_ARRAY || a->elements < 3 || a->elements % 2 == 0 ||
      a->element[0]->type != REDIS_REPLY_INTEGER || a->element[1]->type != REDIS_REPLY_INTEGER ||
      a->element[2]->type != REDIS_REPLY_INTEGER)
    return make_error(ErrorCode::kUnavailable, "redis: registry count failed");
  // A detach that left entries: one that is or will be over (its node's run ended) would keep
  // the user online after the last real device left, with no offline ever told.
  if (a->elements > 3)
    for (auto& [node, op] : sort_entries(device.user, a, 3, true).later) check_later(std::move(op));
  return Count{static_cast<size_t>(a->element[0]->integer), static_cast<uint64_t>(a->element[1]->integer),
               a->element[2]->integer != 0};
}

RedisBus::Entries RedisBus::sort_entries(const std::string& user, const redisReply* a, size_t from,
                                         bool defer_over) const {
  Entries out;
  const int64_t now = clock_ms();
  const auto steady = std::chrono::steady_clock::now();
  for (size_t i = from; i + 1 < a->elements; i += 2) {
    const redisReply* f = a->element[i];
    const redisReply* v = a->element[i + 1];
    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
    const std::string_view value(v->str, v->len);
    const size_t sp = value.rfind(' ');
    if (sp == std::string_view::npos) continue;  // the order field 'v'
    const int64_t expiry = std::atoll(std::string(value.substr(sp + 1)).c_str());
    if (expiry <= now) continue;
    const std::string node(value.substr(0, sp));
    const DeviceRef device{user, static_cast<uint32_t>(std::strtoul(std::string(f->str, f->len).c_str(), nullptr, 10))};
    const DeviceRoutes::Over o = entry_over(node, expiry, steady);
    if (o.at <= steady && !defer_over) {
      out.over[{node, o.below}].push_back(device);
      continue;
    }
    if (o.at > steady) ++out.counted;
    if (o.at == std::chrono::steady_clock::time_point::max()) continue;
    auto [it, fresh] = out.later.try_emplace(node, CountOp{'c', DeviceRef{user, 0}, 0, nullptr, node, {}});
    it->second.devices.push_back(device);
    it->second.expiry_ms = std::max(it->second.expiry_ms, expiry);
    it->second.not_before = fresh ? o.at : std::min(it->second.not_before, o.at);
  }
  return out;
}

bool RedisBus::registry_mend(char op, const std::vector<DeviceRef>& devices, const std::string& node,
                             int64_t below_ms, MendSeen* seen) {
  const std::string value = op == 'x' ? node : entry_value();
  const std::string code(1, op), now = std::to_string(clock_ms()), below = std::to_string(below_ms);
  // One pipeline per slot for up to kChunk devices, all sent before any reply is read: a node
  // that held 50,000 connections costs 196 round trips, not 50,000, and the counts of the
  // attaches and detaches queued behind them on this thread wait that much less.
  constexpr size_t kChunk = 256;
  for (size_t from = 0; from < devices.size(); from += kChunk) {
    const size_t to = std::min(devices.size(), from + kChunk);
    std::deque<std::string> owned;  // stable addresses for the argv views
    std::map<uint16_t, std::pair<std::vector<std::vector<std::string_view>>, std::vector<size_t>>> by_slot;
    for (size_t i = from; i < to; ++i) {
      owned.push_back(registry_key(devices[i].user));
      const std::string& key = owned.back();
      owned.push_back(std::to_string(devices[i].device));
      auto& [cmds, which] = by_slot[key_slot(key)];
      cmds.push_back({"EVAL", kRegistryMend, "1", key, code, owned.back(), value, now, below});
      which.push_back(i);
    }
    std::vector<store::redis::SlotCommands> batches;
    for (auto& [slot, part] : by_slot) batches.push_back({slot, std::move(part.first)});
    Result<std::vector<std::vector<store::redis::Reply>>> r = make_error(ErrorCode::kUnavailable, "redis: not connected");
    {
      std::lock_guard lock(query_mu_);
      if (!query_) {
        auto c = RedisCluster::open(cluster_options(options_.command_timeout));
        if (!c) return false;  // the entries expire by themselves (x) or are written at the next connect (r)
        query_ = std::move(c).value();
      }
      r = query_->run_many(batches);
    }
    if (!r) return false;
    size_t b = 0;
    for (auto& [slot, part] : by_slot) {
      const auto& replies = (*r)[b++];
      for (size_t k = 0; k < replies.size() && k < part.second.size(); ++k) {
        const redisReply* reply = replies[k].get();
        if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) continue;
        const auto at = [&](size_t e) { return reply->element[e]->type == REDIS_REPLY_INTEGER ? reply->element[e]->integer : -1; };
        if (seen) seen->after = at(2);
        if (at(0) != 1 || !presence_change_sink_) continue;
        // The last entry of the user went with a node that left: offline. An entry written
        // back while the user had none unexpired: online again.
        const std::string& user = devices[part.second[k]].user;
        const auto order = static_cast<uint64_t>(std::max<long long>(at(3), 0));
        if (op == 'x' && at(2) == 0) {
          presence_change_sink_(user, false, order);
          if (seen) seen->reported_offline = true;
        }
        if (op == 'r' && at(1) == 0 && at(2) > 0) presence_change_sink_(user, true, order);
      }
    }
  }
  return true;
}

void RedisBus::gone(std::vector<DeviceRoutes::Gone> nodes, const std::vector<std::string>& live) {
  if (nodes.empty()) return;
  // Every node that sees a node leave queues the removal of its entries, due at once: the
  // first live one by name that is not leaving makes it (mend_run) and marks it made; each
  // other one makes it node_gone_after later if no mark came, so that it outlives a first
  // node that dies at the same moment, or one that started after the node died (it never
  // listed it, so it never sees it leave). Two that make it both: the script removes an
  // entry, and reports its offline, once.
  const bool first = !live.empty() && live.front() == options_.node_id;
  const auto now = std::chrono::steady_clock::now();
  const int64_t below = gone_bound();
  {
    std::lock_guard lock(counts_mu_);
    for (auto& g : nodes) {
      gone_metric.inc();
      spdlog::warn("event=bus_node_gone node={} devices={} removes_entries={}", g.node, g.devices.size(), first);
      if (g.devices.empty()) continue;
      CountOp op{'x', {}, 0, nullptr, g.node, std::move(g.devices), below};
      op.gone = true;
      op.not_before = now;
      op.take_over = true;
      op.anyway_at = now + options_.node_gone_after;
      op.until = now + 2 * options_.registry_ttl;
      counts_.push_back(std::move(op));
    }
  }
  counts_cv_.notify_one();
}

void RedisBus::new_run(const std::string& node, int64_t start_expiry_ms) {
  const DeviceRoutes::RunSeen seen = routes_.run_called(node, start_expiry_ms);
  if (!seen.first && !seen.changed) return;  // a roll call of a run seen before
  // A node this one knew no devices of: nothing to do.
  std::vector<DeviceRef> devices = routes_.held_on(node);
  if (devices.empty()) return;
  // A value seen for the first time (neither a roll call nor a set of that node came before,
  // from a node of an older version say) may be the same run's (every node calls the roll
  // again after a Redis outage): the bound keeps every entry that run wrote, so a mend costs
  // scripts, not entries, and is left to the first node alone, as is one the first node may
  // not make. A value that changed is a new run for certain.
  const bool certain = seen.changed;
  if (!certain && !routes_.first_live_except(node)) return;
  // Rare: a node's roll call comes when it starts, or is subscribed again after a loss.
  spdlog::info("event=bus_node_new_run node={} devices={}", node, devices.size());
  // Not at once: the devices of a node stopped for a restart (leave()) are reconnecting
  // elsewhere, and one that is back within node_gone_after (as for a node that does not come
  // back) has overwritten its entry by then, so its user is never shown offline. Queued on
  // every node that saw the run change, made by one (mend_run): the one first by name may
  // itself stop within that time (a rolling restart moving on to it).
  CountOp op{'x', {}, 0, nullptr, node, std::move(devices), start_expiry_ms};
  op.not_before = std::chrono::steady_clock::now() + options_.node_gone_after;
  op.take_over = certain;
  op.anyway_at = op.not_before + options_.node_gone_after;
  // Then the last run's entries have all expired, and a mend would only report the offline.
  op.until = op.not_before + 2 * options_.registry_ttl;
  {
    std::lock_guard lock(counts_mu_);
    counts_.push_back(std::move(op));
  }
  counts_cv_.notify_one();
}

bool RedisBus::mend_run(const CountOp& op) {
  const auto now = std::chrono::steady_clock::now();
  const bool late = now >= op.until;
  {
    std::lock_guard lock(leaving_mu_);
    if (leaving_) return true;  // stopping: the others take it over once they see it leaving
  }
  const std::string key = op.gone ? gone_mended_key(op.node) : run_mended_key(op.node);
  // Every node bounds a gone node's mend by its own clock when it saw it leave: a mark within
  // half of node_gone_after of this bound is the same leave's (a later one comes after the
  // node was back and absent again for node_gone_after). A new run's bound is its own.
  const int64_t done_from = op.gone ? op.below_ms - options_.node_gone_after.count() / 2 : op.below_ms;
  {
    std::lock_guard lock(query_mu_);
    if (!query_) {
      auto c = RedisCluster::open(cluster_options(options_.command_timeout));
      if (!c) return late;
      query_ = std::move(c).value();
    }
    auto r = query_->run1(key_slot(key), {"GET", key});
    if (!r) return late;
    if ((*r)->type == REDIS_REPLY_STRING && std::atoll((*r)->str) >= done_from) return true;  // made elsewhere
  }
  // The first live node other than op.node mends when due; any other, if no mark says it was
  // done node_gone_after later still: the first stopped or died before it was done, or held
  // none of the devices (it started after the last run died), or could not reach Redis.
  if (!routes_.first_live_except(op.node)) {
    if (!op.take_over) return true;  // perhaps no new run: the first node's to make, or nobody's
    if (now < op.anyway_at) return false;
  }
  if (!registry_mend('x', op.devices, op.node, op.below_ms)) {
    if (late)
      spdlog::warn("event={} node={} devices={}", op.gone ? "bus_node_gone_mend_dropped" : "bus_node_run_mend_dropped",
                   op.node, op.devices.size());
    return late;  // Redis away: asked again, until the last run's entries have long expired
  }
  const std::string below = std::to_string(op.below_ms);
  const std::string ttl = std::to_string((2 * options_.registry_ttl + 2 * options_.node_gone_after).count());
  {
    std::lock_guard lock(query_mu_);
    // Lost (Redis away since): a node that takes the mend over makes it again, which changes
    // nothing (the entries are gone) and reports nothing.
    if (query_) (void)query_->run1(key_slot(key), {"SET", key, below, "PX", ttl});
  }
  if (op.gone) {
    gone_mends_metric.inc();
    spdlog::info("event=bus_node_gone_mended node={} devices={}", op.node, op.devices.size());
  } else {
    run_mends_metric.inc();
    spdlog::info("event=bus_node_run_mended node={} devices={}", op.node, op.devices.size());
  }
  return true;
}

size_t RedisBus::attach(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint) {
  const Endpoint* ptr = endpoint.get();
  const size_t n = local_.attach(device, std::move(endpoint));
  attached_here(device, ptr);
  auto count = registry_count('+', device);
  if (count) return std::max(count->devices, n);
  registry_later(true, device);
  return n;
}

void RedisBus::registry_later(bool attach, const DeviceRef& device) {
  {
    std::lock_guard lock(mu_);
    registry_ops_.emplace_back(attach, device);
  }
  cv_.notify_one();
}

size_t RedisBus::detach(const DeviceRef& device, const Endpoint* endpoint) {
  size_t n = 0;
  std::string moved_to;
  const char op = detach_here(device, endpoint, n, moved_to);
  auto count = registry_count(op, device, moved_to);
  if (count) return std::max(count->devices, n);
  if (op == '-') registry_later(false, device);
  return n;
}

void RedisBus::attach_async(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint, Counted counted) {
  const Endpoint* ptr = endpoint.get();
  bool added = true;
  const size_t n = local_.attach(device, std::move(endpoint), added);
  attached_here(device, ptr);
  {
    std::lock_guard lock(counts_mu_);
    CountOp op{'+', device, n, std::move(counted), {}, {}};
    op.local_added = added;
    counts_.push_back(std::move(op));
  }
  counts_cv_.notify_one();
}

void RedisBus::detach_async(const DeviceRef& device, const Endpoint* endpoint, Counted counted) {
  size_t n = 0;
  std::string moved_to;
  const char op = detach_here(device, endpoint, n, moved_to);
  {
    std::lock_guard lock(counts_mu_);
    counts_.push_back(CountOp{op, device, n, std::move(counted), std::move(moved_to), {}});
  }
  counts_cv_.notify_one();
}

void RedisBus::counter() {
  std::deque<CountOp> ops;
  // Ops whose not_before is ahead (mends, due or asked again later; checks), a heap on
  // not_before. Their order against the ops queued meanwhile does not matter: an 'x' touches
  // only another run's entries, older than its bound.
  std::vector<CountOp> held;
  const auto later = [](const CountOp& x, const CountOp& y) { return x.not_before > y.not_before; };
  const auto hold = [&](CountOp op) {
    held.push_back(std::move(op));
    std::push_heap(held.begin(), held.end(), later);
  };
  std::vector<CountOp> checks;  // the 'c' ops due this turn, made together
  for (;;) {
    {
      std::unique_lock lock(counts_mu_);
      const auto ready = [&] { return counts_stopping_ || !counts_.empty(); };
      if (held.empty()) counts_cv_.wait(lock, ready);
      else counts_cv_.wait_until(lock, held.front().not_before, ready);
      if (counts_stopping_) return;
      ops.swap(counts_);
    }
    const auto now = std::chrono::steady_clock::now();
    while (!held.empty() && held.front().not_before <= now) {
      std::pop_heap(held.begin(), held.end(), later);
      ops.push_back(std::move(held.back()));
      held.pop_back();
    }
    for (auto& op : ops) {
      if (op.not_before > now) {
        hold(std::move(op));
        continue;
      }
      if (op.op == 'x' && op.below_ms != 0) {
        if (!mend_run(op)) {
          op.not_before = now + 2 * options_.node_check;
          hold(std::move(op));
        }
        continue;
      }
      if (op.op == 'c') {
        checks.push_back(std::move(op));
        continue;
      }
      if (op.op == 'x' || op.op == 'r') {
        registry_mend(op.op, op.devices, op.node, op.below_ms);
        continue;
      }
      auto count = registry_count(op.op, op.device, op.node);
      // Redis away: an attach or a detach is written later; a '>' is not (the new node's '+'
      // overwrites the entry; if that node died first, the entry expires with its TTL).
      if (!count && (op.op == '+' || op.op == '-')) registry_later(op.op == '+', op.device);
      // Redis away: this node's count, unordered (0). Whether the device counted already:
      // the registry's answer (a connection on another node counts), else this node's.
      if (op.counted)
        op.counted(count ? std::max(count->devices, op.local) : op.local, count ? count->order : 0,
                   op.op != '+' || (count ? count->added : op.local_added));
    }
    ops.clear();
    check_again(std::move(checks));
    checks.clear();
  }
}

bool RedisBus::online(const std::string& user, bool* reported_offline) {
  if (reported_offline) *reported_offline = false;
  if (local_.online(user)) return true;
  const std::string key = registry_key(user);
  Result<store::redis::Reply> r = make_error(ErrorCode::kUnavailable, "redis: not connected");
  {
    std::lock_guard lock(query_mu_);
    if (!query_) {
      auto c = RedisCluster::open(cluster_options(options_.command_timeout));
      if (!c) return false;  // unknown: say offline (presence is advisory)
      query_ = std::move(c).value();
    }
    r = query_->run1(key_slot(key), {"HGETALL", key});
  }
  if (!r || (*r)->type != REDIS_REPLY_ARRAY) return false;
  Entries entries = sort_entries(user, r->get(), 0, false);
  MendSeen seen;
  mend_stale(entries.over, &seen);
  for (auto& [node, op] : entries.later) check_later(std::move(op));
  if (reported_offline) *reported_offline = seen.reported_offline;
  // The mend's count is the later one (a device may have connected since the read).
  return seen.after >= 0 ? seen.after > 0 : entries.counted > 0;
}

DeviceRoutes::Over RedisBus::entry_over(const std::string& node, int64_t expiry_ms,
                                         std::chrono::steady_clock::time_point now) const {
  if (node != options_.node_id) return routes_.over(node, expiry_ms, now);
  // This node's last run (it died and was started again): no other node may hold its devices,
  // a single node least of all.
  const int64_t run_start = run_start_expiry_ms_.load(std::memory_order_relaxed);
  if (expiry_ms < run_start) return {started_at_ + options_.node_gone_after, run_start};
  return {std::chrono::steady_clock::time_point::max(), 0};
}

int64_t RedisBus::gone_bound() const {
  return clock_ms() + options_.registry_ttl.count() - options_.node_gone_after.count() / 2;
}

void RedisBus::check_later(CountOp op) {
  {
    std::lock_guard lock(counts_mu_);
    if (checks_.size() >= kMaxChecks || !checks_.insert(op.device.user + " " + op.node).second) return;
    counts_.push_back(std::move(op));
  }
  counts_cv_.notify_one();
}

void RedisBus::check_again(std::vector<CountOp> ops) {
  if (ops.empty()) return;
  {
    std::lock_guard lock(counts_mu_);
    for (const CountOp& op : ops) checks_.erase(op.device.user + " " + op.node);
  }
  const auto now = std::chrono::steady_clock::now();
  std::map<std::pair<std::string, int64_t>, std::vector<DeviceRef>> due;
  for (CountOp& op : ops) {
    const DeviceRoutes::Over o = entry_over(op.node, op.expiry_ms, now);
    if (o.at == std::chrono::steady_clock::time_point::max()) continue;  // its node is live on that run
    if (o.at > now) {
      op.not_before = o.at;
      check_later(std::move(op));
      continue;
    }
    auto& devices = due[{op.node, o.below}];
    devices.insert(devices.end(), op.devices.begin(), op.devices.end());
  }
  // Whether or not they expired meanwhile: a subscriber may have been told online on their
  // strength. Each is removed only if its node still holds it below the bound.
  mend_stale(due, nullptr);
}

void RedisBus::mend_stale(const std::map<std::pair<std::string, int64_t>, std::vector<DeviceRef>>& over,
                          MendSeen* seen) {
  const int64_t gone_below = over.empty() ? 0 : gone_bound();  // one bound for a gone node's entries of this turn
  for (const auto& [of, devices] : over) {
    stale_mended_metric.inc(devices.size());
    registry_mend('x', devices, of.first, of.second != 0 ? of.second : gone_below, seen);
  }
}

void RedisBus::registry_writes(const std::deque<std::pair<bool, DeviceRef>>& reg,
                               const std::vector<std::pair<std::string, uint32_t>>& refresh,
                               std::deque<std::string>& owned,
                               std::map<uint16_t, std::vector<std::vector<std::string_view>>>& by_slot) {
  // In `owned`, as everything the views in `by_slot` name: they are sent after this returns.
  owned.push_back(entry_value());
  const std::string& value = owned.back();
  auto put = [&](const std::string& user, uint32_t device) {
    owned.push_back(registry_key(user));
    owned.push_back(std::to_string(device));
    by_slot[key_slot(owned[owned.size() - 2])].push_back({"HSET", owned[owned.size() - 2], owned.back(), value});
  };
  for (auto& [attach, d] : reg) {
    if (attach) put(d.user, d.device);
    else {
      owned.push_back(registry_key(d.user));
      owned.push_back(std::to_string(d.device));
      by_slot[key_slot(owned[owned.size() - 2])].push_back(
          {"EVAL", kRegistryRemove, "1", owned[owned.size() - 2], owned.back(), options_.node_id});
    }
  }
  for (auto& [user, device] : refresh) {
    owned.push_back(registry_key(user));
    owned.push_back(std::to_string(device));
    by_slot[key_slot(owned[owned.size() - 2])].push_back(
        {"EVAL", kRegistryRefresh, "1", owned[owned.size() - 2], owned.back(), value});
  }
}

}  // namespace tern::bus
