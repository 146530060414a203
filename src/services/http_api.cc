#include "services/http_api.h"

#include <algorithm>
#include <charconv>

#include <boost/json.hpp>

#include "base/clock.h"
#include "base/metrics.h"
#include "proto/frames.h"
#include "proto/http_shapes.h"
#include "services/channel_api.h"
#include "services/conversation_ids.h"
#include "services/http_reply.h"
#include "services/media.h"
#include "services/read_sizing.h"
#include "services/http_replies.h"
#include "services/safety_api.h"
#include "services/token.h"

namespace tern::services {
namespace json = boost::json;
namespace {

gateway::HttpResponse credentials_response(const Credentials& c) {
  return json_response(201, json::object{{"user", c.user}, {"device", c.device}, {"token", c.token}});
}

// Parses an optional non-negative integer query parameter.
Result<uint64_t> uint_param(const std::string& query, std::string_view name, uint64_t fallback) {
  const std::string v = proto::query_param(query, name);
  if (v.empty()) return fallback;
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size())
    return make_error(ErrorCode::kMalformed, std::string(name) + " must be a non-negative integer");
  return n;
}

// A request body as JSON, depth-limited; null when it does not parse.
json::value parse_json_body(const std::string& body, size_t max_depth) {
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = max_depth;
  json::value v = json::parse(body, ec, {}, opts);
  return ec ? json::value() : v;
}

// Splits "/v1/conversations/{id}/{rest}" into id and rest.
bool split_conversation_path(const std::string& path, std::string& id, std::string& rest) {
  static constexpr std::string_view prefix = "/v1/conversations/";
  if (path.rfind(prefix, 0) != 0) return false;
  const auto tail = std::string_view(path).substr(prefix.size());
  const auto slash = tail.find('/');
  if (slash == std::string_view::npos) return false;
  id = std::string(tail.substr(0, slash));
  rest = std::string(tail.substr(slash + 1));
  return valid_conversation_id(id);
}

// "/v1/conversations/{id}" alone (no further segment).
bool conversation_only_path(const std::string& path, std::string& id) {
  static constexpr std::string_view prefix = "/v1/conversations/";
  if (path.rfind(prefix, 0) != 0) return false;
  id = path.substr(prefix.size());
  return id.find('/') == std::string::npos && valid_conversation_id(id);
}

// A non-member learns nothing from an id: "unknown conversation" reads as "not a member".
Error hide_existence(Error e) {
  if (e.code == ErrorCode::kNotFound && e.message == "unknown conversation") return conversation_access_error();
  return e;
}

}  // namespace

void HttpApi::handle(gateway::HttpRequest req, gateway::HttpReply reply) {
  static auto& requests = MetricsRegistry::global().counter("tern_http_api_requests_total", "HTTP API requests");
  requests.inc();
  const std::string& m = req.method;
  const std::string& path = req.path;

  if (path == "/healthz") {
    if (m != "GET") return reply(error_response(make_error(ErrorCode::kNotFound, "no such endpoint")));
    if (ctx_.draining.load())
      return reply(json_response(503, json::object{{"status", "draining"}}));
    return reply(json_response(200, json::object{{"status", "ok"}}));
  }
  if (path == "/metrics" && m == "GET") return metrics(req, std::move(reply));
  if (path == "/v1/users" && m == "POST") return register_user(req, std::move(reply));
  if (path == "/v1/devices/link" && m == "POST") return link_device(req, std::move(reply));

  // Everything else needs a device token.
  auto me = ctx_.accounts.authenticate(req.bearer_token);
  if (!me) return reply(error_response(me.error()));
  if (ctx_.safety && ctx_.safety->handle(*me, req, reply)) return;  // issue 12 routes (safety_api.h)

  if (path == "/v1/devices" && m == "POST") {
    if (ctx_.draining.load()) return reply(error_response(make_error(ErrorCode::kDraining, "server is shutting down")));
    return ctx_.accounts.add_device(me->user, [reply](Result<Credentials> r) {
      reply(r ? credentials_response(*r) : error_response(r.error()));
    });
  }
  if (path == "/v1/devices/link-codes" && m == "POST") {
    auto code = ctx_.accounts.create_link_code(*me);
    if (!code) return reply(error_response(code.error()));
    return reply(json_response(201, json::object{{"code", code->code}, {"expires_at", code->expires_at}}));
  }
  if (path == "/v1/conversations") {
    if (m == "POST") return create_conversation(*me, req, std::move(reply));
    if (m == "GET") return list_conversations(*me, req, std::move(reply));
  }
  if (keys_.handle(*me, req, reply)) return;
  std::string id, rest;
  if (split_conversation_path(path, id, rest)) {
    if (rest == "members" && m == "POST") return change_members(*me, id, req, std::move(reply));
    if (rest == "messages" && m == "GET") return backfill(*me, id, req, std::move(reply));
    if (rest == "join" && m == "POST") return channels_.join(*me, id, std::move(reply));
    if (rest == "leave" && m == "POST") return channels_.leave(*me, id, std::move(reply));
    if (rest == "admins" && m == "POST") return channels_.change_admins(*me, id, req, std::move(reply));
    if (rest == "timer" && m == "PUT") return set_timer(*me, id, req, std::move(reply));
  }
  if (m == "GET" && conversation_only_path(path, id)) return channels_.info(*me, id, std::move(reply));
  if (path.rfind("/v1/media", 0) == 0 && ctx_.media && ctx_.media->handle(*me, req, reply)) return;
  reply(error_response(make_error(ErrorCode::kNotFound, "no such endpoint")));
}

