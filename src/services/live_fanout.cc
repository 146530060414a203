#include "services/live_fanout.h"

#include "base/metrics.h"

namespace tern::services {
namespace {

Counter& fanout_batches = MetricsRegistry::global().counter(
    "tern_fanout_batches_total", "read-side fan-out batches handed to a loop's sessions (one per loop per window)");
Counter& fanout_deliveries = MetricsRegistry::global().counter(
    "tern_fanout_deliveries_total", "read-side messages handed to subscribed sessions");

}  // namespace

LiveFanout::LiveFanout(Loops& loops, std::chrono::milliseconds window) : loops_(loops), window_(window) {
  for (size_t i = 0; i < loops.size(); ++i) loops_state_.push_back(std::make_unique<PerLoop>(loops.context(i)));
}

LiveFanout::~LiveFanout() = default;

void LiveFanout::subscribe(size_t loop, const std::string& conversation_id, std::shared_ptr<bus::Endpoint> endpoint) {
  if (loop >= loops_state_.size() || !endpoint) return;
  PerLoop& l = *loops_state_[loop];
  if (l.flushing) {
    const bus::Endpoint* raw = endpoint.get();
    l.deferred.push_back({conversation_id, std::move(endpoint), raw});
    return;
  }
  apply_subscribe(l, conversation_id, std::move(endpoint));
}

void LiveFanout::apply_subscribe(PerLoop& l, const std::string& conversation_id,
                                 std::shared_ptr<bus::Endpoint> endpoint) {
  Followers& f = l.index[conversation_id];
  if (f.slot.count(endpoint.get())) return;
  f.slot.emplace(endpoint.get(), f.endpoints.size());
  f.endpoints.push_back(std::move(endpoint));
}

void LiveFanout::unsubscribe(size_t loop, const std::string& conversation_id, const bus::Endpoint* endpoint) {
  if (loop >= loops_state_.size()) return;
  PerLoop& l = *loops_state_[loop];
  if (l.flushing) {
    l.deferred.push_back({conversation_id, nullptr, endpoint});
    return;
  }
  apply_unsubscribe(l, conversation_id, endpoint);
}

void LiveFanout::apply_unsubscribe(PerLoop& l, const std::string& conversation_id, const bus::Endpoint* endpoint) {
  auto& index = l.index;
  auto it = index.find(conversation_id);
  if (it == index.end()) return;
  Followers& f = it->second;
  auto s = f.slot.find(endpoint);
  if (s == f.slot.end()) return;
  const size_t i = s->second;
  f.slot.erase(s);
  if (i + 1 != f.endpoints.size()) {
    f.endpoints[i] = std::move(f.endpoints.back());
    f.slot[f.endpoints[i].get()] = i;
  }
  f.endpoints.pop_back();
  if (f.endpoints.empty()) index.erase(it);
}

size_t LiveFanout::subscribers(size_t loop, const std::string& conversation_id) const {
  if (loop >= loops_state_.size()) return 0;
  const auto& index = loops_state_[loop]->index;
  auto it = index.find(conversation_id);
  return it == index.end() ? 0 : it->second.endpoints.size();
}

void LiveFanout::publish(std::shared_ptr<const bus::Notification> n) {
  for (size_t i = 0; i < loops_state_.size(); ++i)
    loops_.run(i, [this, i, n] { enqueue(i, n); });
}

void LiveFanout::enqueue(size_t loop, std::shared_ptr<const bus::Notification> n) {
  PerLoop& l = *loops_state_[loop];
  if (!l.index.count(n->conversation_id)) return;  // nobody follows it on this loop
  l.pending.push_back(std::move(n));
  if (window_.count() == 0) return flush(loop);
  if (l.armed) return;
  l.armed = true;
  l.timer.expires_after(window_);
  l.timer.async_wait([this, loop](const boost::system::error_code& ec) {
    if (!ec) flush(loop);
  });
}

void LiveFanout::flush(size_t loop) {
  PerLoop& l = *loops_state_[loop];
  l.armed = false;
  auto batch = std::move(l.pending);
  l.pending.clear();
  fanout_batches.inc();
  l.flushing = true;  // index and vectors stay as they are until the walk ends
  for (const auto& n : batch) {
    auto it = l.index.find(n->conversation_id);
    if (it == l.index.end()) continue;
    const auto& targets = it->second.endpoints;
    fanout_deliveries.inc(targets.size());
    for (const auto& e : targets) e->notify(n);  // on this loop: delivered inline
  }
  l.flushing = false;
  auto changes = std::move(l.deferred);
  l.deferred.clear();
  for (auto& c : changes) {
    if (c.subscribe) apply_subscribe(l, c.conversation_id, std::move(c.subscribe));
    else apply_unsubscribe(l, c.conversation_id, c.endpoint);
  }
}

}  // namespace tern::services
