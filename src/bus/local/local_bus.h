// In-process Bus: a sharded map device → endpoint. Lookups take one shard's mutex only
// for the map access; notify() runs outside the lock. Thread-safe; owned by the server.
#pragma once
#include <array>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

#include "bus/bus.h"

namespace tern::bus {

class LocalBus final : public Bus {
 public:
  LocalBus() = default;
  // `clock_us`: the clock this node's messages are timed by (Bus::clock_us); tests set a skewed
  // one. Default: the system clock.
  explicit LocalBus(std::function<int64_t()> clock_us) : clock_us_(std::move(clock_us)) {}
  size_t attach(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint) override;
  // The same; `added`: no endpoint of the device was attached (one that was is replaced()).
  size_t attach(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint, bool& added);
  void attach_async(const DeviceRef& device, std::shared_ptr<Endpoint> endpoint, Counted counted) override;
  size_t detach(const DeviceRef& device, const Endpoint* endpoint) override;
  bool publish(const DeviceRef& device, const std::shared_ptr<const Notification>& n) override;
  void disconnect(const DeviceRef& device) override;
  // Tells `endpoint` replaced() if it is still the device's current one (a newer connection
  // of the device on another node: RedisBus); false if it is not.
  bool replace(const DeviceRef& device, const Endpoint* endpoint);
  // Tells the device's endpoint missed(), if one is attached.
  void missed(const DeviceRef& device);
  void publish_user(const std::string& user, const std::shared_ptr<const Notification>& n) override;
  using Bus::online;
  bool online(const std::string& user, bool* reported_offline) override;
  int64_t clock_us() const override { return clock_us_ ? clock_us_() : tern::wall_us(); }

 private:
  std::shared_ptr<Endpoint> find(const DeviceRef& device);
  // Shard by user so that all of a user's devices live in one shard.
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::map<uint32_t, std::weak_ptr<Endpoint>>> users;
  };
  Shard& shard(const std::string& user);
  static constexpr size_t kShards = 64;
  std::array<Shard, kShards> shards_;
  std::function<int64_t()> clock_us_;
};

}  // namespace tern::bus
