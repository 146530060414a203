#include "proto/server_frames.h"

#include <boost/json.hpp>

namespace tern::proto {
namespace json = boost::json;
namespace {

std::string str(const json::object& o, std::string_view k) {
  const auto* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}
uint64_t num(const json::object& o, std::string_view k) {
  const auto* v = o.if_contains(k);
  if (!v) return 0;
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64()) return static_cast<uint64_t>(v->as_int64());
  return 0;
}
std::vector<std::string> strings(const json::object& o, std::string_view k) {
  std::vector<std::string> out;
  if (const auto* v = o.if_contains(k); v && v->is_array())
    for (const auto& e : v->as_array())
      if (e.is_string()) out.emplace_back(e.as_string());
  return out;
}

}  // namespace

Result<ServerFrame> parse_server_frame(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return make_error(ErrorCode::kMalformed, "server frame is not a JSON object");
  const auto& o = v.as_object();
  const std::string type = str(o, "type");
  if (type == "message") {
    MessageEvent m{str(o, "conversation_id"), num(o, "seq"), str(o, "sender"),
                   static_cast<uint32_t>(num(o, "sender_device")), static_cast<int64_t>(num(o, "ts")),
                   str(o, "body"), std::nullopt, std::nullopt, std::nullopt};
    if (o.contains("reply_to")) m.reply_to = num(o, "reply_to");
    if (o.contains("expires_at")) m.expires_at = static_cast<int64_t>(num(o, "expires_at"));
    if (const auto* s = o.if_contains("system")) m.system_json = json::serialize(*s);
    return ServerFrame{std::move(m)};
  }
  if (type == "sent")
    return ServerFrame{SentEvent{str(o, "client_msg_id"), str(o, "conversation_id"), num(o, "seq"),
                                 static_cast<int64_t>(num(o, "ts"))}};
  if (type == "synced") return ServerFrame{SyncedEvent{}};
  if (type == "receipt")
    return ServerFrame{ReceiptEvent{str(o, "conversation_id"), str(o, "user"), str(o, "status"), num(o, "seq")}};
  if (type == "typing") {
    const auto* a = o.if_contains("active");
    return ServerFrame{TypingEvent{str(o, "conversation_id"), str(o, "user"), a && a->is_bool() && a->as_bool()}};
  }
  if (type == "presence") {
    const auto* on = o.if_contains("online");
    return ServerFrame{PresenceEvent{str(o, "user"), on && on->is_bool() && on->as_bool(),
                                     static_cast<int64_t>(num(o, "last_seen"))}};
  }
  if (type == "error")
    return ServerFrame{ErrorEvent{str(o, "code"), str(o, "message"), str(o, "ref"), strings(o, "missing"),
                                  strings(o, "extra"), strings(o, "stale")}};
  if (type == "prekeys_low") return ServerFrame{PrekeysLowEvent{num(o, "count")}};
  return make_error(ErrorCode::kUnknownType, "unknown server frame type");
}

std::string encode_send(std::string_view client_msg_id, std::string_view conversation_id,
                        std::string_view body_b64, std::optional<Seq> reply_to,
                        std::optional<int64_t> ttl_seconds, const std::vector<std::string>& media) {
  json::object o;
  o["type"] = "send";
  o["client_msg_id"] = client_msg_id;
  o["conversation_id"] = conversation_id;
  o["body"] = body_b64;
  if (reply_to) o["reply_to"] = *reply_to;
  if (ttl_seconds) o["ttl"] = *ttl_seconds;
  if (!media.empty()) {
    json::array ids;
    for (const auto& id : media) ids.emplace_back(id);
    o["media"] = std::move(ids);
  }
  return json::serialize(o);
}

std::string encode_send_bodies(std::string_view client_msg_id, std::string_view conversation_id,
                               const std::map<std::string, std::string>& bodies_b64) {
  json::object o;
  o["type"] = "send";
  o["client_msg_id"] = client_msg_id;
  o["conversation_id"] = conversation_id;
  json::object b;
  for (const auto& [k, v] : bodies_b64) b[k] = v;
  o["bodies"] = std::move(b);
  return json::serialize(o);
}

std::string encode_ack(std::string_view conversation_id, Seq seq) {
  json::object o{{"type", "ack"}, {"conversation_id", conversation_id}, {"seq", seq}};
  return json::serialize(o);
}

std::string encode_read(std::string_view conversation_id, Seq seq) {
  json::object o{{"type", "read"}, {"conversation_id", conversation_id}, {"seq", seq}};
  return json::serialize(o);
}

std::string encode_typing_frame(std::string_view conversation_id, bool active) {
  json::object o{{"type", "typing"}, {"conversation_id", conversation_id}, {"active", active}};
  return json::serialize(o);
}

std::string encode_presence_subscribe(const std::vector<std::string>& users) {
  json::array a;
  for (const auto& u : users) a.emplace_back(u);
  json::object o{{"type", "presence_subscribe"}, {"users", std::move(a)}};
  return json::serialize(o);
}

}  // namespace tern::proto
