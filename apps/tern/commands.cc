#include "commands.h"

#include <cstdio>
#include <ctime>
#include <iostream>

#include <boost/json.hpp>

#include "base/base64.h"
#include "client/blocking.h"
#include "client/client.h"
#include "client/io_thread.h"
#include "terminal.h"

namespace tern::cli {
namespace json = boost::json;
using namespace std::chrono_literals;
using client::Api;
using client::wait_for;

namespace {

constexpr const char* kDefaultServer = "http://127.0.0.1:8080";

std::string hhmm(int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

void print_json(const json::value& v) { std::cout << json::serialize(v) << std::endl; }

json::array to_array(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

Result<client::ServerUrl> server_url(const std::string& text) { return client::parse_server_url(text); }

int registered(const Global& g, const Profile& p, const char* what) {
  if (auto r = save_profile(p); !r) return fail(g, r.error());
  if (g.json) {
    print_json(json::object{{"user", p.credentials.user}, {"device", p.credentials.device}, {"server", p.server}});
  } else {
    std::cout << what << " " << p.credentials.user << " (device " << p.credentials.device << ") on " << p.server
              << "\n";
  }
  return 0;
}

// Refuses to replace saved credentials by accident: they are the only copy of the token.
std::optional<Error> check_overwrite(bool force) {
  auto existing = load_profile();
  if (existing.ok() && existing->has_value() && !force)
    return make_error(ErrorCode::kExists, "this config already holds " + (*existing)->credentials.user +
                                              "'s credentials; use --force to replace them (or another XDG_CONFIG_HOME)");
  return std::nullopt;
}

}  // namespace

int fail(const Global& g, const Error& e) {
  if (g.json) print_json(json::object{{"error", code_name(e.code)}, {"message", e.message}});
  std::cerr << "tern: " << e.message << " (" << code_name(e.code) << ")\n";
  return 1;
}

Result<Profile> require_profile(const Global& g) {
  auto p = load_profile();
  if (!p) return p.error();
  if (!p->has_value())
    return make_error(ErrorCode::kUnauthorized, "not signed in: run `tern register NAME` or `tern device link`");
  Profile out = **p;
  if (!g.server.empty()) out.server = g.server;
  if (out.server.empty()) out.server = kDefaultServer;
  return out;
}

Result<Target> resolve_target(const Api& api, const std::string& self, const std::string& text) {
  std::string name = text;
  const bool forced_user = !name.empty() && name[0] == '@';
  if (forced_user) name.erase(0, 1);
  auto list = wait_for<std::vector<client::ConversationInfo>>([&](auto cb) { api.conversations(std::move(cb)); });
  if (!list) return list.error();
  auto others = [&](const client::ConversationInfo& c) {
    std::vector<std::string> o;
    for (const auto& m : c.members)
      if (m != self) o.push_back(m);
    return o;
  };
  if (!forced_user) {
    const client::ConversationInfo* by_name = nullptr;
    int named = 0;
    for (const auto& c : *list) {
      if (c.conversation_id == name)
        return Target{c.conversation_id, c.type, c.name.empty() ? c.conversation_id : c.name, others(c), c.head};
      if (c.type == "group" && c.name == name) {
        by_name = &c;
        ++named;
      }
    }
    if (named > 1) return make_error(ErrorCode::kInvalidArgument, "several groups are named " + name + ": use the id");
    if (by_name) return Target{by_name->conversation_id, "group", by_name->name, others(*by_name), by_name->head};
  }
  if (!valid_user_id(name)) return make_error(ErrorCode::kNotFound, "no conversation or user named " + text);
  if (name == self) return make_error(ErrorCode::kInvalidArgument, "a direct conversation needs another user");
  auto id = wait_for<std::string>([&](auto cb) { api.create_direct(name, std::move(cb)); });
  if (!id) return id.error();
  Target t{*id, "direct", name, {name}, 0};
  for (const auto& c : *list)
    if (c.conversation_id == *id) t.head = c.head;
  return t;
}

int cmd_register(const Global& g, const std::string& user, bool force) {
  if (auto e = check_overwrite(force)) return fail(g, *e);
  Profile p;
  p.server = g.server.empty() ? kDefaultServer : g.server;
  auto url = server_url(p.server);
  if (!url) return fail(g, url.error());
  client::IoThread io;
  Api api(io.context(), *url);
  auto c = wait_for<client::Credentials>([&](auto cb) { api.register_user(user, std::move(cb)); });
  if (!c) return fail(g, c.error());
  p.credentials = *c;
  return registered(g, p, "registered");
}

int cmd_link_code(const Global& g) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  auto url = server_url(p->server);
  if (!url) return fail(g, url.error());
  client::IoThread io;
  Api api(io.context(), *url, p->credentials.token);
  auto code = wait_for<client::LinkCode>([&](auto cb) { api.create_link_code(std::move(cb)); });
  if (!code) return fail(g, code.error());
  if (g.json) {
    print_json(json::object{{"code", code->code}, {"expires_at", code->expires_at}, {"user", p->credentials.user}});
  } else {
    std::cout << "link code: " << code->code << "\n"
              << "on the new device run:  tern device link " << p->credentials.user << " " << code->code
              << " --server " << p->server << "\n"
              << "valid until " << hhmm(code->expires_at) << ", once.\n";
  }
  return 0;
}

int cmd_link(const Global& g, const std::string& user, const std::string& code, bool force) {
  if (auto e = check_overwrite(force)) return fail(g, *e);
  Profile p;
  p.server = g.server.empty() ? kDefaultServer : g.server;
  auto url = server_url(p.server);
  if (!url) return fail(g, url.error());
  client::IoThread io;
  Api api(io.context(), *url);
  auto c = wait_for<client::Credentials>([&](auto cb) { api.link_device(user, code, std::move(cb)); });
  if (!c) return fail(g, c.error());
  p.credentials = *c;
  return registered(g, p, "linked");
}

int cmd_whoami(const Global& g) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  if (g.json) print_json(json::object{{"user", p->credentials.user}, {"device", p->credentials.device}, {"server", p->server}});
  else std::cout << p->credentials.user << " (device " << p->credentials.device << ") on " << p->server << "\n";
  return 0;
}

int cmd_conversations(const Global& g) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  auto url = server_url(p->server);
  if (!url) return fail(g, url.error());
  client::IoThread io;
  Api api(io.context(), *url, p->credentials.token);
  auto list = wait_for<std::vector<client::ConversationInfo>>([&](auto cb) { api.conversations(std::move(cb)); });
  if (!list) return fail(g, list.error());
  if (g.json) {
    json::array a;
    for (const auto& c : *list) {
      boost::system::error_code ec;
      json::value v = json::parse(c.json, ec);
      a.push_back(ec ? json::value(json::object{{"conversation_id", c.conversation_id}}) : v);
    }
    print_json(json::object{{"conversations", std::move(a)}});
    return 0;
  }
  for (const auto& c : *list) {
    std::string who;
    for (const auto& m : c.members)
      if (m != p->credentials.user) who += (who.empty() ? "" : ",") + m;
    std::cout << printable(c.conversation_id) << "\t" << c.type << "\t" << printable(c.name.empty() ? who : c.name)
              << "\thead=" << c.head << "\n";
  }
  return 0;
}

