// The admin endpoint (issue 12): what an operator needs, on its own listener (ternd
// --admin-listen, keep it on loopback) and always behind the admin token
// (--admin-token-file; `Authorization: Bearer <token>`, compared by hash in constant time).
// Routes (JSON; docs/protocol.md §16):
//   GET    /admin/v1/users?after=&limit=         list users
//   GET    /admin/v1/users/{user}                devices (online, push), last seen, flags, blocks
//   POST   /admin/v1/users/{user}/suspend        refuse its tokens, disconnect its devices now
//   POST   /admin/v1/users/{user}/unsuspend
//   DELETE /admin/v1/users/{user}                close the account: tokens revoked, devices
//                                                disconnected, suspended for good (name kept)
//   DELETE /admin/v1/users/{user}/devices/{n}    revoke one device (token gone, disconnected)
//   GET    /admin/v1/reports?after=&limit=       abuse reports, oldest first
//   GET    /admin/v1/stats                       live figures
//   GET    /admin/v1/nodes                       the nodes sharing the store, as this node sees them
// Every call is logged (event=admin_action: who = admin key id + address, what, when; never
// message content or report bodies); refused calls too (event=admin_refused).
//
// Implements ServiceInterface so it runs on a gateway Listener of its own; WebSockets are
// refused. Thread-safe (the stats sampler locks).
#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include <boost/json.hpp>

#include "gateway/service_interface.h"
#include "services/service_context.h"

namespace tern::services {

class AdminApi final : public gateway::ServiceInterface {
 public:
  // `queues` adds extra queue figures (name → length) to /admin/v1/stats.
  AdminApi(ServiceContext& ctx, const std::string& admin_token,
           std::function<void(boost::json::object&)> queues = nullptr);

  void handle_http(gateway::HttpRequest request, gateway::HttpReply reply) override;
  void authenticate(const std::string& token, AuthDone done) override;
  std::shared_ptr<gateway::FrameHandler> open(std::shared_ptr<gateway::Connection> connection, DeviceRef device) override;

 private:
  // The routes; on the caller's thread (a reader thread in Redis mode, see handle_http).
  void handle(gateway::HttpRequest request, gateway::HttpReply reply);
  void list_users(const gateway::HttpRequest& req, gateway::HttpReply reply);
  void user(const std::string& name, gateway::HttpReply reply);
  void suspend(const std::string& name, bool on, const std::string& who, gateway::HttpReply reply);
  void remove(const std::string& name, const std::string& who, gateway::HttpReply reply);
  void revoke(const std::string& name, uint32_t device, const std::string& who, gateway::HttpReply reply);
  void reports(const gateway::HttpRequest& req, gateway::HttpReply reply);
  void stats(gateway::HttpReply reply);
  void nodes(gateway::HttpReply reply);
  void disconnect_all(const std::string& name);

  ServiceContext& ctx_;
  const std::string token_hash_;
  const std::string key_id_;  // first 8 hex digits of the token's hash: names the admin in logs
  std::function<void(boost::json::object&)> queues_;
  std::mutex mu_;
  int64_t last_stats_us_ = 0;
  uint64_t last_messages_ = 0;
  uint64_t last_commits_ = 0;
  double last_commit_sum_ = 0;
};

}  // namespace tern::services
