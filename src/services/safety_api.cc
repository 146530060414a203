#include "services/safety_api.h"

#include <spdlog/spdlog.h>

#include "base/base64.h"
#include "base/clock.h"
#include "base/ids.h"
#include "base/metrics.h"
#include "services/conversation_ids.h"
#include "services/http_replies.h"
#include "services/user_records.h"

namespace tern::services {
namespace json = boost::json;
namespace {

Counter& reports_filed = MetricsRegistry::global().counter("tern_reports_total", "abuse reports stored");

// A push provider name: 1-32 of [a-z0-9_-]. A token: 1-kMaxPushToken printable ASCII bytes.
bool valid_provider(std::string_view p) {
  if (p.empty() || p.size() > 32) return false;
  for (char c : p)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  return true;
}

bool valid_push_token(std::string_view t, size_t max) {
  if (t.empty() || t.size() > max) return false;
  for (char c : t)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

}  // namespace

SafetyApi::SafetyApi(ServiceContext& ctx, Blocks& blocks, PresencePrivacy& privacy)
    : ctx_(ctx),
      blocks_(blocks),
      privacy_(privacy),
      report_limiter_(ctx.options.report_rate_per_hour / 3600.0, ctx.options.report_burst, ctx.options.rate_limiter_keys,
                      {&ctx.store, "report"}),
      invite_limiter_(ctx.options.invite_rate_per_min / 60.0, ctx.options.invite_burst, ctx.options.rate_limiter_keys,
                      {&ctx.store, "invite"}) {
  if (auto last = ctx.store.last_report_id()) next_report_id_ = *last + 1;
}

bool SafetyApi::take_invites(const std::string& user, size_t n) {
  return invite_limiter_.take(user, mono_us(), static_cast<double>(n));
}

void SafetyApi::created_direct(const std::string& user, const std::string& conversation_id, const std::string& other,
                               std::function<void()> then) {
  if (privacy_.known_accepted(user, conversation_id)) return then();
  store::Batch batch;
  batch.add(store::PutUserRecord{user, records::accept(conversation_id), other});
  ctx_.committer.submit(std::move(batch), [this, user, conversation_id, other, then](const Result<void>& r) {
    if (r) {
      privacy_.accepted(user, conversation_id, other);
      // The other nodes may have read the creator's policy without it (on the conversation's
      // event, which comes first): they drop their copy, and answer subscriptions held for it.
      ctx_.bus.announce_user_changed(user);
    }
    then();  // the conversation exists either way; a lost acceptance only hides presence
  });
}

bool SafetyApi::handle(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply& reply) {
  static constexpr std::string_view kBlocks = "/v1/blocks/";
  const std::string& m = req.method;
  if (req.path == "/v1/blocks" && m == "GET") {
    list_blocks(me, std::move(reply));
    return true;
  }
  if (req.path.rfind(kBlocks, 0) == 0 && (m == "PUT" || m == "DELETE")) {
    change_block(me, req.path.substr(kBlocks.size()), m == "PUT", std::move(reply));
    return true;
  }
  if (req.path == "/v1/reports" && m == "POST") {
    report(me, req, std::move(reply));
    return true;
  }
  if (req.path == "/v1/privacy" && (m == "GET" || m == "PUT")) {
    privacy(me, req, std::move(reply));
    return true;
  }
  if (req.path == "/v1/devices/self/push" && (m == "PUT" || m == "POST" || m == "DELETE")) {
    push(me, req, std::move(reply));
    return true;
  }
  return false;
}

void SafetyApi::list_blocks(const DeviceRef& me, gateway::HttpReply reply) {
  auto l = blocks_.list(me.user);
  if (!l) return reply(error_response(l.error()));
  json::array a;
  for (const auto& u : *l) a.emplace_back(u);
  reply(json_response(200, json::object{{"blocked", std::move(a)}}));
}

void SafetyApi::change_block(const DeviceRef& me, const std::string& other, bool add, gateway::HttpReply reply) {
  if (!valid_user_id(other) || other == me.user)
    return reply(error_response(make_error(ErrorCode::kInvalidArgument, "invalid user")));
  if (add) {
    // Blocking a user who does not exist would confirm nothing either way; it is refused so
    // typos are seen (user names are public, as in wire-v1's registration).
    auto exists = ctx_.store.user_exists(other);
    if (!exists) return reply(error_response(exists.error()));
    if (!*exists) return reply(error_response(make_error(ErrorCode::kNotFound, "unknown user")));
  }
  auto done = [this, me, other, add, reply](Result<void> r) {
    if (!r) return reply(error_response(r.error()));
    spdlog::info("event={} user={} other={}", add ? "user_blocked" : "user_unblocked", me.user, other);
    // The other nodes drop their copy of the list (their sends withhold from now on).
    ctx_.bus.announce_user_changed(me.user);
    // The blocked user's presence subscriptions to the blocker end now.
    ctx_.presence.revalidate(me.user);
    ctx_.presence.revalidate(other);
    reply(gateway::HttpResponse{204, "", "application/json"});
  };
  if (add) blocks_.block(me.user, other, std::move(done));
  else blocks_.unblock(me.user, other, std::move(done));
}

void SafetyApi::report(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply) {
  if (ctx_.draining.load()) return reply(error_response(make_error(ErrorCode::kDraining, "server is shutting down")));
  // The attachment is base64: 4/3 of its bytes, plus the rest of the body.
  const size_t max_body = ctx_.options.max_report_bytes / 3 * 4 + 8 + kMaxReason * 6 + 1024;
  auto body = parse_json_object(req.body, max_body, ctx_.options.limits.max_json_depth);
  if (!body) return reply(error_response(body.error()));
  auto* conv = body->if_contains("conversation_id");
  auto* reason = body->if_contains("reason");
  auto* attachment = body->if_contains("attachment");
  if (!conv || !conv->is_string() || !reason || !reason->is_string() || (attachment && !attachment->is_string()))
    return reply(error_response(make_error(
        ErrorCode::kMalformed, "body must be {\"conversation_id\":…,\"reason\":…} with an optional \"attachment\" (base64)")));
  const std::string conv_id(conv->as_string());
  if (!valid_conversation_id(conv_id)) return reply(error_response(make_error(ErrorCode::kInvalidArgument, "invalid conversation_id")));
  if (reason->as_string().empty() || reason->as_string().size() > kMaxReason)
    return reply(error_response(make_error(ErrorCode::kInvalidArgument,
                                           "reason must be 1-" + std::to_string(kMaxReason) + " bytes")));
  if (attachment) {
    auto size = base64_decoded_size(attachment->as_string());
    if (!size) return reply(error_response(make_error(ErrorCode::kInvalidArgument, "attachment must be base64")));
    if (*size > ctx_.options.max_report_bytes)
      return reply(error_response(make_error(
          ErrorCode::kTooLarge, "attachment over " + std::to_string(ctx_.options.max_report_bytes) + " bytes")));
  }
  // Only a member (current or former) reports a conversation; others learn nothing from the id.
  auto c = ctx_.directory.conversation(conv_id);
  if (!c) return reply(error_response(c.error()));
  if (!*c || !find_member(**c, me.user)) return reply(error_response(conversation_access_error()));
  if (!report_limiter_.take(me.user, mono_us()))
    return reply(error_response(make_error(ErrorCode::kRateLimited, "too many reports; retry later")));

  // Several nodes count the ids in the store they share (each node's own counter would hand
  // out the same id twice, and one report would replace the other); one node counts here.
  auto shared_id = ctx_.store.next_report_id();
  if (!shared_id) return reply(error_response(shared_id.error()));
  const uint64_t id = *shared_id ? **shared_id : next_report_id_.fetch_add(1);
  json::array members;
  for (const auto& mem : (*c)->members) members.emplace_back(mem.user);
  json::object record{{"id", id},
                      {"ts", ctx_.bus.clock_ms()},
                      {"reporter", me.user},
                      {"reporter_device", me.device},
                      {"conversation_id", conv_id},
                      {"conversation_type", (*c)->type == store::ConvType::kGroup ? "group" : "direct"},
                      {"members", std::move(members)},
                      {"reason", reason->as_string()}};
  if (attachment) record["attachment"] = attachment->as_string();
  store::Batch batch;
  batch.add(store::PutReport{id, json::serialize(record)});
  ctx_.committer.submit(std::move(batch), [me, id, conv_id, reply](const Result<void>& r) {
    if (!r) return reply(error_response(r.error()));
    reports_filed.inc();
    spdlog::info("event=report_filed id={} reporter={} conversation={}", id, me.user, conv_id);
    reply(json_response(201, json::object{{"report_id", id}}));
  });
}

void SafetyApi::privacy(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply) {
  if (req.method == "GET") {
    auto v = privacy_.visibility(me.user);
    if (!v) return reply(error_response(v.error()));
    return reply(json_response(200, json::object{{"presence", visibility_name(*v)}}));
  }
  auto body = parse_json_object(req.body, ctx_.options.limits.max_http_body_bytes, ctx_.options.limits.max_json_depth);
  if (!body) return reply(error_response(body.error()));
  auto* p = body->if_contains("presence");
  PresenceVisibility v;
  if (!p || !p->is_string() || !parse_visibility(std::string(p->as_string()), v))
    return reply(error_response(
        make_error(ErrorCode::kInvalidArgument, "body must be {\"presence\":\"contacts\"|\"everyone\"|\"nobody\"}")));
  if (auto loaded = privacy_.load(me.user); !loaded) return reply(error_response(loaded.error()));
  store::Batch batch;
  batch.add(store::PutUserRecord{me.user, records::kPresence, visibility_name(v)});
  ctx_.committer.submit(std::move(batch), [this, me, v, reply](const Result<void>& r) {
    if (!r) return reply(error_response(r.error()));
    privacy_.set_cached_visibility(me.user, v);
    ctx_.bus.announce_user_changed(me.user);  // the other nodes drop their copy
    ctx_.presence.revalidate(me.user);
    spdlog::info("event=presence_visibility user={} visibility={}", me.user, visibility_name(v));
    reply(json_response(200, json::object{{"presence", visibility_name(v)}}));
  });
}

void SafetyApi::push(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply) {
  store::Batch batch;
  if (req.method == "DELETE") {
    batch.add(store::DeleteUserRecord{me.user, records::push(me.device)});
  } else {
    auto body = parse_json_object(req.body, ctx_.options.limits.max_http_body_bytes, ctx_.options.limits.max_json_depth);
    if (!body) return reply(error_response(body.error()));
    auto* provider = body->if_contains("provider");
    auto* token = body->if_contains("token");
    if (!provider || !provider->is_string() || !token || !token->is_string())
      return reply(error_response(make_error(ErrorCode::kMalformed, "body must be {\"provider\":…,\"token\":…}")));
    if (!valid_provider(provider->as_string()))
      return reply(error_response(make_error(ErrorCode::kInvalidArgument, "provider must be 1-32 of [a-z0-9_-]")));
    if (!valid_push_token(token->as_string(), kMaxPushToken))
      return reply(error_response(make_error(
          ErrorCode::kInvalidArgument, "token must be 1-" + std::to_string(kMaxPushToken) + " printable ASCII bytes")));
    batch.add(store::PutUserRecord{me.user, records::push(me.device),
                                   json::serialize(json::object{{"provider", provider->as_string()},
                                                                {"token", token->as_string()}})});
  }
  const bool remove = req.method == "DELETE";
  ctx_.committer.submit(std::move(batch), [this, me, remove, reply](const Result<void>& r) {
    if (!r) return reply(error_response(r.error()));
    spdlog::info("event={} user={} device={}", remove ? "push_unregistered" : "push_registered", me.user, me.device);
    reply(gateway::HttpResponse{204, "", "application/json"});
  });
}

}  // namespace tern::services
