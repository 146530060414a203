// tern: the command-line client for people. A thin main: CLI11 parsing, then one command.
#include <CLI/CLI.hpp>

#include <iostream>

#include "base/log.h"
#include "chat.h"
#include "commands.h"
#include "media_commands.h"

int main(int argc, char** argv) {
  using namespace tern::cli;
  CLI::App app{
      "tern: the Tern messaging client.\n"
      "Credentials and settings live in $XDG_CONFIG_HOME/tern (default ~/.config/tern), mode 0600.\n"
      "Messages are sent as plain UTF-8 text, base64 on the wire: end-to-end encryption is not\n"
      "implemented yet (a later release), so the server operator can read them."};
  app.footer(kExitCodesHelp);
  app.require_subcommand(1);
  app.fallthrough();  // --server etc. may follow the subcommand too (inherited by subcommands)
  Global g;
  std::string log_level = "warn";
  app.add_option("--server", g.server, "server URL, e.g. http://127.0.0.1:8080 (default: the saved one)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")->capture_default_str();

  auto add_json = [&](CLI::App* c) { c->add_flag("--json", g.json, "print the result as one JSON object"); };

  std::string user, code, name, conv, target, text_arg;
  std::vector<std::string> users, words;
  bool force = false;
  size_t limit = 50, history = 30;
  std::optional<tern::Seq> after, reply_to;

  auto* reg = app.add_subcommand("register", "create an account; this device becomes its first device");
  reg->add_option("user", user, "user id: [a-z0-9_.-]{1,64}")->required();
  reg->add_flag("--force", force, "replace credentials already saved here");
  add_json(reg);

  auto* device = app.add_subcommand("device", "add a device to your account with a one-time code");
  device->require_subcommand(1);
  auto* link_code = device->add_subcommand("link-code", "on a signed-in device: show a one-time code (10 minutes)");
  add_json(link_code);
  auto* link = device->add_subcommand("link", "on the new device: sign in with the code");
  link->add_option("user", user, "your user id")->required();
  link->add_option("code", code, "the code shown by `tern device link-code`")->required();
  link->add_flag("--force", force, "replace credentials already saved here");
  add_json(link);

  auto* convs = app.add_subcommand("conversations", "list your conversations");
  add_json(convs);

  auto* group = app.add_subcommand("group", "create groups and change their members (admin only)");
  group->require_subcommand(1);
  auto* gcreate = group->add_subcommand("create", "create a group with you as admin");
  gcreate->add_option("name", name, "group name")->required();
  gcreate->add_option("members", users, "other members")->required();
  gcreate->add_flag("--force", force, "create it even if you already have a group of that name");
  add_json(gcreate);
  auto* gadd = group->add_subcommand("add", "add members");
  gadd->add_option("conversation", conv, "group id or name")->required();
  gadd->add_option("users", users, "users to add")->required();
  add_json(gadd);
  auto* gremove = group->add_subcommand("remove", "remove members");
  gremove->add_option("conversation", conv, "group id or name")->required();
  gremove->add_option("users", users, "users to remove")->required();
  add_json(gremove);

  bool is_private = false;
  auto* channel = app.add_subcommand("channel", "broadcast channels: admins post, subscribers read (not end-to-end encrypted)");
  channel->require_subcommand(1);
  auto* ccreate = channel->add_subcommand("create", "create a channel with you as owner");
  ccreate->add_option("name", name, "channel name")->required();
  ccreate->add_flag("--private", is_private, "only admins add subscribers (default: anyone with the id may join)");
  add_json(ccreate);
  auto* cjoin = channel->add_subcommand("join", "subscribe to a public channel");
  cjoin->add_option("id", conv, "channel id (ch-…)")->required();
  add_json(cjoin);
  auto* cleave = channel->add_subcommand("leave", "unsubscribe (the owner cannot leave)");
  cleave->add_option("channel", conv, "channel id or name")->required();
  add_json(cleave);
  auto* cpost = channel->add_subcommand("post", "post to a channel (owner and admins)");
  cpost->add_option("channel", target, "channel id or name")->required();
  cpost->add_option("text", words, "post text")->required();
  add_json(cpost);
  auto* cinfo = channel->add_subcommand("info", "subscribers, admins, head and views of the last posts");
  cinfo->add_option("channel", conv, "channel id or name")->required();
  add_json(cinfo);
  auto* cadd = channel->add_subcommand("add", "subscribe users (admins; the way into a private channel)");
  cadd->add_option("channel", conv, "channel id or name")->required();
  cadd->add_option("users", users, "users to subscribe")->required();
  add_json(cadd);
  auto* cremove = channel->add_subcommand("remove", "unsubscribe users (admins)");
  cremove->add_option("channel", conv, "channel id or name")->required();
  cremove->add_option("users", users, "users to unsubscribe")->required();
  add_json(cremove);
  bool admin_remove = false;
  auto* cadmin = channel->add_subcommand("admin", "make users admins, or with --remove no longer (owner only)");
  cadmin->add_option("channel", conv, "channel id or name")->required();
  cadmin->add_option("users", users, "users")->required();
  cadmin->add_flag("--remove", admin_remove, "take the admin role away instead");
  add_json(cadmin);

  auto* send = app.add_subcommand("send", "send one message (plain text; not end-to-end encrypted yet)");
  send->add_option("target", target, "conversation id, group name, or a user (@bob or bob)")->required();
  std::string file, out;
  send->add_option("text", words, "message text (optional with --file)");
  send->add_option("--reply-to", reply_to, "seq of the message this replies to");
  send->add_option("--file", file, "attach this file (encrypted on this device, at most 100 MiB)");
  add_json(send);

  tern::Seq seq = 0;
  auto* dl = app.add_subcommand("download", "save the attachment(s) of a message");
  dl->add_option("target", target, "conversation id, group name, or a user")->required();
  dl->add_option("seq", seq, "the message's seq")->required();
  dl->add_option("-o,--output", out, "file (one attachment) or directory; default: their names, here");
  add_json(dl);

  auto* hist = app.add_subcommand("history", "print a conversation's messages");
  hist->add_option("target", target, "conversation id, group name, or a user")->required();
  hist->add_option("--limit", limit, "at most this many messages")->capture_default_str();
  hist->add_option("--after", after, "only messages after this seq (default: the last --limit)");
  add_json(hist);

  auto* chat = app.add_subcommand("chat", "interactive chat (not end-to-end encrypted yet)");
  chat->add_option("target", target, "a user (bob, @bob), a group name or a conversation id")->required();
  chat->add_option("--history", history, "messages shown on open")->capture_default_str();

  auto* whoami = app.add_subcommand("whoami", "show the saved account");
  add_json(whoami);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints the help, or the error and a hint
    return code == 0 ? kExitOk : kExitUsage;
  }
  tern::init_logging(log_level);

  auto joined = [&] {
    std::string s;
    for (const auto& w : words) s += (s.empty() ? "" : " ") + w;
    return s;
  };
  if (reg->parsed()) return cmd_register(g, user, force);
  if (link_code->parsed()) return cmd_link_code(g);
  if (link->parsed()) return cmd_link(g, user, code, force);
  if (convs->parsed()) return cmd_conversations(g);
  if (gcreate->parsed()) return cmd_group_create(g, name, users, force);
  if (gadd->parsed()) return cmd_group_members(g, conv, users, true);
  if (gremove->parsed()) return cmd_group_members(g, conv, users, false);
  if (ccreate->parsed()) return cmd_channel_create(g, name, is_private);
  if (cjoin->parsed()) return cmd_channel_join(g, conv);
  if (cleave->parsed()) return cmd_channel_leave(g, conv);
  if (cpost->parsed()) return cmd_send(g, target, joined(), std::nullopt);
  if (cinfo->parsed()) return cmd_channel_info(g, conv);
  if (cadd->parsed()) return cmd_channel_subscribers(g, conv, users, true);
  if (cremove->parsed()) return cmd_channel_subscribers(g, conv, users, false);
  if (cadmin->parsed()) return cmd_channel_admins(g, conv, users, !admin_remove);
  if (send->parsed()) {
    if (words.empty() && file.empty()) {
      std::cerr << "tern send: give a message text, a --file, or both\n";
      return kExitUsage;
    }
    return cmd_send(g, target, joined(), reply_to, file);
  }
  if (dl->parsed()) return cmd_download(g, target, seq, out);
  if (hist->parsed()) return cmd_history(g, target, after, limit);
  if (chat->parsed()) return cmd_chat(g, target, history);
  if (whoami->parsed()) return cmd_whoami(g);
  return kExitUsage;
}
