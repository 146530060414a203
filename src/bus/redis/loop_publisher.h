// LoopPublisher: RedisBus's publishing for the events raised on one event loop, driven by
// that loop (no thread hop, no blocking call): the events a turn of the loop raises are queued
// here, and the turn ends with one flush that sends them as PUBLISHes (SPUBLISH on a Cluster)
// over the loop's own AsyncRedis connection, pipelined in one write. The reply comes back on
// the loop later; the loop never waits for it.
//
// Batches: the same as the bus thread's (RedisBus::batches): one PUBLISH per channel per run of
// events for kChannel or for node channels, so each node gets them in the order the loop
// raised them. A connection answers in order and Redis
// delivers one connection's publishes in order, so what one loop raises reaches every other
// node in that order (a forwarded send's reply and the next message to the asking node are
// both raised on the conversation's loop). Events of different loops have no order between
// them, as before they had none between the loops that queued them.
//
// Where: the master that serves the bus channels' slot (on one redis-server, that server), as
// the bus thread's routing client last saw it (RedisBus::channel_target): before the bus
// thread has read it, events go through the bus thread's queue instead. A MOVED or ASK reply
// (the slot moved, a failover) asks the bus thread to read the topology again.
//
// Failures (Redis away or hung, a full queue, a redirect): the events are dropped and counted
// as on the bus thread (tern_bus_dropped_total), the requests among them fail `unavailable`,
// and the loop's next batch starts with a kResync (the other nodes drop their caches); with
// nothing else to send, a timer sends the kResync alone. Never trusted for durability: replay
// heals messages.
//
// Bounds: at most queue_limit events wait per loop (more are dropped); at most
// kMaxInFlight PUBLISHes wait for their reply (the rest wait in the queue for a reply).
//
// Thread-safety: enqueue() on its loop's thread only; everything else runs there. Owned
// (shared) by RedisBus and by the handlers in flight; the bus outlives every handler that runs
// (the server joins its loops before destroying the bus).
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bus/redis/redis_bus.h"
#include "store/redis/async_redis.h"

namespace tern::bus {

class LoopPublisher : public std::enable_shared_from_this<LoopPublisher> {
 public:
  static constexpr size_t kMaxInFlight = 64;

  LoopPublisher(RedisBus& bus, boost::asio::io_context& io);
  // Queues the event for the end of this turn; false: dropped (the queue is full).
  bool enqueue(RedisBus::Event e);

 private:
  void schedule_flush();
  void flush();
  void dropped(size_t events);
  void arm_resync_retry();

  RedisBus& bus_;
  boost::asio::io_context& io_;
  std::deque<RedisBus::Event> queue_;
  bool flush_posted_ = false;
  bool owe_resync_ = false;  // events of this loop were dropped: the next batch says so
  size_t in_flight_ = 0;     // PUBLISHes waiting for their reply
  std::shared_ptr<store::redis::AsyncRedis> redis_;
  uint64_t target_generation_ = 0;  // of the target redis_ was made for
  bool cluster_ = false;            // SPUBLISH instead of PUBLISH
  boost::asio::steady_timer resync_timer_;
  bool resync_armed_ = false;
};

}  // namespace tern::bus
