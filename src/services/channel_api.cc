#include "services/channel_api.h"

#include <boost/json.hpp>

#include "base/clock.h"
#include "base/metrics.h"
#include "proto/frames.h"
#include "proto/http_shapes.h"
#include "services/conversation_ids.h"
#include "services/http_reply.h"

namespace tern::services {
namespace json = boost::json;

const char* conversation_type_name(store::ConvType t) {
  switch (t) {
    case store::ConvType::kGroup: return "group";
    case store::ConvType::kChannel: return "channel";
    case store::ConvType::kDirect: break;
  }
  return "direct";
}

namespace {

json::array admins_of(const store::Conversation& c) {
  json::array a;
  for (const auto& m : c.members)
    if (m.active() && m.admin) a.emplace_back(m.user);
  return a;
}

Error draining_error() { return make_error(ErrorCode::kDraining, "server is shutting down"); }

}  // namespace

void ChannelApi::join(const DeviceRef& me, const std::string& id, gateway::HttpReply reply) {
  if (ctx_.draining.load()) return reply(error_response(draining_error()));
  if (!create_limiter_.take(me.user, mono_us()))
    return reply(error_response(make_error(ErrorCode::kRateLimited, "too many joins and creations; retry later")));
  ctx_.sequencer.join_channel(me, id, [id, reply](Result<SubscriptionInfo> r) {
    if (!r) return reply(error_response(r.error()));
    reply(json_response(200, json::object{{"conversation_id", id}, {"joined_seq", r->joined_seq},
                                     {"subscribers", r->subscribers}}));
  });
}

void ChannelApi::leave(const DeviceRef& me, const std::string& id, gateway::HttpReply reply) {
  if (ctx_.draining.load()) return reply(error_response(draining_error()));
  ctx_.sequencer.leave_channel(me, id, [reply](Result<uint64_t> r) {
    if (!r) return reply(error_response(r.error()));
    reply(json_response(200, json::object{{"left", true}, {"subscribers", *r}}));
  });
}

void ChannelApi::change_subscribers(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                                    gateway::HttpReply reply) {
  if (ctx_.draining.load()) return reply(error_response(draining_error()));
  auto r = proto::parse_members(req.body, ctx_.options.limits);
  if (!r) return reply(error_response(r.error()));
  ctx_.sequencer.change_subscribers(me, id, std::move(*r), [reply](Result<uint64_t> n) {
    if (!n) return reply(error_response(n.error()));
    reply(json_response(200, json::object{{"subscribers", *n}}));
  });
}

void ChannelApi::change_admins(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                               gateway::HttpReply reply) {
  if (ctx_.draining.load()) return reply(error_response(draining_error()));
  auto r = proto::parse_members(req.body, ctx_.options.limits);
  if (!r) return reply(error_response(r.error()));
  ctx_.sequencer.change_admins(me, id, std::move(*r), [reply](Result<std::vector<std::string>> admins) {
    if (!admins) return reply(error_response(admins.error()));
    json::array a;
    for (const auto& u : *admins) a.emplace_back(u);
    reply(json_response(200, json::object{{"admins", std::move(a)}}));
  });
}

void ChannelApi::info(const DeviceRef& me, const std::string& id, gateway::HttpReply reply) {
  auto conv = ctx_.directory.conversation(id);
  if (!conv) return reply(error_response(conv.error()));
  auto member = *conv ? ctx_.directory.member(**conv, me.user) : Result<std::optional<store::Member>>(std::nullopt);
  if (!member) return reply(error_response(member.error()));
  // Unknown and not-a-member get one answer: an id tells a stranger nothing.
  if (!*member || !(*member)->active()) return reply(error_response(conversation_access_error()));
  const store::Conversation& c = **conv;
  if (c.type != store::ConvType::kChannel) {
    auto head = ctx_.store.head(id);
    if (!head) return reply(error_response(head.error()));
    json::array members;
    for (const auto& m : c.members)
      if (m.active()) members.emplace_back(m.user);
    const char* type = id.starts_with("s-") ? "self" : conversation_type_name(c.type);
    json::object o{{"conversation_id", id}, {"type", type}, {"name", c.name},
                   {"head", *head}, {"members", std::move(members)}, {"admins", admins_of(c)},
                   {"joined_seq", (*member)->joined_seq}, {"fanout_on_read", c.fanout_on_read}};
    return reply(json_response(200, o));
  }
  const Seq joined = (*member)->joined_seq;
  // The committed head (the loop's may be in flight), read here, on the request's thread (a
  // reader thread in Redis mode), not in the answer below, which runs on the channel's loop.
  auto head = ctx_.store.head(id);
  if (!head) return reply(error_response(head.error()));
  ctx_.sequencer.channel_info(id, [reply, joined, head = *head](Result<ChannelInfo> r) {
    if (!r) return reply(error_response(r.error()));
    const store::Conversation& ch = *r->conversation;
    json::array views;
    for (const auto& [seq, n] : r->views) views.emplace_back(json::object{{"seq", seq}, {"views", n}});
    json::object o{{"conversation_id", ch.id}, {"type", "channel"}, {"name", ch.name}, {"public", ch.is_public},
                   {"owner", ch.members.empty() ? std::string() : ch.members.front().user}, {"admins", admins_of(ch)},
                   {"subscribers", ch.subscribers}, {"head", head}, {"joined_seq", joined},
                   {"views", std::move(views)}};
    reply(json_response(200, o));
  });
}

}  // namespace tern::services
