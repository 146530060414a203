// The HTTP endpoints of wire-v1 and Tern's additions (device link codes, /metrics).
// Routing, authentication and JSON answers; the work is done by the services.
// Abuse bounds kept here: registrations per source address (--register-rate per minute,
// --register-burst), conversation creations per user (--create-rate per second,
// --create-burst) and in total (--max-conversations-per-user), a paged conversation list.
// Thread-safe: the rate limiters lock, backfill pages queue per loop (page_builds.h); replies may run on the writer thread (after a
// commit), the presence loader thread or the calling thread.
#pragma once
#include <string>

#include "gateway/service_interface.h"
#include "services/channel_api.h"
#include "services/key_api.h"
#include "services/page_builds.h"
#include "services/rate_limiter.h"
#include "services/service_context.h"

namespace tern::services {

class HttpApi {
 public:
  static constexpr size_t kListPage = 100;      // GET /v1/conversations default page
  static constexpr size_t kListPageMax = 1000;  // ?limit= is clamped to this

  HttpApi(ServiceContext& ctx, std::string metrics_token_hash)
      : ctx_(ctx),
        metrics_token_hash_(std::move(metrics_token_hash)),
        register_limiter_(ctx.options.register_rate_per_min / 60.0, ctx.options.register_burst,
                          ctx.options.rate_limiter_keys, {&ctx.store, "register"}),
        create_limiter_(ctx.options.create_rate_per_sec, ctx.options.create_burst, ctx.options.rate_limiter_keys,
                        {&ctx.store, "create"}),
        channels_(ctx, create_limiter_),
        keys_(ctx.keys, ctx.options, ctx.draining, &ctx.store),
        pages_(ctx.loops.size()) {}

  void handle(gateway::HttpRequest request, gateway::HttpReply reply);

 private:
  void register_user(const gateway::HttpRequest& req, gateway::HttpReply reply);
  void link_device(const gateway::HttpRequest& req, gateway::HttpReply reply);
  void create_conversation(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply);
  void list_conversations(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply);
  void change_members(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                      gateway::HttpReply reply);
  void backfill(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req, gateway::HttpReply reply);
  // The page itself: its messages read and rendered (in its turn, page_builds.h).
  void read_page(const DeviceRef& me, const std::string& id, Seq from, size_t cap, const gateway::HttpReply& reply);
  void metrics(const gateway::HttpRequest& req, gateway::HttpReply reply);
  void set_timer(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req, gateway::HttpReply reply);

  ServiceContext& ctx_;
  const std::string metrics_token_hash_;  // empty: any device token may read /metrics
  KeyedRateLimiter register_limiter_;     // by source address
  KeyedRateLimiter create_limiter_;       // by user
  ChannelApi channels_;                   // channel endpoints and conversation info
  KeyApi keys_;                           // the key directory's endpoints
  PageBuilds pages_;                      // backfill pages, one at a time per loop
};

}  // namespace tern::services
