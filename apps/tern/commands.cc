#include "commands.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <mutex>

#include <boost/json.hpp>

#include "base/base64.h"
#include "client/blocking.h"
#include "client/client.h"
#include "client/attachments.h"
#include "client/errors.h"
#include "format.h"
#include "media_commands.h"
#include "terminal.h"

namespace tern::cli {
namespace json = boost::json;
using namespace std::chrono_literals;
using client::Api;
using client::wait_for;

const char* const kExitCodesHelp =
    "Exit codes: 0 done; 1 failed (the server refused, or a local problem such as not signed in);\n"
    "2 bad command line; 3 `send` only: not confirmed, kept in the outbox, the next `tern send` or\n"
    "`tern chat` sends it; 4 cannot reach the server (connection refused, DNS, timeout).";

void print_json(const json::value& v) { std::cout << json::serialize(v) << std::endl; }

json::array to_array(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

namespace {

constexpr const char* kDefaultServer = "http://127.0.0.1:8080";

// The server the running command talks to, for error messages (one command per process).
std::string g_server = kDefaultServer;

std::string hhmm(int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

int registered(const Global& g, const Profile& p, const char* what) {
  if (auto r = save_profile(p); !r) return fail(g, r.error());
  if (g.json) {
    print_json(json::object{{"user", p.credentials.user}, {"device", p.credentials.device}, {"server", p.server}});
  } else {
    std::cout << what << " " << p.credentials.user << " (device " << p.credentials.device << ") on " << p.server
              << "\n";
  }
  return kExitOk;
}

// Refuses to replace saved credentials by accident: they are the only copy of the token.
std::optional<Error> check_overwrite(bool force) {
  auto existing = load_profile();
  if (existing.ok() && existing->has_value() && !force)
    return make_error(ErrorCode::kExists, "this config already holds " + (*existing)->credentials.user +
                                              "'s credentials; use --force to replace them (or another XDG_CONFIG_HOME)");
  return std::nullopt;
}

// What the user sees of a network error: the server named, the transport detail after it.
std::string unreachable_text(const Error& e) {
  std::string detail = e.message;
  if (detail.starts_with("network: ")) detail.erase(0, 9);
  return "cannot reach the server at " + g_server + " (" + detail + ")";
}

bool looks_like_conversation_id(const std::string& s) {
  auto hex_tail = [&](size_t n) {
    if (s.size() != 2 + n) return false;
    for (size_t i = 2; i < s.size(); ++i)
      if (!std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
    return true;
  };
  return (s.starts_with("g-") && hex_tail(24)) || (s.starts_with("d-") && hex_tail(32)) || looks_like_channel_id(s);
}

std::vector<std::string> others_of(const client::ConversationInfo& c, const std::string& self) {
  std::vector<std::string> o;
  for (const auto& m : c.members)
    if (m != self) o.push_back(m);
  return o;
}

Target target_of(const client::ConversationInfo& c, const std::string& self) {
  auto others = others_of(c, self);
  std::string title = c.name;
  if (title.empty()) title = c.type == "direct" && others.size() == 1 ? others[0] : c.conversation_id;
  return Target{c.conversation_id, c.type, title, std::move(others), c.head};
}

// Conversation id or group name in `list`; an error when the name is ambiguous.
Result<std::optional<Target>> find_listed(const std::vector<client::ConversationInfo>& list, const std::string& self,
                                          const std::string& name) {
  std::vector<const client::ConversationInfo*> named;
  for (const auto& c : list) {
    if (c.conversation_id == name) return std::optional<Target>(target_of(c, self));
    if ((c.type == "group" || c.type == "channel") && c.name == name) named.push_back(&c);
  }
  if (named.size() > 1) {
    const bool any_channel =
        std::any_of(named.begin(), named.end(), [](const auto* c) { return c->type == "channel"; });
    std::string msg = std::string(any_channel ? "several groups or channels" : "several groups") + " are named " +
                      printable(name) + "; use one of their ids:";
    for (const auto* c : named)
      msg += "\n  " + c->conversation_id +
             (c->type == "channel" ? "  channel, " + std::to_string(c->subscribers) + " subscribers"
                                   : "  members: " + join_names(c->members));
    return make_error(ErrorCode::kInvalidArgument, msg);
  }
  if (named.size() == 1) return std::optional<Target>(target_of(*named[0], self));
  return std::optional<Target>();
}

Result<std::vector<client::ConversationInfo>> list_conversations(const Api& api) {
  auto list = wait_for<std::vector<client::ConversationInfo>>([&](auto cb) { api.conversations(std::move(cb)); });
  if (list) (void)save_conversations(*list);  // best effort: lets `send` queue while offline
  return list;
}

}  // namespace

client::ApiOptions cli_api_options() {
  client::ApiOptions o;
  o.timeout_ms = 5'000;
  o.retry = {200, 1'000, 2};
  return o;
}

Result<client::ServerUrl> checked_server(client::IoThread& io, const std::string& server, bool probe) {
  g_server = server;
  auto url = client::parse_server_url(server);
  if (!url) return make_error(ErrorCode::kInvalidArgument, "bad server URL " + server + ": " + url.error().message);
  if (url->prefix.empty() && !probe) return url;
  client::ApiOptions once;
  once.timeout_ms = 3'000;
  once.retry = {100, 200, 1};
  Api api(io.context(), *url, {}, once);
  auto health = wait_for<void>([&](auto cb) { api.healthz(std::move(cb)); }, 10s);
  if (health) return url;
  if (client::is_network_error(health.error())) return health.error();
  if (!url->prefix.empty()) {
    client::ServerUrl root = *url;
    root.prefix.clear();
    return make_error(ErrorCode::kInvalidArgument, "the server URL " + server + " has a path (" + url->prefix +
                                                       ") and no Tern server answers under it; try " + root.to_string());
  }
  return url;  // it answered something: let the command itself report what
}

int fail(const Global& g, const Error& e) {
  const bool network = client::is_network_error(e);
  const std::string text = network ? unreachable_text(e) : e.message;
  if (g.json) print_json(json::object{{"error", network ? "unreachable" : code_name(e.code)}, {"message", text}});
  std::cerr << "tern: " << text << "\n";
  return network ? kExitUnreachable : kExitFailed;
}

Result<Profile> require_profile(const Global& g) {
  auto p = load_profile();
  if (!p) return p.error();
  if (!p->has_value()) {
    auto dir = config_dir();
    return make_error(ErrorCode::kUnauthorized,
                      "not signed in: no credentials in " + (dir ? *dir : std::string("$XDG_CONFIG_HOME/tern")) +
                          " (set by $XDG_CONFIG_HOME, default ~/.config); run `tern register NAME` or `tern device link`");
  }
  Profile out = **p;
  if (!g.server.empty()) out.server = g.server;
  if (out.server.empty()) out.server = kDefaultServer;
  g_server = out.server;
  return out;
}

Result<Target> resolve_target(const Api& api, const std::string& self, const std::string& text) {
  std::string name = text;
  const bool forced_user = !name.empty() && name[0] == '@';
  if (forced_user) name.erase(0, 1);
  auto list = list_conversations(api);
  if (!list) return list.error();
  if (!forced_user) {
    auto found = find_listed(*list, self, name);
    if (!found) return found.error();
    if (*found) return **found;
    if (looks_like_conversation_id(name)) {
      // Not in our list: either we are not (or no longer) a member, or it does not exist.
      auto probe = wait_for<client::HistoryPage>([&](auto cb) { api.history(name, 0, 1, std::move(cb)); });
      if (probe)
        return Target{name, name.starts_with("g-") ? "group" : (looks_like_channel_id(name) ? "channel" : "direct"), name,
                      {}, probe->head};
      // The server answers the same for a conversation that does not exist and one we are
      // not a member of (so that ids reveal nothing to outsiders).
      if (probe.error().code == ErrorCode::kForbidden)
        return make_error(ErrorCode::kForbidden, "you are not a member of conversation " + name +
                                                     " (you were removed, never added, or it does not exist)");
      if (probe.error().code == ErrorCode::kNotFound) return make_error(ErrorCode::kNotFound, "no such conversation: " + name);
      return probe.error();
    }
  }
  if (!valid_user_id(name))
    return make_error(ErrorCode::kNotFound, "no conversation, group or user named " + printable(text));
  if (name == self) return make_error(ErrorCode::kInvalidArgument, "a direct conversation needs another user");
  auto id = wait_for<std::string>([&](auto cb) { api.create_direct(name, std::move(cb)); });
  if (!id) {
    if (id.error().code == ErrorCode::kNotFound)
      return make_error(ErrorCode::kNotFound, forced_user ? "no such user: " + name
                                                          : "no conversation, group or user named " + printable(text));
    return id.error();
  }
  Target t{*id, "direct", name, {name}, 0};
  bool listed = false;
  for (const auto& c : *list)
    if (c.conversation_id == *id) {
      t.head = c.head;
      listed = true;
    }
  if (!listed) {  // new: remember it, so that a later send can be queued while offline
    client::ConversationInfo info;
    info.conversation_id = *id;
    info.type = "direct";
    info.members = {self, name};
    list->push_back(std::move(info));
    (void)save_conversations(*list);
  }
  return t;
}

std::optional<Target> resolve_offline(const std::vector<client::ConversationInfo>& list, const std::string& self,
                                      const std::string& text) {
  std::string name = text;
  const bool forced_user = !name.empty() && name[0] == '@';
  if (forced_user) name.erase(0, 1);
  if (!forced_user) {
    auto found = find_listed(list, self, name);
    if (found && *found) return **found;
    if (!found) return std::nullopt;  // ambiguous: do not guess
  }
  for (const auto& c : list)
    if (c.type == "direct" && c.members.size() == 2 &&
        std::find(c.members.begin(), c.members.end(), name) != c.members.end() && name != self)
      return target_of(c, self);
  return std::nullopt;
}

int cmd_register(const Global& g, const std::string& user, bool force) {
  if (auto e = check_overwrite(force)) return fail(g, *e);
  Profile p;
  p.server = g.server.empty() ? kDefaultServer : g.server;
  client::IoThread io;
  auto url = checked_server(io, p.server, false);
  if (!url) return fail(g, url.error());
  Api api(io.context(), *url, {}, cli_api_options());
  auto c = wait_for<client::Credentials>([&](auto cb) { api.register_user(user, std::move(cb)); });
  if (!c) return fail(g, c.error());
  p.credentials = *c;
  return registered(g, p, "registered");
}

int cmd_link_code(const Global& g) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  client::IoThread io;
  auto url = checked_server(io, p->server, false);
  if (!url) return fail(g, url.error());
  Api api(io.context(), *url, p->credentials.token, cli_api_options());
  auto code = wait_for<client::LinkCode>([&](auto cb) { api.create_link_code(std::move(cb)); });
  if (!code) return fail(g, code.error());
  if (g.json) {
    print_json(json::object{{"code", code->code}, {"expires_at", code->expires_at}, {"user", p->credentials.user}});
  } else {
    std::cout << "link code: " << code->code << "\n"
              << "on the new device run:  tern device link " << p->credentials.user << " " << code->code
              << " --server " << p->server << "\n"
              << "valid until " << hhmm(code->expires_at) << ", once (case and the dash do not matter).\n";
  }
  return kExitOk;
}

int cmd_link(const Global& g, const std::string& user, const std::string& code, bool force) {
  if (auto e = check_overwrite(force)) return fail(g, *e);
  // Checked here, before the server sees it: a typo must not cost one of the five attempts.
  auto normal = client::normalize_link_code(code);
  if (!normal) return fail(g, normal.error());
  Profile p;
  p.server = g.server.empty() ? kDefaultServer : g.server;
  client::IoThread io;
  auto url = checked_server(io, p.server, false);
  if (!url) return fail(g, url.error());
  Api api(io.context(), *url, {}, cli_api_options());
  auto c = wait_for<client::Credentials>([&](auto cb) { api.link_device(user, *normal, std::move(cb)); });
  if (!c) return fail(g, c.error());
  p.credentials = *c;
  return registered(g, p, "linked");
}

int cmd_whoami(const Global& g) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  if (g.json) print_json(json::object{{"user", p->credentials.user}, {"device", p->credentials.device}, {"server", p->server}});
  else std::cout << p->credentials.user << " (device " << p->credentials.device << ") on " << p->server << "\n";
  return kExitOk;
}

int cmd_conversations(const Global& g) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  client::IoThread io;
  auto url = checked_server(io, p->server, false);
  if (!url) return fail(g, url.error());
  Api api(io.context(), *url, p->credentials.token, cli_api_options());
  auto list = list_conversations(api);
  if (!list) return fail(g, list.error());
  if (g.json) {
    json::array a;
    for (const auto& c : *list) {
      boost::system::error_code ec;
      json::value v = json::parse(c.json, ec);
      a.push_back(ec ? json::value(json::object{{"conversation_id", c.conversation_id}}) : v);
    }
    print_json(json::object{{"conversations", std::move(a)}});
    return kExitOk;
  }
  for (const auto& c : *list) {
    if (c.type == "channel") {
      std::cout << printable(c.conversation_id) << "\tchannel\t" << printable(c.name) << "\thead=" << c.head << "\t"
                << c.subscribers << " subscribers"
                << (std::find(c.admins.begin(), c.admins.end(), p->credentials.user) != c.admins.end() ? ", admin" : "")
                << "\n";
      continue;
    }
    std::string who;
    for (const auto& m : c.members)
      if (m != p->credentials.user) who += (who.empty() ? "" : ",") + m;
    std::cout << printable(c.conversation_id) << "\t" << c.type << "\t" << printable(c.name.empty() ? who : c.name)
              << "\thead=" << c.head << "\n";
  }
  return kExitOk;
}

int cmd_group_create(const Global& g, const std::string& name, const std::vector<std::string>& members, bool force) {
  if (name.find_first_not_of(" \t") == std::string::npos)
    return fail(g, make_error(ErrorCode::kInvalidArgument, "a group needs a name"));
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  client::IoThread io;
  auto url = checked_server(io, p->server, false);
  if (!url) return fail(g, url.error());
  Api api(io.context(), *url, p->credentials.token, cli_api_options());
  // A second group of the same name makes the name useless for every later command.
  auto list = list_conversations(api);
  if (!list) return fail(g, list.error());
  std::vector<std::string> same;
  for (const auto& c : *list)
    if (c.type == "group" && c.name == name) same.push_back(c.conversation_id + "  members: " + join_names(c.members));
  if (!same.empty() && !force) {
    std::string msg = "you already have a group named " + printable(name) + ":";
    for (const auto& s : same) msg += "\n  " + s;
    msg += "\nuse --force to create another one (then refer to them by id), or pick another name";
    return fail(g, make_error(ErrorCode::kExists, msg));
  }
  auto id = wait_for<std::string>([&](auto cb) { api.create_group(name, members, std::move(cb)); });
  if (!id) return fail(g, id.error());
  if (!same.empty())
    std::cerr << "tern: note: " << same.size() + 1 << " groups are now named " << printable(name)
              << "; refer to them by id\n";
  if (g.json) print_json(json::object{{"conversation_id", *id}, {"name", name}, {"members", to_array(members)}});
  else std::cout << *id << "\n";
  return kExitOk;
}

int cmd_group_members(const Global& g, const std::string& conv, const std::vector<std::string>& users, bool add) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  client::IoThread io;
  auto url = checked_server(io, p->server, false);
  if (!url) return fail(g, url.error());
  Api api(io.context(), *url, p->credentials.token, cli_api_options());
  auto t = resolve_target(api, p->credentials.user, conv);
  if (!t) return fail(g, t.error());
  if (t->type != "group")
    return fail(g, make_error(ErrorCode::kInvalidArgument,
                              printable(conv) + " is a " + (t->type == "channel" ? "channel" : "direct conversation") +
                                  ", not a group" + (t->type == "channel" ? " (use `tern channel add|remove`)" : "")));
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
  return kExitOk;
}

namespace {

// What a one-shot send waits for: its own `sent` (or refusal), the outbox entries an earlier
// run left (they go first, on the same connection), or the connection failing.
struct SendWait {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<client::SendResult>> own;
  size_t settled = 0;         // on_sent + on_send_failed, own included
  size_t earlier_sent = 0;
  std::vector<std::string> earlier_refused;
  std::optional<Error> dropped;  // the connection failed before our `sent`
};

int queued(const Global& g, const Target& t, const std::string& id, const std::string& why) {
  if (g.json)
    print_json(json::object{{"queued", true}, {"conversation_id", t.conversation_id}, {"client_msg_id", id}, {"reason", why}});
  std::cerr << "tern: " << why << "\n"
            << "tern: queued, will be sent by the next `tern send` or `tern chat`\n";
  return kExitQueued;
}

}  // namespace

int cmd_send(const Global& g, const std::string& target, const std::string& text, std::optional<Seq> reply_to,
             const std::string& file) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  auto db = state_db_path();
  if (!db) return fail(g, db.error());
  client::IoThread io;
  std::optional<Error> offline;
  auto url = checked_server(io, p->server, true);
  if (!url && !client::is_network_error(url.error())) return fail(g, url.error());
  if (!url) offline = url.error();
  Target t;
  if (!offline) {
    Api api(io.context(), *url, p->credentials.token, cli_api_options());
    auto r = resolve_target(api, p->credentials.user, target);
    if (!r && !client::is_network_error(r.error())) return fail(g, r.error());
    if (r) t = *r;
    else offline = r.error();
  }
  if (offline) {
    // The server is down: a conversation this device has seen can still be queued.
    auto cached = load_conversations();
    auto r = cached ? resolve_offline(*cached, p->credentials.user, target) : std::nullopt;
    if (!r) {
      if (!g.json)
        std::cerr << "tern: not sent: " << printable(target)
                  << " is not among the conversations this device has seen, so it cannot be queued\n";
      return fail(g, *offline);
    }
    t = *r;
  }
  // An attachment is uploaded first (encrypted; it needs the server): the message then
  // names it and carries its key.
  client::SendOptions so;
  std::string body = text;
  if (!file.empty()) {
    if (offline) return fail(g, *offline);
    auto att = upload_file(*url, p->credentials.token, file);
    if (!att) return fail(g, att.error());
    so.media = {att->media_id};
    body = client::encode_attachment_body(text, {*att});
  }

