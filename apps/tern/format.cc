#include "format.h"

#include <algorithm>

#include <boost/json.hpp>

#include "client/attachments.h"
#include "terminal.h"

namespace tern::cli {
namespace json = boost::json;
namespace {

struct System {
  std::string action, by, name;
  std::vector<std::string> users;
  int64_t seconds = 0;  // "timer"
  bool ok = false;
};

System parse_system(std::string_view text) {
  System s;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return s;
  const auto& o = v.as_object();
  auto str = [&](const char* k) {
    const auto* f = o.if_contains(k);
    return f && f->is_string() ? std::string(f->as_string()) : std::string();
  };
  s.action = str("action");
  s.by = str("by");
  s.name = str("name");
  if (const auto* u = o.if_contains("users"); u && u->is_array())
    for (const auto& e : u->as_array())
      if (e.is_string()) s.users.emplace_back(e.as_string());
  if (const auto* t = o.if_contains("seconds"); t && t->is_int64()) s.seconds = t->as_int64();
  s.ok = !s.action.empty();
  return s;
}

}  // namespace

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " and " : ", ";
    out += printable(names[i]);
  }
  return out;
}

std::string system_sentence(std::string_view system_json) {
  const System s = parse_system(system_json);
  if (!s.ok) return "membership changed";
  const std::string by = s.by.empty() ? std::string("someone") : printable(s.by);
  if (s.action == "create") {
    std::vector<std::string> others;
    for (const auto& u : s.users)
      if (u != s.by) others.push_back(u);
    std::string out = by + " created the group" + (s.name.empty() ? std::string() : " " + printable(s.name));
    if (!others.empty()) out += " with " + join_names(others);
    return out;
  }
  if (s.action == "add") return by + " added " + join_names(s.users);
  if (s.action == "remove") {
    if (s.users.size() == 1 && s.users[0] == s.by) return by + " left";
    return by + " removed " + join_names(s.users);
  }
  if (s.action == "timer")
    return s.seconds > 0 ? by + " turned on disappearing messages: " + duration_text(s.seconds)
                         : by + " turned off disappearing messages";
  return "membership changed (" + printable(s.action) + ")";
}

std::string duration_text(int64_t seconds) {
  if (seconds % 86400 == 0) return std::to_string(seconds / 86400) + " d";
  if (seconds % 3600 == 0) return std::to_string(seconds / 3600) + " h";
  if (seconds % 60 == 0) return std::to_string(seconds / 60) + " min";
  return std::to_string(seconds) + " s";
}

std::string message_text(const client::Message& m, int64_t now_ms) {
  if (m.system_json) return system_sentence(*m.system_json);
  if (m.expires_at && *m.expires_at <= now_ms) return "(expired)";
  auto att = client::parse_attachment_body(m.body);
  if (!att) return printable(m.body);
  std::string out = printable(att->first);
  for (const auto& a : att->second) {
    if (!out.empty()) out += " ";
    out += "[attachment " + printable(a.name.empty() ? a.media_id.substr(0, 12) : a.name) + ", " +
           std::to_string(a.size) + " bytes" + (a.type.empty() ? std::string() : ", " + printable(a.type)) +
           "; save: tern download " + m.conversation_id + " " + std::to_string(m.seq) + "]";
  }
  return out;
}

std::vector<std::string> system_users(std::string_view system_json, bool& removed) {
  const System s = parse_system(system_json);
  removed = s.action == "remove";
  return s.users;
}

}  // namespace tern::cli
