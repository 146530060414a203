// RedisBus with event loops (LoopPublisher): what a loop raises is published by that loop,
// in order, without waiting for Redis; a hung Redis costs the loop nothing; what was dropped
// meanwhile is announced (kResync) once Redis answers again. Two buses on a real redis-server.
#include "bus/redis/loop_publisher.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include "base/loops.h"
#include "bus/redis/redis_bus.h"
#include "store/redis/redis_connection.h"
#include "store/redis/testing/redis_server.h"

namespace tern::bus {
namespace {

using namespace std::chrono_literals;

class Recorder final : public Endpoint {
 public:
  explicit Recorder(const Loops* loops = nullptr) : loops(loops) {}
  void notify(std::shared_ptr<const Notification> n) override {
    if (loops && loops->here() == Loops::kNone) ++off_loop;
    std::lock_guard lock(mu);
    seqs.push_back(n->seq);
  }
  const Loops* loops;
  std::atomic<int> off_loop{0};  // notifications not made on `loops`
  void replaced() override {}
  std::vector<Seq> seen() {
    std::lock_guard lock(mu);
    return seqs;
  }
  std::mutex mu;
  std::vector<Seq> seqs;
};

bool await(const std::function<bool()>& cond, std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

std::shared_ptr<const Notification> message(Seq seq) {
  auto n = std::make_shared<Notification>();
  n->kind = Notification::Kind::kMessage;
  n->conversation_id = "c";
  n->seq = seq;
  n->frame = std::make_shared<const std::string>("x");
  return n;
}

// Nodes a and b, one loop each: each publishes from its loop and holds its subscription there.
class LoopPublisherTest : public ::testing::Test {
 protected:
  struct StartedRedis {
    store::redis::testing::RedisServer server;
    bool ok = server.start().ok();
  };
  static RedisBusOptions options(uint16_t port, const char* node, std::chrono::milliseconds timeout) {
    RedisBusOptions o;
    o.address = store::redis::RedisAddress{"127.0.0.1", port};
    o.node_id = node;
    o.command_timeout = timeout;
    o.request_timeout = 5000ms;
    return o;
  }
  void SetUp() override {
    ASSERT_TRUE(redis_.ok);
    a_.set_loops(loops_);
    b_.set_loops(loops_b_);
    ASSERT_TRUE(a_.start());
    ASSERT_TRUE(b_.start());
    loops_.start();
    loops_b_.start();
    ASSERT_TRUE(a_.await_subscribed());
    ASSERT_TRUE(b_.await_subscribed());
  }
  void TearDown() override {
    a_.stop();
    b_.stop();
    for (Loops* l : {&loops_, &loops_b_}) {
      l->stop();
      l->join();  // before the buses go (RedisBus: the loops are joined first)
    }
  }
  // Runs `fn` on a's loop and waits for it.
  void on_loop(std::function<void()> fn) {
    std::promise<void> done;
    loops_.post(0, [&] {
      fn();
      done.set_value();
    });
    ASSERT_EQ(done.get_future().wait_for(5s), std::future_status::ready);
  }

  StartedRedis redis_;
  Loops loops_{1}, loops_b_{1};
  RedisBus a_{options(redis_.server.port(), "a", 1500ms)};
  RedisBus b_{options(redis_.server.port(), "b", 1500ms)};
};

TEST_F(LoopPublisherTest, WhatALoopRaisesTheLoopPublishesInOrder) {
  auto bob = std::make_shared<Recorder>(&loops_b_);
  b_.attach(DeviceRef{"bob", 1}, bob);
  constexpr Seq kMessages = 300;
  // Three turns of the loop, 100 messages each.
  for (Seq turn = 0; turn < 3; ++turn)
    on_loop([&] {
      for (Seq i = 1; i <= 100; ++i) a_.publish(DeviceRef{"bob", 1}, message(turn * 100 + i));
    });
  ASSERT_TRUE(await([&] { return bob->seen().size() == kMessages; })) << bob->seen().size();
  const auto seen = bob->seen();
  for (Seq i = 0; i < kMessages; ++i) EXPECT_EQ(seen[i], i + 1);
  // Counted when Redis's reply reaches a's loop, which may come after b got the messages.
  ASSERT_TRUE(await([&] { return a_.published_by_loops() == kMessages; })) << a_.published_by_loops();
  EXPECT_EQ(a_.published_by_thread(), 0u);
  EXPECT_EQ(bob->off_loop.load(), 0) << "b delivered on its loop (the subscription's)";
  // A thread that is not a loop still goes through the bus thread.
  a_.publish(DeviceRef{"bob", 1}, message(kMessages + 1));
  ASSERT_TRUE(await([&] { return bob->seen().size() == kMessages + 1; }));
  ASSERT_TRUE(await([&] { return a_.published_by_thread() == 1; }));
  EXPECT_EQ(a_.published_by_loops(), kMessages);
}

// A forwarded request raised on a loop and its reply raised on the other node's loop.
TEST_F(LoopPublisherTest, ARequestFromALoopIsAnswered) {
  b_.set_request_sink([](std::string payload, Bus::Respond respond) { respond("re:" + payload); });
  std::promise<Result<std::string>> answer;
  on_loop([&] { a_.request("b", "ping", [&](Result<std::string> r) { answer.set_value(std::move(r)); }); });
  auto f = answer.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  auto got = f.get();
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(*got, "re:ping");
  EXPECT_TRUE(await([&] { return a_.published_by_loops() == 1; })) << a_.published_by_loops();
}

// Redis hangs: the loop goes on at once (its publishes wait on the connection, not on the
// loop), they fail after the command timeout (dropped, counted; a request among them fails
// `unavailable`), and once Redis answers again the loop's next batch tells b to drop its
// caches (kResync) before it delivers the next message.
TEST_F(LoopPublisherTest, AHungRedisNeverHoldsTheLoopAndWhatWasDroppedIsAnnounced) {
  auto bob = std::make_shared<Recorder>();
  b_.attach(DeviceRef{"bob", 1}, bob);
  std::atomic<int> resyncs{0};
  b_.set_resync_sink([&] { ++resyncs; });
  on_loop([&] { a_.publish(DeviceRef{"bob", 1}, message(1)); });  // connected
  ASSERT_TRUE(await([&] { return bob->seen().size() == 1 && a_.published_by_loops() == 1; }));

  redis_.server.freeze();
  std::promise<Result<std::string>> answer;
  on_loop([&] {
    for (Seq i = 2; i <= 11; ++i) a_.publish(DeviceRef{"bob", 1}, message(i));
    a_.request("b", "ping", [&](Result<std::string> r) { answer.set_value(std::move(r)); });
  });
  // The loop runs the next task while those publishes are still unanswered (1.5 s timeout).
  std::atomic<bool> ran{false};
  on_loop([&] { ran = true; });
  EXPECT_TRUE(ran);
  EXPECT_EQ(a_.dropped_by_loops(), 0u) << "the loop did not wait for the publishes to fail";
  EXPECT_EQ(a_.published_by_loops(), 1u);

  auto f = answer.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  auto got = f.get();
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(a_.dropped_by_loops(), 11u);  // ten messages and the request
  redis_.server.thaw();

  // The kResync goes out (alone, on the loop's timer) once Redis is back, and the next
  // message is delivered. (The timed-out publishes may still arrive too: Redis reads what
  // was written before the connection closed. Dropped means "not known to be published".)
  ASSERT_TRUE(await([&] { return resyncs.load() >= 1; }, 10000ms));
  on_loop([&] { a_.publish(DeviceRef{"bob", 1}, message(12)); });
  ASSERT_TRUE(await([&] {
    const auto s = bob->seen();
    return std::find(s.begin(), s.end(), Seq{12}) != s.end();
  }, 10000ms));
}

}  // namespace
}  // namespace tern::bus

namespace tern::bus {
namespace {

// b's subscription, held by its loop, is killed: b subscribes again by itself, drops its caches
// (events may have been missed meanwhile), and delivers on its loop again.
TEST_F(LoopPublisherTest, ASubscriptionHeldByALoopComesBackAfterAKill) {
  auto bob = std::make_shared<Recorder>(&loops_b_);
  b_.attach(DeviceRef{"bob", 1}, bob);
  std::atomic<int> resyncs{0};
  b_.set_resync_sink([&] { ++resyncs; });
  auto admin = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", redis_.server.port()},
                                                      500ms, 500ms);
  ASSERT_TRUE(admin);
  auto killed = (*admin)->command({"CLIENT", "KILL", "TYPE", "pubsub"});
  ASSERT_TRUE(killed);
  ASSERT_EQ((*killed)->type, REDIS_REPLY_INTEGER);
  EXPECT_EQ((*killed)->integer, 2) << "both nodes' subscriptions";
  ASSERT_TRUE(await([&] { return resyncs.load() == 1; })) << resyncs.load();
  // Subscribed again (the resync comes right after the SUBSCRIBE's answer): delivery resumes.
  Seq seq = 0;
  ASSERT_TRUE(await([&] {
    on_loop([&] { a_.publish(DeviceRef{"bob", 1}, message(++seq)); });
    return !bob->seen().empty();
  }));
  EXPECT_EQ(bob->off_loop.load(), 0);
  // The node is listed as live again (its subscription's connection carries its name).
  auto list = (*admin)->command({"CLIENT", "LIST", "TYPE", "pubsub"});
  ASSERT_TRUE(list);
  ASSERT_EQ((*list)->type, REDIS_REPLY_STRING);
  const std::string clients((*list)->str, (*list)->len);
  EXPECT_NE(clients.find("name=tern-bus:b "), std::string::npos) << clients;
}

}  // namespace
}  // namespace tern::bus