void HttpApi::register_user(const gateway::HttpRequest& req, gateway::HttpReply reply) {
  if (ctx_.draining.load()) return reply(error_response(make_error(ErrorCode::kDraining, "server is shutting down")));
  auto r = proto::parse_register(req.body, ctx_.options.limits);
  if (!r) return reply(error_response(r.error()));
  if (!register_limiter_.take(req.remote_address, mono_us()))
    return reply(error_response(make_error(ErrorCode::kRateLimited, "too many registrations from this address; retry later")));
  ctx_.accounts.register_user(r->user, [reply](Result<Credentials> c) {
    reply(c ? credentials_response(*c) : error_response(c.error()));
  });
}

void HttpApi::link_device(const gateway::HttpRequest& req, gateway::HttpReply reply) {
  if (req.body.size() > ctx_.options.limits.max_http_body_bytes)
    return reply(error_response(make_error(ErrorCode::kTooLarge, "request body too large")));
  const json::value v = parse_json_body(req.body, ctx_.options.limits.max_json_depth);
  const json::object* o = v.if_object();
  const json::value* user = o ? o->if_contains("user") : nullptr;
  const json::value* code = o ? o->if_contains("code") : nullptr;
  if (!user || !user->is_string() || !code || !code->is_string())
    return reply(error_response(make_error(ErrorCode::kMalformed, "body must be {\"user\":…,\"code\":…}")));
  if (!valid_user_id(user->as_string()) || code->as_string().size() > 16)
    return reply(error_response(make_error(ErrorCode::kInvalidArgument, "invalid user or code")));
  ctx_.accounts.redeem_link_code(std::string(user->as_string()), std::string(code->as_string()), req.remote_address,
                                 [reply](Result<Credentials> c) {
                                   reply(c ? credentials_response(*c) : error_response(c.error()));
                                 });
}

void HttpApi::create_conversation(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply) {
  if (ctx_.draining.load()) return reply(error_response(make_error(ErrorCode::kDraining, "server is shutting down")));
  auto r = proto::parse_create_conversation(req.body, ctx_.options.limits);
  if (!r) return reply(error_response(r.error()));
  if (!r->group && !r->self && r->members.front() == me.user)
    return reply(error_response(make_error(ErrorCode::kInvalidArgument, "a direct conversation needs another user")));
  if (!create_limiter_.take(me.user, mono_us()))
    return reply(error_response(make_error(ErrorCode::kRateLimited, "too many conversations created; retry later")));
  const size_t invites = r->group ? r->members.size() - std::count(r->members.begin(), r->members.end(), me.user) : 0;
  if (invites && ctx_.safety && !ctx_.safety->take_invites(me.user, invites))
    return reply(error_response(make_error(ErrorCode::kRateLimited, "too many group invites; retry later")));
  // The total is checked against the presence contact index (loaded off the I/O thread when
  // needed). Concurrent creations may pass together: the cap can be exceeded by at most the
  // creation burst.
  const std::string direct_with = r->group || r->self ? std::string() : r->members.front();
  auto request = std::make_shared<proto::CreateConversationRequest>(std::move(*r));
  ctx_.presence.conversation_count(me.user, [this, me, request, reply, direct_with](Result<size_t> n) {
    if (!n) return reply(error_response(n.error()));
    const size_t cap = ctx_.options.max_conversations_per_user;
    if (*n >= cap)
      return reply(error_response(
          make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(cap) + " conversations per user")));
    ctx_.sequencer.create_conversation(me, std::move(*request), [this, me, direct_with, reply](Result<ConversationInfo> c) {
      if (!c) return reply(error_response(c.error()));
      auto answer = json_response(c->created ? 201 : 200, json::object{{"conversation_id", c->conversation_id}});
      if (direct_with.empty() || !ctx_.safety) return reply(std::move(answer));
      ctx_.safety->created_direct(me.user, c->conversation_id, direct_with, [reply, answer] { reply(answer); });
    });
  });
}

