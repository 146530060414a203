#include "bus/redis/loop_publisher.h"

#include <hiredis/hiredis.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/post.hpp>

namespace tern::bus {

namespace {
// How long a loop that owes the other nodes a kResync waits for other events to carry it
// before it sends it alone (as the bus thread, which wakes at least this often).
constexpr std::chrono::milliseconds kResyncRetry{500};
}  // namespace

LoopPublisher::LoopPublisher(RedisBus& bus, boost::asio::io_context& io) : bus_(bus), io_(io), resync_timer_(io) {}

bool LoopPublisher::enqueue(RedisBus::Event e) {
  if (queue_.size() >= bus_.options_.queue_limit) {
    dropped(1);
    return false;
  }
  queue_.push_back(std::move(e));
  schedule_flush();
  return true;
}

void LoopPublisher::schedule_flush() {
  if (flush_posted_) return;
  flush_posted_ = true;
  // After the turn's other handlers: every event they raise rides in this flush.
  boost::asio::post(io_, [self = shared_from_this()] {
    self->flush_posted_ = false;
    self->flush();
  });
}

void LoopPublisher::dropped(size_t events) {
  bus_.count_dropped(events);
  owe_resync_ = true;
  arm_resync_retry();
}

void LoopPublisher::arm_resync_retry() {
  if (resync_armed_) return;
  resync_armed_ = true;
  resync_timer_.expires_after(kResyncRetry);
  resync_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    self->resync_armed_ = false;
    if (ec || self->bus_.stopped_.load(std::memory_order_relaxed)) return;
    if (self->owe_resync_) self->flush();
  });
}

void LoopPublisher::flush() {
  if (queue_.empty() && !owe_resync_) return;
  if (in_flight_ >= kMaxInFlight) return;  // the next reply flushes again
  if (bus_.stopped_.load(std::memory_order_relaxed)) {
    queue_.clear();
    return;
  }
  // The connection follows the bus thread's view of where the channels live.
  const uint64_t generation = bus_.target_generation_.load(std::memory_order_acquire);
  if (generation != target_generation_ || !redis_) {
    auto target = bus_.channel_target();
    if (!target) {
      // Not read yet (start-up): the bus thread publishes these.
      for (auto& e : queue_) bus_.enqueue_thread(std::move(e));
      queue_.clear();
      return;
    }
    if (redis_) redis_->close();
    store::redis::AsyncRedisOptions o;
    o.address = target->address;
    o.command_timeout = bus_.options_.command_timeout;
    // One flush may send more than kMaxInFlight runs (the check is before it): AsyncRedis's own
    // bound (4,096) only stops a runaway.
    redis_ = store::redis::AsyncRedis::create(io_, o);
    cluster_ = target->cluster;
    target_generation_ = target->generation;
  }
  // Runs of events for one channel, in queue order (the same split as RedisBus::batches).
  bool resync = owe_resync_;
  owe_resync_ = false;
  std::deque<RedisBus::Event> run;
  std::string run_channel;
  while (!queue_.empty()) {
    const std::string channel = RedisBus::channel_of(queue_.front());
    if (!run.empty() && channel != run_channel) {
      publish_run(run, resync);
      resync = false;
      run.clear();
    }
    run_channel = channel;
    run.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  if (!run.empty() || resync) publish_run(run, resync);
}

void LoopPublisher::publish_run(std::deque<RedisBus::Event>& run, bool resync) {
  // What a failure must undo: the events' count and the requests among them.
  std::vector<uint64_t> requests;
  for (const auto& e : run)
    if (e.target == RedisBus::Target::kRequest) requests.push_back(e.n->seq);
  const size_t events = run.size();
  auto batches = RedisBus::batches(run, resync, bus_.options_.node_id);
  const char* verb = cluster_ ? "SPUBLISH" : "PUBLISH";
  for (size_t i = 0; i < batches.size(); ++i) {
    const bool last = i + 1 == batches.size();  // the events ride in the last (a kResync alone first)
    ++in_flight_;
    // The connection keeps the callback, this publisher the connection: held weakly, so that
    // no cycle outlives a server whose loops stopped with publishes in flight.
    redis_->command(
        {verb, batches[i].first, batches[i].second},
        [weak = weak_from_this(), events = last ? events : 0,
         requests = last ? std::move(requests) : std::vector<uint64_t>{}](Result<store::redis::Reply> reply) {
          auto self = weak.lock();
          if (!self) return;
          --self->in_flight_;
          const bool ok = reply && (*reply)->type != REDIS_REPLY_ERROR;
          if (ok) {
            self->bus_.count_published(events, true);
          } else {
            if (reply) {
              const std::string_view err((*reply)->str, (*reply)->len);
              if (err.starts_with("MOVED") || err.starts_with("ASK") || err.starts_with("CLUSTERDOWN"))
                self->bus_.want_refresh();
            }
            self->dropped(events);  // sets owe_resync_ (also for a kResync alone)
            for (uint64_t id : requests)
              self->bus_.complete(id, make_error(ErrorCode::kUnavailable,
                                                 "redis: the request to another node was not published"));
          }
          if (!self->queue_.empty()) self->schedule_flush();
        });
  }
}

}  // namespace tern::bus
