#include "client/convert.h"

#include <boost/json.hpp>

#include "base/base64.h"
#include "client/errors.h"

namespace tern::client {
namespace json = boost::json;
namespace {

Result<json::object> parse_object(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return make_error(ErrorCode::kMalformed, "server answer is not a JSON object");
  return std::move(v.as_object());
}
std::string str(const json::object& o, std::string_view k) {
  const auto* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}
std::optional<uint64_t> num(const json::object& o, std::string_view k) {
  const auto* v = o.if_contains(k);
  if (!v) return std::nullopt;
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<uint64_t>(v->as_int64());
  return std::nullopt;
}
std::vector<std::string> strings(const json::object& o, std::string_view k) {
  std::vector<std::string> out;
  if (const auto* v = o.if_contains(k); v && v->is_array())
    for (const auto& e : v->as_array())
      if (e.is_string()) out.emplace_back(e.as_string());
  return out;
}

Message message_from_json(const json::object& o, const std::string& conversation_id) {
  Message m;
  m.conversation_id = str(o, "conversation_id");
  if (m.conversation_id.empty()) m.conversation_id = conversation_id;
  m.seq = num(o, "seq").value_or(0);
  m.sender = str(o, "sender");
  m.sender_device = static_cast<uint32_t>(num(o, "sender_device").value_or(0));
  m.ts = static_cast<int64_t>(num(o, "ts").value_or(0));
  m.body = base64_decode(str(o, "body")).value_or(std::string());
  if (auto r = num(o, "reply_to")) m.reply_to = *r;
  if (auto e = num(o, "expires_at")) m.expires_at = static_cast<int64_t>(*e);
  if (const auto* s = o.if_contains("system"); s && !s->is_null()) m.system_json = json::serialize(*s);
  return m;
}

ConversationInfo conversation_from_json(const json::object& c) {
  ConversationInfo info;
  info.conversation_id = str(c, "conversation_id");
  info.type = str(c, "type");
  info.name = str(c, "name");
  info.head = num(c, "head").value_or(0);
  info.joined_seq = num(c, "joined_seq").value_or(0);
  info.members = strings(c, "members");
  if (const auto* p = c.if_contains("public"); p && p->is_bool()) info.is_public = p->as_bool();
  info.subscribers = num(c, "subscribers").value_or(0);
  info.admins = strings(c, "admins");
  info.owner = str(c, "owner");
  if (const auto* v = c.if_contains("views"); v && v->is_array())
    for (const auto& e : v->as_array()) {
      if (!e.is_object()) continue;
      auto seq = num(e.as_object(), "seq");
      if (!seq) continue;
      info.views.push_back(PostViews{*seq, num(e.as_object(), "views").value_or(0)});
    }
  info.json = json::serialize(c);
  return info;
}

}  // namespace

Message message_from_event(proto::MessageEvent&& e) {
  Message m;
  m.conversation_id = std::move(e.conversation_id);
  m.seq = e.seq;
  m.sender = std::move(e.sender);
  m.sender_device = e.sender_device;
  m.ts = e.ts;
  m.body = base64_decode(e.body).value_or(std::string());
  m.reply_to = e.reply_to;
  m.expires_at = e.expires_at;
  m.system_json = std::move(e.system_json);
  return m;
}

Result<HistoryPage> parse_history(std::string_view body, const std::string& conversation_id) {
  auto o = parse_object(body);
  if (!o) return o.error();
  HistoryPage page;
  page.head = num(*o, "head").value_or(0);
  const auto* msgs = o->if_contains("messages");
  if (!msgs || !msgs->is_array()) return make_error(ErrorCode::kMalformed, "history answer has no messages array");
  for (const auto& v : msgs->as_array()) {
    if (!v.is_object()) continue;
    Message m = message_from_json(v.as_object(), conversation_id);
    if (m.seq == 0) continue;
    page.messages.push_back(std::move(m));
  }
  return page;
}

Result<std::vector<ConversationInfo>> parse_conversations(std::string_view body) {
  auto o = parse_object(body);
  if (!o) return o.error();
  const auto* list = o->if_contains("conversations");
  if (!list || !list->is_array()) return make_error(ErrorCode::kMalformed, "answer has no conversations array");
  std::vector<ConversationInfo> out;
  for (const auto& v : list->as_array()) {
    if (!v.is_object()) continue;
    ConversationInfo info = conversation_from_json(v.as_object());
    if (info.conversation_id.empty()) continue;
    out.push_back(std::move(info));
  }
  return out;
}

Result<ConversationInfo> parse_conversation_info(std::string_view body) {
  auto o = parse_object(body);
  if (!o) return o.error();
  ConversationInfo info = conversation_from_json(*o);
  if (info.conversation_id.empty()) return make_error(ErrorCode::kMalformed, "answer lacks conversation_id");
  return info;
}

Result<JoinResult> parse_join(std::string_view body) {
  auto o = parse_object(body);
  if (!o) return o.error();
  JoinResult j{str(*o, "conversation_id"), num(*o, "joined_seq").value_or(0), num(*o, "subscribers").value_or(0)};
  if (j.conversation_id.empty()) return make_error(ErrorCode::kMalformed, "join answer lacks conversation_id");
  return j;
}

Result<uint64_t> parse_subscribers_answer(std::string_view body) {
  auto o = parse_object(body);
  if (!o) return o.error();
  auto n = num(*o, "subscribers");
  if (!n) return make_error(ErrorCode::kMalformed, "answer lacks subscribers");
  return *n;
}

Result<std::vector<std::string>> parse_admins_answer(std::string_view body) {
  auto o = parse_object(body);
  if (!o) return o.error();
  const auto* a = o->if_contains("admins");
  if (!a || !a->is_array()) return make_error(ErrorCode::kMalformed, "answer lacks admins");
  return strings(*o, "admins");
}

Result<Credentials> parse_credentials(std::string_view body) {
  auto o = parse_object(body);
  if (!o) return o.error();
  Credentials c{str(*o, "user"), static_cast<uint32_t>(num(*o, "device").value_or(0)), str(*o, "token")};
  if (c.user.empty() || c.device == 0 || c.token.empty())
    return make_error(ErrorCode::kMalformed, "answer lacks user, device or token");
  return c;
}

Result<std::string> parse_conversation_id(std::string_view body) {
  auto o = parse_object(body);
  if (!o) return o.error();
  std::string id = str(*o, "conversation_id");
  if (id.empty()) return make_error(ErrorCode::kMalformed, "answer lacks conversation_id");
  return id;
}

Result<std::vector<std::string>> parse_members_answer(std::string_view body) {
  auto o = parse_object(body);
  if (!o) return o.error();
  return strings(*o, "members");
}

Result<LinkCode> parse_link_code(std::string_view body) {
  auto o = parse_object(body);
  if (!o) return o.error();
  LinkCode c{str(*o, "code"), static_cast<int64_t>(num(*o, "expires_at").value_or(0))};
  if (c.code.empty()) return make_error(ErrorCode::kMalformed, "answer lacks code");
  return c;
}

Error error_from_http(int status, std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (!ec && v.is_object()) {
    const auto& o = v.as_object();
    const std::string name = str(o, "error");
    if (!name.empty()) {
      ErrorCode code = error_code_from_name(name);
      if (code == ErrorCode::kInternal && status != 500) code = error_code_from_status(status);
      return make_error(code, str(o, "message"));
    }
  }
  return make_error(error_code_from_status(status), "HTTP " + std::to_string(status));
}

}  // namespace tern::client
