// The HTTP endpoints of channels (docs/protocol.md §3.11): join, leave, an admin's
// subscriber changes, the owner's admin changes, and conversation info (GET
// /v1/conversations/{id}, for every type). Routing stays in HttpApi; this is the channel part
// of it, so that the HTTP file does not grow a feature per section.
// Joins are charged to the caller's conversation-creation bucket (--create-rate): each costs
// a commit, like a creation.
// Thread-safe (borrowed limiter locks); replies run on the channel's owning loop.
#pragma once
#include <string>


#include "gateway/service_interface.h"
#include "services/rate_limiter.h"
#include "services/service_context.h"

namespace tern::services {

class ChannelApi {
 public:
  ChannelApi(ServiceContext& ctx, KeyedRateLimiter& create_limiter) : ctx_(ctx), create_limiter_(create_limiter) {}

  void join(const DeviceRef& me, const std::string& id, gateway::HttpReply reply);
  void leave(const DeviceRef& me, const std::string& id, gateway::HttpReply reply);
  void change_subscribers(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                          gateway::HttpReply reply);
  void change_admins(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                     gateway::HttpReply reply);
  // GET /v1/conversations/{id}: any conversation the caller is in.
  void info(const DeviceRef& me, const std::string& id, gateway::HttpReply reply);

 private:
  ServiceContext& ctx_;
  KeyedRateLimiter& create_limiter_;
};

// "direct", "group" or "channel" (shared with HttpApi's conversation list).
const char* conversation_type_name(store::ConvType t);

}  // namespace tern::services
