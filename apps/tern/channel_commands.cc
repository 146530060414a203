// `tern channel create|join|leave|info|add|remove|admin`: broadcast channels (issue 9). One
// owner, admins post (`tern channel post` is `tern send`), subscribers read. Channel posts are
// not end-to-end encrypted (the server fans them out to up to 200,000 subscribers).
// Main thread only, like every command (commands.h).
#include <iostream>

#include <boost/json.hpp>

#include "client/blocking.h"
#include "client/errors.h"
#include "commands.h"
#include "format.h"
#include "terminal.h"

namespace tern::cli {
namespace json = boost::json;
using client::Api;
using client::wait_for;

bool looks_like_channel_id(const std::string& s) {
  if (s.size() < 4 || s.size() > 64 || !s.starts_with("ch-")) return false;
  for (size_t i = 3; i < s.size(); ++i)
    if (!std::isalnum(static_cast<unsigned char>(s[i]))) return false;
  return true;
}

namespace {

// The saved account talking to its server: what every channel command starts with.
struct Session {
  Profile profile;
  client::IoThread io;
  std::optional<Api> api;
};

Result<std::unique_ptr<Session>> open_session(const Global& g) {
  auto p = require_profile(g);
  if (!p) return p.error();
  auto s = std::make_unique<Session>();
  s->profile = *p;
  auto url = checked_server(s->io, s->profile.server, false);
  if (!url) return url.error();
  s->api.emplace(s->io.context(), *url, s->profile.credentials.token, cli_api_options());
  return s;
}

// A channel named by id or by name from the caller's list; an error for anything else.
Result<Target> resolve_channel(const Session& s, const std::string& text) {
  auto t = resolve_target(*s.api, s.profile.credentials.user, text);
  if (!t) return t.error();
  if (t->type != "channel")
    return make_error(ErrorCode::kInvalidArgument,
                      printable(text) + " is a " + (t->type == "group" ? "group" : "direct conversation") +
                          ", not a channel");
  return t;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

int cmd_channel_create(const Global& g, const std::string& name, bool is_private) {
  if (name.find_first_not_of(" \t") == std::string::npos)
    return fail(g, make_error(ErrorCode::kInvalidArgument, "a channel needs a name"));
  auto s = open_session(g);
  if (!s) return fail(g, s.error());
  auto id = wait_for<std::string>([&](auto cb) { (*s)->api->create_channel(name, !is_private, std::move(cb)); });
  if (!id) return fail(g, id.error());
  if (g.json) {
    print_json(json::object{{"conversation_id", *id}, {"name", name}, {"public", !is_private}});
  } else {
    std::cout << *id << "\n";
    std::cerr << "tern: " << (is_private ? "private" : "public") << " channel " << printable(name)
              << " created; you are its owner. "
              << (is_private ? "Add subscribers with `tern channel add " + *id + " USER…`."
                             : "Others join with `tern channel join " + *id + "`.")
              << " Posts are not end-to-end encrypted.\n";
  }
  return kExitOk;
}

int cmd_channel_join(const Global& g, const std::string& id) {
  if (!looks_like_channel_id(id))
    return fail(g, make_error(ErrorCode::kInvalidArgument, printable(id) + " is not a channel id (ch-…)"));
  auto s = open_session(g);
  if (!s) return fail(g, s.error());
  auto j = wait_for<client::JoinResult>([&](auto cb) { (*s)->api->join_channel(id, std::move(cb)); });
  if (!j) {
    // The server does not tell a private channel from one that does not exist.
    if (j.error().code == ErrorCode::kNotFound)
      return fail(g, make_error(ErrorCode::kNotFound,
                                "no public channel " + id + " (it does not exist, or it is private: ask an admin)"));
    return fail(g, j.error());
  }
  if (g.json) {
    print_json(json::object{{"conversation_id", j->conversation_id},
                            {"joined_seq", j->joined_seq},
                            {"subscribers", j->subscribers}});
  } else {
    std::cout << "joined " << j->conversation_id << " (" << j->subscribers << " subscribers); posts from seq "
              << j->joined_seq << " on will reach you\n";
  }
  return kExitOk;
}

int cmd_channel_leave(const Global& g, const std::string& channel) {
  auto s = open_session(g);
  if (!s) return fail(g, s.error());
  auto t = resolve_channel(**s, channel);
  if (!t) return fail(g, t.error());
  auto r = wait_for<void>([&](auto cb) { (*s)->api->leave_channel(t->conversation_id, std::move(cb)); });
  if (!r) return fail(g, r.error());
  if (g.json) print_json(json::object{{"conversation_id", t->conversation_id}, {"left", true}});
  else std::cout << "left " << printable(t->title) << " (" << t->conversation_id << ")\n";
  return kExitOk;
}

int cmd_channel_info(const Global& g, const std::string& channel) {
  auto s = open_session(g);
  if (!s) return fail(g, s.error());
  auto t = resolve_channel(**s, channel);
  if (!t) return fail(g, t.error());
  auto info =
      wait_for<client::ConversationInfo>([&](auto cb) { (*s)->api->conversation_info(t->conversation_id, std::move(cb)); });
  if (!info) return fail(g, info.error());
  if (g.json) {
    boost::system::error_code ec;
    json::value v = json::parse(info->json, ec);  // the server's object, fields we do not model included
    print_json(ec ? json::value(json::object{{"conversation_id", info->conversation_id}}) : v);
    return kExitOk;
  }
  const std::string& self = (*s)->profile.credentials.user;
  std::cout << "channel     " << printable(info->name) << " (" << info->conversation_id << ")\n"
            << "access      " << (info->is_public ? "public: anyone with the id can join" : "private: admins add subscribers")
            << "\n"
            << "owner       " << printable(info->owner) << "\n"
            << "admins      " << join_names(info->admins) << "\n"
            << "subscribers " << info->subscribers << "\n"
            << "head        " << info->head << " (you see posts from seq " << info->joined_seq << " on)\n"
            << "you         " << (info->owner == self ? "owner" : contains(info->admins, self) ? "admin" : "subscriber (read-only)")
            << "\n";
  if (!info->views.empty()) {
    std::cout << "views       (subscribers who read at least up to the post; approximate)\n";
    for (const auto& v : info->views) std::cout << "  seq " << v.seq << ": " << v.views << "\n";
  }
  return kExitOk;
}

namespace {

// `tern channel add|remove|admin`: one add/remove call on a resolved channel; `show` prints
// the answer (its JSON fields, or a line).
template <typename T, typename Call, typename Show>
int change_channel(const Global& g, const std::string& channel, const std::vector<std::string>& users, bool add,
                   Call call, Show show) {
  auto s = open_session(g);
  if (!s) return fail(g, s.error());
  auto t = resolve_channel(**s, channel);
  if (!t) return fail(g, t.error());
  const std::vector<std::string> none;
  auto r = wait_for<T>([&](auto cb) { call(*(*s)->api, t->conversation_id, add ? users : none, add ? none : users, std::move(cb)); });
  if (!r) return fail(g, r.error());
  show(t->conversation_id, *r);
  return kExitOk;
}

}  // namespace

int cmd_channel_subscribers(const Global& g, const std::string& channel, const std::vector<std::string>& users, bool add) {
  return change_channel<uint64_t>(
      g, channel, users, add,
      [](const Api& api, const std::string& id, const auto& a, const auto& r, auto cb) {
        api.change_subscribers(id, a, r, std::move(cb));
      },
      [&](const std::string& id, uint64_t n) {
        if (g.json) print_json(json::object{{"conversation_id", id}, {"subscribers", n}});
        else std::cout << n << " subscribers\n";
      });
}

int cmd_channel_admins(const Global& g, const std::string& channel, const std::vector<std::string>& users, bool add) {
  return change_channel<std::vector<std::string>>(
      g, channel, users, add,
      [](const Api& api, const std::string& id, const auto& a, const auto& r, auto cb) {
        api.change_admins(id, a, r, std::move(cb));
      },
      [&](const std::string& id, const std::vector<std::string>& admins) {
        if (g.json) print_json(json::object{{"conversation_id", id}, {"admins", to_array(admins)}});
        else std::cout << "admins: " << join_names(admins) << "\n";
      });
}

}  // namespace tern::cli
