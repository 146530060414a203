// The HTTP endpoints of issue 12 for signed-in devices (docs/protocol.md §"Safety and
// privacy"): blocks (GET /v1/blocks, PUT/DELETE /v1/blocks/{user}), abuse reports
// (POST /v1/reports), the presence setting (GET/PUT /v1/privacy) and push registration
// (PUT/DELETE /v1/devices/self/push). HttpApi hands it every authenticated request first.
//
// Bounds: blocks per user (Blocks::kMaxPerUser); reports per user (--report-rate per hour,
// --report-burst), a report's reason (kMaxReason bytes) and attachment (--max-report-bytes,
// base64 of bytes the reporter's client encrypted to the operator's report key: stored
// opaque, never read); group invites per user (--invite-rate per minute, --invite-burst, one
// token per invited user), checked by HttpApi's member change through take_invites().
// Every action is logged by event name, user and ids only (never a reason or attachment).
//
// Thread-safe: rate limiters lock; replies run on the committer's completion thread or here.
#pragma once
#include <atomic>
#include <functional>
#include <string>

#include "gateway/service_interface.h"
#include "services/blocks.h"
#include "services/presence_privacy.h"
#include "services/rate_limiter.h"
#include "services/service_context.h"

namespace tern::services {

class SafetyApi {
 public:
  static constexpr size_t kMaxReason = 1000;
  static constexpr size_t kMaxPushToken = 4096;

  SafetyApi(ServiceContext& ctx, Blocks& blocks, PresencePrivacy& privacy);

  // Handles the request if it is one of this API's routes (then returns true, and `reply` has
  // been or will be called); false leaves it to the caller.
  bool handle(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply& reply);
  // Charges `n` group invites to the user; false: rate_limited.
  bool take_invites(const std::string& user, size_t n);
  // The creator of a direct conversation accepts it (presence consent); `then` runs once the
  // acceptance is committed (or at once when already known), so the creation's answer follows it.
  void created_direct(const std::string& user, const std::string& conversation_id, const std::string& other,
                      std::function<void()> then);

 private:
  void change_block(const DeviceRef& me, const std::string& other, bool add, gateway::HttpReply reply);
  void list_blocks(const DeviceRef& me, gateway::HttpReply reply);
  void report(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply);
  void privacy(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply);
  void push(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply);

  ServiceContext& ctx_;
  Blocks& blocks_;
  PresencePrivacy& privacy_;
  KeyedRateLimiter report_limiter_;
  KeyedRateLimiter invite_limiter_;
  std::atomic<uint64_t> next_report_id_{1};  // unused on a store that counts for the nodes (next_report_id)
};

}  // namespace tern::services