int cmd_group_create(const Global& g, const std::string& name, const std::vector<std::string>& members) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  auto url = server_url(p->server);
  if (!url) return fail(g, url.error());
  client::IoThread io;
  Api api(io.context(), *url, p->credentials.token);
  auto id = wait_for<std::string>([&](auto cb) { api.create_group(name, members, std::move(cb)); });
  if (!id) return fail(g, id.error());
  if (g.json) print_json(json::object{{"conversation_id", *id}, {"name", name}, {"members", to_array(members)}});
  else std::cout << *id << "\n";
  return 0;
}

int cmd_group_members(const Global& g, const std::string& conv, const std::vector<std::string>& users, bool add) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  auto url = server_url(p->server);
  if (!url) return fail(g, url.error());
  client::IoThread io;
  Api api(io.context(), *url, p->credentials.token);
  auto t = resolve_target(api, p->credentials.user, conv);
  if (!t) return fail(g, t.error());
  auto members = wait_for<std::vector<std::string>>([&](auto cb) {
    if (add) api.add_members(t->conversation_id, users, std::move(cb));
    else api.remove_members(t->conversation_id, users, std::move(cb));
  });
  if (!members) return fail(g, members.error());
  if (g.json) {
    print_json(json::object{{"conversation_id", t->conversation_id}, {"members", to_array(*members)}});
  } else {
    for (const auto& m : *members) std::cout << m << "\n";
  }
  return 0;
}

