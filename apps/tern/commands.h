// The `tern` subcommands. Each runs on the CLI's main thread, waits for the SDK's
// asynchronous calls with bounded timeouts (client/blocking.h) and returns the process
// exit status: 0 ok, 1 failed, 3 queued but not confirmed (`send` timed out; the message
// stays in the outbox and goes with the next `tern` run).
// With --json, results (and errors) are one JSON object on stdout; never the token.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "base/ids.h"
#include "client/api.h"
#include "config.h"

namespace tern::cli {

struct Global {
  std::string server;  // --server; empty: the saved one, else http://127.0.0.1:8080
  bool json = false;
};

// A conversation the user named on the command line.
struct Target {
  std::string conversation_id;
  std::string type;  // "direct" / "group"
  std::string title;  // what to show: the peer or the group name
  std::vector<std::string> others;  // other members, when known
  Seq head = 0;
};

// "@bob" or a user name → the direct conversation (created if needed); a conversation id
// or a group name from the caller's list → that conversation.
Result<Target> resolve_target(const client::Api& api, const std::string& self, const std::string& text);

// Error reporting shared by the commands: stderr text, and a JSON object with --json.
int fail(const Global& g, const Error& e);
// The saved profile, with --server applied; an error when there is none.
Result<Profile> require_profile(const Global& g);

int cmd_register(const Global& g, const std::string& user, bool force);
int cmd_link_code(const Global& g);
int cmd_link(const Global& g, const std::string& user, const std::string& code, bool force);
int cmd_conversations(const Global& g);
int cmd_group_create(const Global& g, const std::string& name, const std::vector<std::string>& members);
int cmd_group_members(const Global& g, const std::string& conv, const std::vector<std::string>& users, bool add);
int cmd_send(const Global& g, const std::string& target, const std::string& text, std::optional<Seq> reply_to);
int cmd_history(const Global& g, const std::string& target, std::optional<Seq> after, size_t limit);
int cmd_whoami(const Global& g);

}  // namespace tern::cli
