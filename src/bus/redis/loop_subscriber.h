// LoopSubscriber: RedisBus's subscription to the bus channels (`tern:bus` and the node's own
// `{tern:bus}:<node>`), held by an event loop over an AsyncRedis connection: the server's
// loop 0 (RedisBus::set_loops), so that what other nodes publish is decoded and handed to the
// endpoints and sinks on that loop without a thread hop, or, without loops, a loop of the
// bus's own (tests).
//
// Where: the master that serves the channels' slot as the bus's publisher thread last saw it
// (RedisBus::channel_target; SSUBSCRIBE on a Cluster, SUBSCRIBE on one redis-server). The
// connection is named `tern-bus:<node>` (CLIENT SETNAME) first: the other nodes count a node
// as live while it is open (node_ring.h).
//
// Following it: when the publisher thread sees the channels' slot served by another master
// (it reads the topology with every liveness check, and at once after a redirect), the
// subscription moves there (retarget()): a replica may still hold sharded subscriptions after
// a failover, but the other nodes look for this node's connection on the master.
//
// Losing it: the connection breaks (Redis restarted, the master died), or the slot moved or
// failed over (an `sunsubscribe` push, or a MOVED answer to the SSUBSCRIBE): the publisher
// thread is asked to read the topology again, and the subscription is made again after a
// back-off (200 ms, doubling to 1 s). Events published meanwhile are lost: once subscribed
// again the bus drops its caches (the resync sink; messages are healed by replay). A hung
// Redis is not detected here (the subscription waits without a deadline), as before: the
// publishes and store calls time out instead.
//
// Thread-safety: start() from any thread (it posts to the loop); everything else on the loop.
// Owned (shared) by RedisBus and the handlers in flight; stop() (any thread) makes it deliver
// nothing more and close at its next step on the loop.
#pragma once
#include <atomic>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "store/redis/async_redis.h"

namespace tern::bus {

class RedisBus;

class LoopSubscriber : public std::enable_shared_from_this<LoopSubscriber> {
 public:
  LoopSubscriber(RedisBus& bus, boost::asio::io_context& io);
  void start();
  void stop();
  // The channels' master changed (the publisher thread's view; any thread): subscribe there.
  void retarget();

 private:
  void subscribe();
  void on_subscribed(Result<store::redis::Reply> reply);
  void on_push(store::redis::Reply reply);
  // The subscription is gone (why): made again after the back-off.
  void lost(const std::string& why);
  void retry_later();

  RedisBus& bus_;
  boost::asio::io_context& io_;
  std::shared_ptr<store::redis::AsyncRedis> redis_;
  boost::asio::steady_timer retry_;
  bool retry_armed_ = false;
  bool subscribed_ = false;         // the current connection holds the subscription
  bool subscribed_before_ = false;  // a later subscription may have missed events: resync
  uint64_t generation_ = 0;         // of the target the current connection was made for
  store::redis::ReconnectBackoff backoff_;
  std::atomic<bool> stopped_{false};
};

}  // namespace tern::bus