int cmd_send(const Global& g, const std::string& target, const std::string& text, std::optional<Seq> reply_to) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  auto db = state_db_path();
  if (!db) return fail(g, db.error());
  client::Options o;
  o.server = p->server;
  o.credentials = p->credentials;
  o.store_path = *db;
  o.receive = false;  // a one-shot send: leave incoming messages to `tern chat`
  o.reconnect = {200, 2'000, 0};
  auto c = client::Client::create(o, {});
  if (!c) return fail(g, c.error());
  auto t = resolve_target((*c)->api(), p->credentials.user, target);
  if (!t) return fail(g, t.error());
  (*c)->start();
  client::SendOptions so;
  so.reply_to = reply_to;
  auto sent = wait_for<client::SendResult>(
      [&](auto cb) {
        auto id = (*c)->send(t->conversation_id, text, so, cb);
        if (!id) cb(id.error());
      },
      30s);
  (*c)->stop();
  if (!sent) {
    if (sent.error().code == ErrorCode::kOverloaded || sent.error().code == ErrorCode::kDraining) {
      std::cerr << "tern: not confirmed yet (" << sent.error().message
                << "); the message stays queued and goes with the next tern command\n";
      if (g.json) print_json(json::object{{"queued", true}, {"conversation_id", t->conversation_id}});
      return 3;
    }
    return fail(g, sent.error());
  }
  if (g.json) {
    print_json(json::object{{"conversation_id", sent->conversation_id},
                            {"seq", sent->seq},
                            {"ts", sent->ts},
                            {"client_msg_id", sent->client_msg_id}});
  } else {
    std::cout << "sent to " << printable(t->title) << " (seq " << sent->seq << ")\n";
  }
  return 0;
}

int cmd_history(const Global& g, const std::string& target, std::optional<Seq> after, size_t limit) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  auto url = server_url(p->server);
  if (!url) return fail(g, url.error());
  client::IoThread io;
  Api api(io.context(), *url, p->credentials.token);
  auto t = resolve_target(api, p->credentials.user, target);
  if (!t) return fail(g, t.error());
  const Seq from = after ? *after : (t->head > limit ? t->head - limit : 0);
  auto page = wait_for<client::HistoryPage>([&](auto cb) { api.history(t->conversation_id, from, limit, std::move(cb)); });
  if (!page) return fail(g, page.error());
  if (g.json) {
    json::array a;
    for (const auto& m : page->messages) {
      json::object o{{"seq", m.seq}, {"sender", m.sender}, {"sender_device", m.sender_device}, {"ts", m.ts},
                     {"body", base64_encode(m.body)}};
      if (valid_utf8(m.body)) o["text"] = m.body;
      if (m.reply_to) o["reply_to"] = *m.reply_to;
      if (m.system_json) {
        boost::system::error_code ec;
        o["system"] = json::parse(*m.system_json, ec);
      }
      a.push_back(std::move(o));
    }
    print_json(json::object{{"conversation_id", t->conversation_id}, {"head", page->head}, {"messages", std::move(a)}});
    return 0;
  }
  for (const auto& m : page->messages) {
    std::cout << "[" << m.seq << "] " << hhmm(m.ts) << " " << printable(m.sender) << ": "
              << (m.system_json ? "* " + printable(*m.system_json) : printable(m.body)) << "\n";
  }
  return 0;
}

}  // namespace tern::cli