// Paged by conversation id: ?limit= (default kListPage, clamped to 1…kListPageMax) and
// ?after=<conversation id>; `next` (the last id of the page) is present when more follow.
void HttpApi::list_conversations(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply) {
  auto limit = uint_param(req.query, "limit", kListPage);
  if (!limit) return reply(error_response(limit.error()));
  const size_t page = std::clamp<uint64_t>(*limit, 1, kListPageMax);
  const std::string after = proto::query_param(req.query, "after");
  auto convs = ctx_.store.user_conversations(me.user);
  if (!convs) return reply(error_response(convs.error()));
  std::vector<const store::UserConversation*> rows;
  for (const auto& uc : *convs)
    if (uc.left_seq == 0 && uc.conversation_id > after && !uc.conversation_id.starts_with("s-"))  // self: not listed
      rows.push_back(&uc);
  std::sort(rows.begin(), rows.end(),
            [](const auto* a, const auto* b) { return a->conversation_id < b->conversation_id; });
  json::array out;
  std::string next;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (out.size() == page) {
      next = json::value_to<std::string>(out.back().as_object().at("conversation_id"));
      break;
    }
    const auto& uc = *rows[i];
    auto c = ctx_.directory.conversation(uc.conversation_id);
    if (!c || !*c) continue;
    auto head = ctx_.store.head(uc.conversation_id);
    if ((*c)->type == store::ConvType::kChannel) {  // its row is the subscription
      json::array admins;
      for (const auto& mem : (*c)->members)
        if (mem.active() && mem.admin) admins.emplace_back(mem.user);
      out.emplace_back(json::object{{"conversation_id", uc.conversation_id}, {"type", "channel"},
                                    {"head", head ? *head : 0}, {"joined_seq", uc.joined_seq},
                                    {"name", (*c)->name}, {"public", (*c)->is_public},
                                    {"subscribers", (*c)->subscribers}, {"admins", std::move(admins)}});
      continue;
    }
    if (!is_active_member(**c, me.user)) continue;
    json::array members;
    for (const auto& mem : (*c)->members)
      if (mem.active()) members.emplace_back(mem.user);
    json::object item{{"conversation_id", uc.conversation_id}, {"type", conversation_type_name((*c)->type)},
                      {"head", head ? *head : 0}, {"members", std::move(members)},
                      {"joined_seq", find_member(**c, me.user)->joined_seq}};
    if ((*c)->type == store::ConvType::kGroup) item["name"] = (*c)->name;
    out.emplace_back(std::move(item));
  }
  json::object answer{{"conversations", std::move(out)}};
  if (!next.empty()) answer["next"] = next;
  reply(json_response(200, answer));
}

void HttpApi::change_members(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                             gateway::HttpReply reply) {
  if (ctx_.draining.load()) return reply(error_response(make_error(ErrorCode::kDraining, "server is shutting down")));
  if (auto c = ctx_.directory.conversation(id); c && *c && (*c)->type == store::ConvType::kChannel)
    return channels_.change_subscribers(me, id, req, std::move(reply));
  auto r = proto::parse_members(req.body, ctx_.options.limits);
  if (!r) return reply(error_response(r.error()));
  if (!r->add.empty() && ctx_.safety && !ctx_.safety->take_invites(me.user, r->add.size()))
    return reply(error_response(make_error(ErrorCode::kRateLimited, "too many group invites; retry later")));
  ctx_.sequencer.change_members(me, id, std::move(*r), [reply](Result<std::vector<std::string>> members) {
    if (!members) return reply(error_response(hide_existence(members.error())));
    json::array a;
    for (const auto& u : *members) a.emplace_back(u);
    reply(json_response(200, json::object{{"members", std::move(a)}}));
  });
}

