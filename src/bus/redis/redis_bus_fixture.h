// What the RedisBus tests share (redis_bus_test.cc, redis_bus_presence_test.cc): a sample
// notification, an endpoint that records what it is told, a bounded wait, a request and its
// answer, and the fixture of two nodes on one real redis-server. Ownership: each test owns its
// fixture. Thread-safety: the Recorder is told from the buses' threads (its own mutex).
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "bus/redis/redis_bus.h"
#include "store/redis/testing/redis_server.h"

namespace tern::bus::bustest {

inline std::shared_ptr<const Notification> sample() {
  auto n = std::make_shared<Notification>();
  n->kind = Notification::Kind::kMessage;
  n->conversation_id = "g-1";
  n->seq = 0x0102030405060708ull;
  n->per_device = true;
  n->droppable = true;
  n->frame = std::make_shared<const std::string>(std::string("{\"x\":1}\0z", 9));
  n->origin = DeviceRef{"alice", 3};
  return n;
}

class Recorder final : public Endpoint {
 public:
  void notify(std::shared_ptr<const Notification> n) override {
    std::lock_guard lock(mu);
    seen.push_back(std::move(n));
  }
  void replaced() override { ++replaced_count; }
  void missed() override { ++missed_count; }
  std::atomic<int> replaced_count{0};
  std::atomic<int> missed_count{0};
  size_t count() {
    std::lock_guard lock(mu);
    return seen.size();
  }
  std::mutex mu;
  std::vector<std::shared_ptr<const Notification>> seen;
};

inline bool await(const std::function<bool()>& cond, std::chrono::milliseconds within = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// `from`'s request to `node` and its answer (an error after 5 s without one).
inline Result<std::string> ask(RedisBus& from, const std::string& node, const std::string& payload) {
  auto got = std::make_shared<std::promise<Result<std::string>>>();
  auto f = got->get_future();
  from.request(node, payload, [got](Result<std::string> r) { got->set_value(std::move(r)); });
  if (f.wait_for(std::chrono::seconds(5)) != std::future_status::ready)
    return make_error(ErrorCode::kInternal, "no answer within 5 s");
  return f.get();
}

// Two nodes (buses a and b, not started: sinks go in first) on one redis-server, which is
// started before the buses are built (member order).
class RedisBusNodes : public ::testing::Test {
 protected:
  struct StartedRedis {
    store::redis::testing::RedisServer server;
    bool ok = server.start().ok();
  };
  void SetUp() override { ASSERT_TRUE(redis_.ok); }
  static RedisBusOptions options(uint16_t port, const char* node) {
    RedisBusOptions o;
    o.address = store::redis::RedisAddress{"127.0.0.1", port};
    o.node_id = node;
    o.request_timeout = std::chrono::milliseconds(500);
    return o;
  }
  StartedRedis redis_;
  RedisBus a{options(redis_.server.port(), "a")}, b{options(redis_.server.port(), "b")};
};

}  // namespace tern::bus::bustest
