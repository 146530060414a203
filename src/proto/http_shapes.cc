#include "proto/http_shapes.h"

#include <algorithm>

#include <boost/json.hpp>

#include "base/ids.h"

namespace tern::proto {
namespace json = boost::json;
namespace {

Result<json::object> parse_body(std::string_view body, const Limits& limits) {
  if (body.size() > limits.max_http_body_bytes) return make_error(ErrorCode::kTooLarge, "request body too large");
  json::parse_options opts;
  opts.max_depth = limits.max_json_depth;
  boost::system::error_code ec;
  json::value v = json::parse(body.empty() ? std::string_view("{}") : body, ec, {}, opts);
  if (ec) return make_error(ErrorCode::kMalformed, "invalid JSON: " + ec.message());
  if (!v.is_object()) return make_error(ErrorCode::kMalformed, "body must be a JSON object");
  return std::move(v.as_object());
}

// Reads an optional array of user ids; duplicates removed, order kept.
Result<std::vector<std::string>> user_list(const json::object& o, std::string_view key, size_t max) {
  std::vector<std::string> out;
  const auto* v = o.if_contains(key);
  if (!v) return out;
  if (!v->is_array()) return make_error(ErrorCode::kMalformed, "'" + std::string(key) + "' must be an array of user ids");
  if (v->as_array().size() > max) return make_error(ErrorCode::kLimitExceeded, "too many users in '" + std::string(key) + "'");
  for (const auto& u : v->as_array()) {
    if (!u.is_string() || !valid_user_id(u.as_string()))
      return make_error(ErrorCode::kInvalidArgument, "invalid user id in '" + std::string(key) + "'");
    std::string s(u.as_string());
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

Result<RegisterRequest> parse_register(std::string_view body, const Limits& limits) {
  auto o = parse_body(body, limits);
  if (!o) return o.error();
  const auto* u = o->if_contains("user");
  if (!u || !u->is_string()) return make_error(ErrorCode::kMalformed, "field 'user' must be a string");
  if (!valid_user_id(u->as_string())) return make_error(ErrorCode::kInvalidArgument, "user id must match [a-z0-9_.-]{1,64}");
  return RegisterRequest{std::string(u->as_string())};
}

Result<CreateConversationRequest> parse_create_conversation(std::string_view body, const Limits& limits) {
  auto o = parse_body(body, limits);
  if (!o) return o.error();
  const auto* t = o->if_contains("type");
  if (!t || !t->is_string())
    return make_error(ErrorCode::kMalformed, "field 'type' must be \"direct\", \"group\", \"channel\" or \"self\"");
  CreateConversationRequest r;
  if (t->as_string() == "group") r.group = true;
  else if (t->as_string() == "channel") r.group = r.channel = true;
  else if (t->as_string() == "self") r.self = true;
  else if (t->as_string() != "direct")
    return make_error(ErrorCode::kInvalidArgument, "type must be \"direct\", \"group\", \"channel\" or \"self\"");
  if (r.channel) {
    if (const auto* p = o->if_contains("public")) {
      if (!p->is_bool()) return make_error(ErrorCode::kMalformed, "field 'public' must be true or false");
      r.is_public = p->as_bool();
    }
  }
  auto members = user_list(*o, "members", limits.max_members_per_group);
  if (!members) return members.error();
  if (!r.channel) r.members = std::move(*members);  // a channel starts with its owner only
  if (r.self) {
    if (!r.members.empty()) return make_error(ErrorCode::kInvalidArgument, "a self conversation has no other member");
    return r;
  }
  if (r.group) {
    if (const auto* n = o->if_contains("name")) {
      if (!n->is_string()) return make_error(ErrorCode::kMalformed, "field 'name' must be a string");
      if (n->as_string().size() > 256) return make_error(ErrorCode::kTooLarge, "name longer than 256 bytes");
      r.name = std::string(n->as_string());
    }
  } else if (r.members.size() != 1) {
    return make_error(ErrorCode::kInvalidArgument, "a direct conversation has exactly one other member");
  }
  return r;
}

Result<MembersRequest> parse_members(std::string_view body, const Limits& limits) {
  auto o = parse_body(body, limits);
  if (!o) return o.error();
  auto add = user_list(*o, "add", limits.max_members_per_group);
  if (!add) return add.error();
  auto remove = user_list(*o, "remove", limits.max_members_per_group);
  if (!remove) return remove.error();
  if (add->empty() && remove->empty()) return make_error(ErrorCode::kMalformed, "'add' or 'remove' is required");
  return MembersRequest{std::move(*add), std::move(*remove)};
}

std::string query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto part = query.substr(0, amp);
    const auto eq = part.find('=');
    if (part.substr(0, eq) == name) return eq == std::string_view::npos ? std::string() : std::string(part.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

}  // namespace tern::proto