void HttpApi::backfill(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                       gateway::HttpReply reply) {
  auto after = uint_param(req.query, "after_seq", 0);
  if (!after) return reply(error_response(after.error()));
  auto limit = uint_param(req.query, "limit", ctx_.options.limits.max_page);
  if (!limit) return reply(error_response(limit.error()));
  const size_t cap = std::min<uint64_t>(std::max<uint64_t>(*limit, 1), ctx_.options.limits.max_page);
  auto conv = ctx_.directory.conversation(id);
  if (!conv) return reply(error_response(conv.error()));
  // Unknown and not-a-member get the same answer: an id tells a non-member nothing.
  auto member = *conv ? ctx_.directory.member(**conv, me.user) : Result<std::optional<store::Member>>(std::nullopt);
  if (!member) return reply(error_response(member.error()));
  if (!*member || !(*member)->active()) return reply(error_response(conversation_access_error()));
  const Seq from = std::max<Seq>(*after, (*member)->joined_seq - 1);
  // One page of a loop read and rendered at a time (page_builds.h): pages in fibers would
  // otherwise be held side by side before the gateway's budget counts any of them.
  auto build = [this, me, id, from, cap, reply] { read_page(me, id, from, cap, reply); };
  if (!pages_.run(ctx_.loops.thread_loop(), std::move(build)))
    reply(error_response(make_error(ErrorCode::kOverloaded, "too many backfills waiting; retry")));
}

// The page is read in chunks of about kChunkBytes (read_sizing.h; the first, of unknown size,
// kFirstChunk messages): with reads in fibers (Redis) each chunk is one round trip, between which the
// loop and Redis serve everyone else, and each is rendered and dropped before the next. Read
// whole, a page of 100 messages of 60 KiB was one 6 MB reply that held Redis, and then the
// loop while rendered, for as long as it took: a probe's sends waited up to 70-90 ms behind
// twenty such pages on a busy machine (AdversarialGateway.UnreadBackfillResponsesAreBounded
// on Redis). A page of small messages is still one read after the first.
void HttpApi::read_page(const DeviceRef& me, const std::string& id, Seq from, size_t cap,
                        const gateway::HttpReply& reply) {
  constexpr size_t kFirstChunk = 16;
  constexpr size_t kChunkBytes = 1 << 20;
  const int64_t now = ctx_.bus.clock_ms();  // expiries are on the shared clock
  std::string body = R"({"messages":[)";
  bool first = true;
  size_t read = 0;
  for (size_t want = messages_for(kChunkBytes, 0, kFirstChunk, cap); want > 0;) {
    auto messages = ctx_.store.read_messages(id, from, want);
    if (!messages) return reply(error_response(messages.error()));
    for (const auto& m : *messages) {
      auto meta = proto::stored_meta(m.frame);
      const bool expired = meta && meta->expires_at && *meta->expires_at <= now;
      auto frame = expired ? proto::render_expired(m.frame) : proto::render_message_for(m.frame, me);
      if (!frame) continue;
      if (!first) body += ',';
      first = false;
      body += *frame;
    }
    read += messages->size();
    if (messages->size() < want || read >= cap) break;  // the log ends here, or the page is full
    from = messages->back().seq;
    want = messages_for(kChunkBytes, mean_frame_bytes(*messages), kFirstChunk, cap - read);
  }
  auto head = ctx_.store.head(id);
  if (!head) return reply(error_response(head.error()));
  body += R"(],"head":)" + std::to_string(*head) + "}";
  reply(gateway::HttpResponse{200, std::move(body), "application/json"});
}

void HttpApi::set_timer(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                        gateway::HttpReply reply) {
  if (ctx_.draining.load()) return reply(error_response(make_error(ErrorCode::kDraining, "server is shutting down")));
  const json::value v = parse_json_body(req.body, ctx_.options.limits.max_json_depth);
  const json::object* o = v.if_object();
  const json::value* seconds = o ? o->if_contains("seconds") : nullptr;
  if (!seconds || !seconds->is_int64())
    return reply(error_response(make_error(ErrorCode::kMalformed, "body must be {\"seconds\":<0 = off, or 1..max ttl>}")));
  const int64_t n = seconds->as_int64();
  if (n < 0 || n > ctx_.options.limits.max_ttl_seconds)
    return reply(error_response(make_error(
        ErrorCode::kInvalidArgument, "seconds must be 0 (off) or 1.." + std::to_string(ctx_.options.limits.max_ttl_seconds))));
  ctx_.sequencer.set_timer(me, id, n, [reply, id](Result<int64_t> r) {
    if (!r) return reply(error_response(hide_existence(r.error())));
    reply(json_response(200, json::object{{"conversation_id", id}, {"seconds", *r}}));
  });
}

void HttpApi::metrics(const gateway::HttpRequest& req, gateway::HttpReply reply) {
  const bool allowed = metrics_token_hash_.empty() ? ctx_.accounts.authenticate(req.bearer_token).ok()
                                                   : hash_token(req.bearer_token) == metrics_token_hash_;
  if (!allowed) return reply(error_response(make_error(ErrorCode::kUnauthorized, "missing or invalid token")));
  reply(gateway::HttpResponse{200, MetricsRegistry::global().render_prometheus(), "text/plain; version=0.0.4"});
}

}  // namespace tern::services
