// The `tern` subcommands. Each runs on the CLI's main thread, waits for the SDK's
// asynchronous calls with bounded timeouts (client/blocking.h) and returns the process
// exit status (ExitCode below; `tern --help` and the README list them too).
// With --json, results (and errors) are one JSON object on stdout; never the token.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "base/ids.h"
#include "client/api.h"
#include "client/io_thread.h"
#include "config.h"

namespace boost::json {
class value;
class array;
}  // namespace boost::json

namespace tern::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,       // the server refused, or a local problem (not signed in, bad name…)
  kExitUsage = 2,        // the command line itself is wrong
  kExitQueued = 3,       // `send`: kept in the outbox, not confirmed; the next send or chat sends it
  kExitUnreachable = 4,  // the server could not be reached (connection refused, DNS, timeout)
};
// The table above as help text.
extern const char* const kExitCodesHelp;

struct Global {
  std::string server;  // --server; empty: the saved one, else http://127.0.0.1:8080
  bool json = false;
};

// A conversation the user named on the command line.
struct Target {
  std::string conversation_id;
  std::string type;  // "direct" / "group" / "channel"
  std::string title;  // what to show: the peer, the group or the channel name
  std::vector<std::string> others;  // other members, when known
  Seq head = 0;
};

// HTTP settings of the CLI: a person is waiting, so fewer and shorter retries than the SDK's.
client::ApiOptions cli_api_options();

// The server URL checked: parsed, and when it has a path (or `probe` is set) asked for
// /healthz, so that a wrong path or an unreachable server is reported as such. Also sets
// the server named by later error messages.
Result<client::ServerUrl> checked_server(client::IoThread& io, const std::string& server, bool probe);

// "@bob" or a user name → the direct conversation (created if needed); a conversation id
// or a group name from the caller's list → that conversation. Errors say which: several
// groups of that name (listed with their members), a conversation the caller is not a
// member of, one that does not exist, no such user.
Result<Target> resolve_target(const client::Api& api, const std::string& self, const std::string& text);
// The same against a saved list (no server): nullopt when the list does not have it.
std::optional<Target> resolve_offline(const std::vector<client::ConversationInfo>& list, const std::string& self,
                                      const std::string& text);

// A channel id as the server issues them: "ch-" and then letters and digits.
bool looks_like_channel_id(const std::string& s);
// One JSON document on stdout (--json output).
void print_json(const boost::json::value& v);
boost::json::array to_array(const std::vector<std::string>& v);

// Error reporting shared by the commands: stderr text, and a JSON object with --json.
// Returns the exit code (kExitUnreachable for network failures, else kExitFailed).
int fail(const Global& g, const Error& e);
// The saved profile, with --server applied; an error naming the directory when there is none.
Result<Profile> require_profile(const Global& g);

int cmd_register(const Global& g, const std::string& user, bool force);
int cmd_link_code(const Global& g);
int cmd_link(const Global& g, const std::string& user, const std::string& code, bool force);
int cmd_conversations(const Global& g);
int cmd_group_create(const Global& g, const std::string& name, const std::vector<std::string>& members, bool force);
int cmd_group_members(const Global& g, const std::string& conv, const std::vector<std::string>& users, bool add);
// With `file`, the file goes first as an encrypted attachment (tern download fetches it).
int cmd_send(const Global& g, const std::string& target, const std::string& text, std::optional<Seq> reply_to,
             const std::string& file = {});
int cmd_history(const Global& g, const std::string& target, std::optional<Seq> after, size_t limit);
int cmd_whoami(const Global& g);

// channel_commands.cc. `tern channel post` is cmd_send.
int cmd_channel_create(const Global& g, const std::string& name, bool is_private);
int cmd_channel_join(const Global& g, const std::string& id);
int cmd_channel_leave(const Global& g, const std::string& channel);
int cmd_channel_info(const Global& g, const std::string& channel);
int cmd_channel_subscribers(const Global& g, const std::string& channel, const std::vector<std::string>& users, bool add);
int cmd_channel_admins(const Global& g, const std::string& channel, const std::vector<std::string>& users, bool add);

}  // namespace tern::cli
