// KeyApi: the HTTP endpoints of the key directory (docs/protocol.md, "Key directory"):
//   PUT /v1/keys                  upload own keys (identity, registration id, signed prekey,
//                                 one-time prekeys); answers the own status
//   GET /v1/keys                  own status: one-time prekeys left, signed prekey ids
//   GET /v1/users/{user}/devices  a user's devices with their identity keys
//   GET /v1/keys/{user}           bundles of all the user's devices (one one-time prekey each)
//   GET /v1/keys/{user}/{device}  the bundle of one device
// JSON parsing and validation (exact key lengths, base64, bounded counts) and the per-requester
// rate limit of bundle fetches are here; the rules are KeyDirectory's. The caller (HttpApi) has
// authenticated the device already.
//
// Thread-safe (the rate limiter locks). Owned by HttpApi; borrows the context and directory.
#pragma once
#include <atomic>
#include <string>

#include "gateway/service_interface.h"
#include "services/key_directory.h"
#include "services/rate_limiter.h"
#include "services/service_options.h"

namespace tern::services {

class KeyApi {
 public:
  // While `draining`, uploads and bundle fetches (both write) get `draining`. The bundle fetch
  // limit's buckets are `shared_limits`' when given (rate_limiter.h).
  KeyApi(KeyDirectory* keys, const ServiceOptions& options, const std::atomic<bool>& draining,
         store::Store* shared_limits = nullptr);

  // True when the request is one of the key endpoints: it is then answered through `reply`.
  bool handle(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply& reply);

 private:
  void upload(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply);
  void bundles(const DeviceRef& me, const std::string& user, std::optional<uint32_t> device, gateway::HttpReply reply);

  KeyDirectory* const keys_;  // null: no key directory (service tests), every key endpoint 404s
  const ServiceOptions& options_;
  const std::atomic<bool>& draining_;
  KeyedRateLimiter fetch_limiter_;  // bundle fetches, by requesting user
};

}  // namespace tern::services