  auto wait = std::make_shared<SendWait>();
  client::Options o;
  o.server = p->server;
  o.credentials = p->credentials;
  o.store_path = *db;
  o.receive = false;  // a one-shot send: leave incoming messages to `tern chat`
  o.reconnect = {200, 2'000, 0};
  o.api = cli_api_options();
  client::Events ev;
  ev.on_sent = [wait](const client::SendResult&) {
    std::lock_guard l(wait->mu);
    ++wait->settled;
    ++wait->earlier_sent;  // corrected for our own below
    wait->cv.notify_all();
  };
  ev.on_send_failed = [wait](const std::string&, const Error& e) {
    std::lock_guard l(wait->mu);
    ++wait->settled;
    wait->earlier_refused.push_back(e.message);
    wait->cv.notify_all();
  };
  ev.on_state = [wait](client::ConnectionState s, const Error* e) {
    if (s != client::ConnectionState::kDisconnected && s != client::ConnectionState::kStopped) return;
    std::lock_guard l(wait->mu);
    if (!wait->dropped) wait->dropped = e ? *e : client::network_error("disconnected");
    wait->cv.notify_all();
  };
  auto c = client::Client::create(o, std::move(ev));
  if (!c) return fail(g, c.error());
  const size_t earlier = (*c)->outbox_size();
  // Started first, so that the outbox left by an earlier run is loaded (in its order) ahead
  // of this message.
  if (!offline) (*c)->start();
  so.reply_to = reply_to;
  auto id = (*c)->send(t.conversation_id, body, so, [wait](Result<client::SendResult> r) {
    std::lock_guard l(wait->mu);
    wait->own = std::move(r);
    wait->cv.notify_all();
  });
  if (!id) return fail(g, id.error());
  if (offline) {
    (*c)->stop();  // never started: the message is in the outbox, nothing else to do
    return queued(g, t, *id, unreachable_text(*offline));
  }
  std::unique_lock l(wait->mu);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  wait->cv.wait_until(l, deadline, [&] { return wait->own.has_value() || wait->dropped.has_value(); });
  if (wait->own && *wait->own)  // earlier entries were written first: give them a moment to settle
    wait->cv.wait_for(l, 5s, [&] { return wait->settled >= earlier + 1 || wait->dropped.has_value(); });
  auto own = wait->own;
  auto dropped = wait->dropped;
  const size_t earlier_sent = wait->earlier_sent - (own && *own ? 1 : 0);
  const auto refused = wait->earlier_refused;
  l.unlock();
  (*c)->stop();
  for (const auto& why : refused) std::cerr << "tern: a message queued earlier was refused: " << why << "\n";
  if (!own || (!*own && (*own).error().code == ErrorCode::kDraining)) {
    const std::string why = dropped ? (client::is_network_error(*dropped) ? unreachable_text(*dropped) : dropped->message)
                                    : "no answer from the server at " + g_server + " within 30 s";
    return queued(g, t, *id, "not confirmed: " + why);
  }
  if (!*own) return fail(g, (*own).error());
  const client::SendResult& sent = **own;
  if (g.json) {
    print_json(json::object{{"conversation_id", sent.conversation_id},
                            {"seq", sent.seq},
                            {"ts", sent.ts},
                            {"client_msg_id", sent.client_msg_id},
                            {"earlier_sent", earlier_sent}});
  } else {
    std::cout << "sent to " << printable(t.title) << " (seq " << sent.seq << ")\n";
    if (earlier_sent) std::cout << "also sent " << earlier_sent << " message(s) queued earlier\n";
  }
  return kExitOk;
}

int cmd_history(const Global& g, const std::string& target, std::optional<Seq> after, size_t limit) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  client::IoThread io;
  auto url = checked_server(io, p->server, false);
  if (!url) return fail(g, url.error());
  Api api(io.context(), *url, p->credentials.token, cli_api_options());
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
      if (m.expires_at) o["expires_at"] = *m.expires_at;
      if (m.system_json) {
        boost::system::error_code ec;
        o["system"] = json::parse(*m.system_json, ec);
        o["text"] = system_sentence(*m.system_json);
      }
      a.push_back(std::move(o));
    }
    print_json(json::object{{"conversation_id", t->conversation_id}, {"head", page->head}, {"messages", std::move(a)}});
    return kExitOk;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& m : page->messages) {
    if (m.system_json) std::cout << "[" << m.seq << "] " << hhmm(m.ts) << " * " << system_sentence(*m.system_json) << "\n";
    else std::cout << "[" << m.seq << "] " << hhmm(m.ts) << " " << printable(m.sender) << ": " << message_text(m, now) << "\n";
  }
  return kExitOk;
}

}  // namespace tern::cli
