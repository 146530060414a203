// The HTTP endpoints of wire-v1 and Tern's additions (device link codes, /metrics).
// Routing, authentication and JSON answers; the work is done by the services.
// Thread-safe: stateless apart from the borrowed services; replies may run on the writer
// thread (after a commit) or the calling thread.
#pragma once
#include <string>

#include "gateway/service_interface.h"
#include "services/service_context.h"

namespace tern::services {

class HttpApi {
 public:
  HttpApi(ServiceContext& ctx, std::string metrics_token_hash)
      : ctx_(ctx), metrics_token_hash_(std::move(metrics_token_hash)) {}

  void handle(gateway::HttpRequest request, gateway::HttpReply reply);

 private:
  void register_user(const gateway::HttpRequest& req, gateway::HttpReply reply);
  void link_device(const gateway::HttpRequest& req, gateway::HttpReply reply);
  void create_conversation(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply);
  void list_conversations(const DeviceRef& me, gateway::HttpReply reply);
  void change_members(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                      gateway::HttpReply reply);
  void backfill(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req, gateway::HttpReply reply);
  void metrics(const gateway::HttpRequest& req, gateway::HttpReply reply);

  ServiceContext& ctx_;
  const std::string metrics_token_hash_;  // empty: any device token may read /metrics
};

}  // namespace tern::services
