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
    o.credentials = bus_.options_.credentials;
    o.command_timeout = bus_.options_.command_timeout;
    // One flush may send more than kMaxInFlight runs (the check is before it): AsyncRedis's own
    // bound (4,096) only stops a runaway.
    redis_ = store::redis::AsyncRedis::create(io_, o);
    cluster_ = target->cluster;
    target_generation_ = target->generation;
  }
  // The same batches as the bus thread's (RedisBus::batches): what each node receives keeps
  // the order this loop raised it in.
  const bool resync = owe_resync_;
  owe_resync_ = false;
  auto batches = RedisBus::batches(queue_, resync, bus_.options_.node_id);
  queue_.clear();
  const char* verb = cluster_ ? "SPUBLISH" : "PUBLISH";
  for (RedisBus::Batch& b : batches) {
    ++in_flight_;
    // The connection keeps the callback, this publisher the connection: held weakly, so that
    // no cycle outlives a server whose loops stopped with publishes in flight.
    redis_->command(
        {verb, b.channel, b.payload},
        [weak = weak_from_this(), events = b.events, requests = std::move(b.requests),
         unheard = std::move(b.unheard)](Result<store::redis::Reply> reply) mutable {
          auto self = weak.lock();
          if (!self) return;
          --self->in_flight_;
          const bool ok = reply && (*reply)->type != REDIS_REPLY_ERROR;
          if (ok) {
            self->bus_.count_published(events, true);
            // A node channel that no subscriber heard: to every node instead (RedisBus::Batch).
            if ((*reply)->type == REDIS_REPLY_INTEGER && (*reply)->integer == 0)
              for (RedisBus::Event& e : unheard) self->enqueue(RedisBus::as_broadcast(std::move(e)));
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
