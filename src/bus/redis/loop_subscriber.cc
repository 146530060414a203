#include "bus/redis/loop_subscriber.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/post.hpp>

#include "bus/redis/redis_bus.h"

namespace tern::bus {

LoopSubscriber::LoopSubscriber(RedisBus& bus, boost::asio::io_context& io)
    : bus_(bus), io_(io), retry_(io), backoff_(std::chrono::milliseconds(200), std::chrono::milliseconds(1000)) {}

void LoopSubscriber::start() {
  boost::asio::post(io_, [self = shared_from_this()] { self->subscribe(); });
}

void LoopSubscriber::stop() {
  stopped_.store(true, std::memory_order_relaxed);
  boost::asio::post(io_, [self = shared_from_this()] {
    self->retry_.cancel();
    if (self->redis_) self->redis_->close();
    self->redis_.reset();
  });
}

void LoopSubscriber::retarget() {
  boost::asio::post(io_, [self = shared_from_this()] {
    if (self->stopped_.load(std::memory_order_relaxed) || self->retry_armed_) return;  // a retry reads it anyway
    if (self->generation_ == self->bus_.target_generation_.load(std::memory_order_acquire)) return;
    spdlog::info("event=bus_subscription_moves node={}", self->bus_.options_.node_id);
    self->subscribe();
  });
}

void LoopSubscriber::subscribe() {
  if (stopped_.load(std::memory_order_relaxed)) return;
  auto target = bus_.channel_target();
  if (!target) return retry_later();  // the publisher thread has not read it yet
  if (redis_) redis_->close();
  store::redis::AsyncRedisOptions o;
  o.address = target->address;
  o.credentials = bus_.options_.credentials;
  o.command_timeout = bus_.options_.command_timeout;  // for the two commands below
  redis_ = store::redis::AsyncRedis::create(io_, o);
  generation_ = target->generation;
  subscribed_ = false;
  // Handlers name this connection: one that was replaced meanwhile says nothing. They hold
  // this subscriber weakly: the connection keeps them, and this subscriber the connection (a
  // strong cycle would outlive a server whose loops stopped before the close ran).
  std::weak_ptr<store::redis::AsyncRedis> conn = redis_;
  std::weak_ptr<LoopSubscriber> weak = weak_from_this();
  redis_->set_push_handler([weak, conn](store::redis::Reply reply) {
    auto self = weak.lock();
    if (self && conn.lock() == self->redis_) self->on_push(std::move(reply));
  });
  redis_->set_broken_handler([weak, conn](const std::string& why) {
    auto self = weak.lock();
    if (self && conn.lock() == self->redis_) self->lost(why);
  });
  const std::string name = bus_.connection_name();
  redis_->command({"CLIENT", "SETNAME", name}, [](Result<store::redis::Reply>) {});  // a failure breaks the link
  const auto channels = bus_.subscription_channels();
  redis_->command({target->cluster ? "SSUBSCRIBE" : "SUBSCRIBE", channels[0], channels[1], channels[2]},
                  [weak, conn](Result<store::redis::Reply> reply) {
                    auto self = weak.lock();
                    if (self && conn.lock() == self->redis_) self->on_subscribed(std::move(reply));
                  });
}

void LoopSubscriber::on_subscribed(Result<store::redis::Reply> reply) {
  if (!reply) return;  // the broken handler follows (the link failed)
  if ((*reply)->type != REDIS_REPLY_ARRAY) {
    // MOVED (the map changed since the publisher thread read it) or another refusal.
    lost("subscribe refused: " + std::string((*reply)->str ? (*reply)->str : "", (*reply)->len));
    return;
  }
  subscribed_ = true;
  backoff_.reset();
  spdlog::info("event=bus_subscribed node={}", bus_.options_.node_id);
  bus_.on_subscribed(subscribed_before_);
  subscribed_before_ = true;
}

void LoopSubscriber::on_push(store::redis::Reply reply) {
  if (stopped_.load(std::memory_order_relaxed)) return;
  const redisReply* r = reply.get();
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING) return;
  const std::string_view kind(r->element[0]->str, r->element[0]->len);
  // ["message" | "smessage", channel, payload]
  if ((kind == "message" || kind == "smessage") && r->element[2]->type == REDIS_REPLY_STRING)
    return bus_.deliver(std::string_view(r->element[2]->str, r->element[2]->len));
  // The slot moved or the master failed over: the server dropped the subscription.
  if (kind == "sunsubscribe") lost("the channels' slot moved");
}

void LoopSubscriber::lost(const std::string& why) {
  if (redis_) redis_->close();
  redis_.reset();
  subscribed_ = false;
  bus_.subscribed_now_.store(false, std::memory_order_relaxed);
  if (stopped_.load(std::memory_order_relaxed)) return;
  spdlog::warn("event=bus_subscription_lost node={} why=\"{}\" action=reconnect", bus_.options_.node_id, why);
  bus_.want_refresh();  // where the channels live may have changed
  retry_later();
}

void LoopSubscriber::retry_later() {
  if (retry_armed_ || stopped_.load(std::memory_order_relaxed)) return;
  retry_armed_ = true;
  retry_.expires_after(backoff_.next());
  retry_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    self->retry_armed_ = false;
    if (!ec) self->subscribe();
  });
}

}  // namespace tern::bus
