#include "services/channel_views.h"

#include <algorithm>
#include <memory>

#include <boost/asio/steady_timer.hpp>

#include "base/metrics.h"
#include "services/channel_forwarding.h"

namespace tern::services {
namespace {

Counter& reads_forwarded = MetricsRegistry::global().counter(
    "tern_channel_reads_forwarded_total", "channel read markers sent to the node that sequences the channel");
Counter& reads_dropped = MetricsRegistry::global().counter(
    "tern_channel_reads_dropped_total", "channel read markers not counted: too many held for other nodes");

}  // namespace

void ChannelViews::read(Shard& shard, ConvState& cs, const std::string& channel_id, const std::string& user,
                        Seq seq) {
  if (core_.bus.route(channel_id).empty()) return count_read(cs, user, seq);
  Held& h = held_[shard.loop];
  if (auto c = h.reads.find(channel_id); c != h.reads.end()) {
    if (auto u = c->second.find(user); u != c->second.end()) {
      u->second = std::max(u->second, seq);
      return;
    }
  }
  if (h.count >= kHeldReads) return reads_dropped.inc();
  h.reads[channel_id].emplace(user, seq);
  ++h.count;
  if (h.armed) return;
  h.armed = true;
  auto timer = std::make_shared<boost::asio::steady_timer>(core_.loops.context(shard.loop),
                                                           std::chrono::milliseconds(kBatchMs));
  timer->async_wait([this, &shard, timer](const boost::system::error_code&) { flush(shard); });
}

void ChannelViews::flush(Shard& shard) {
  Held& h = held_[shard.loop];
  auto held = std::move(h.reads);
  h.reads.clear();
  h.count = 0;
  h.armed = false;
  for (auto& [channel_id, users] : held) {
    channel_forwarding::Request request{channel_forwarding::Op::kReads, {}, channel_id, {}, {}};
    request.reads.assign(users.begin(), users.end());
    const std::string node = core_.bus.route(channel_id);
    if (node.empty()) {  // this node sequences the channel now
      if (ConvState* cs = shard.conversations.find(channel_id)) count_reads(*cs, request.reads);
      continue;
    }
    reads_forwarded.inc(request.reads.size());
    core_.bus.request(node, channel_forwarding::encode_request(request), [](Result<std::string>) {});
  }
}

ChannelViews::Views ChannelViews::views(const ConvState& cs) {
  if (!cs.channel) return {};
  return {cs.channel->views.begin(), cs.channel->views.end()};
}

void ChannelViews::count_reads(ConvState& cs, const Reads& reads) {
  for (const auto& [user, seq] : reads) count_read(cs, user, seq);
}

void ChannelViews::track_post(ConvState& cs, Seq seq) {
  auto& views = cs.channel_state().views;
  views.emplace_back(seq, 0);
  if (views.size() > kViewedPosts) views.pop_front();
}

void ChannelViews::count_read(ConvState& cs, const std::string& user, Seq seq) {
  ChannelState& ch = cs.channel_state();
  auto [it, inserted] = ch.last_read.try_emplace(user, 0);
  const Seq prev = it->second;
  if (seq <= prev) return;
  it->second = seq;
  for (auto& [s, v] : ch.views)
    if (s > prev && s <= seq) ++v;
  // Bounded: forgetting readers only lets a reader count again (views are approximate).
  if (ch.last_read.size() > kReaders) ch.last_read.clear();
}

}  // namespace tern::services
