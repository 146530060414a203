#include "format.h"

#include <algorithm>

#include <boost/json.hpp>

#include "terminal.h"

namespace tern::cli {
namespace json = boost::json;
namespace {

struct System {
  std::string action, by, name;
  std::vector<std::string> users;
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
  return "membership changed (" + printable(s.action) + ")";
}

std::vector<std::string> system_users(std::string_view system_json, bool& removed) {
  const System s = parse_system(system_json);
  removed = s.action == "remove";
  return s.users;
}

}  // namespace tern::cli
