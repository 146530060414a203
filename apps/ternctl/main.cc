// ternctl: the operator's tool for ternd's admin endpoint (issue 12; docs/protocol.md §16).
//   ternctl [--admin URL] [--token-file FILE] COMMAND ...
//   users [--after NAME] [--limit N]   list users
//   user NAME                          devices, last seen, flags
//   suspend NAME | unsuspend NAME      suspend (devices disconnected, tokens refused) / lift it
//   delete NAME                        close the account (tokens revoked, devices disconnected)
//   revoke NAME DEVICE                 revoke one device
//   reports [--after ID] [--limit N]   abuse reports
//   stats                              live figures
//   nodes                              the nodes sharing the store, as this node sees them
// Prints the endpoint's JSON answer on stdout; exits 0 on success, 1 on an error answer or a
// network failure (the reason on stderr), 2 on bad usage. The token is read from a file (never
// a flag: flags show in `ps`). Single-threaded.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>

#include "client/http_call.h"
#include "client/server_url.h"

namespace {

int call(const std::string& admin_url, const std::string& token, const std::string& method, const std::string& target) {
  auto url = tern::client::parse_server_url(admin_url);
  if (!url) {
    std::fprintf(stderr, "ternctl: %s\n", url.error().message.c_str());
    return 2;
  }
  boost::asio::io_context ioc;
  int rc = 1;
  tern::client::HttpCallSpec spec;
  spec.method = method;
  spec.target = target;
  spec.token = token;
  tern::client::http_call(ioc, *url, spec, [&](tern::Result<tern::client::HttpResult> r) {
    if (!r) {
      std::fprintf(stderr, "ternctl: %s\n", r.error().message.c_str());
      return;
    }
    if (!r->body.empty()) std::printf("%s\n", r->body.c_str());
    if (r->status >= 200 && r->status < 300) rc = 0;
    else std::fprintf(stderr, "ternctl: HTTP %d\n", r->status);
  });
  ioc.run();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ternctl: administer a ternd through its admin endpoint (--admin-listen)"};
  std::string admin = "http://127.0.0.1:8081";
  std::string token_file;
  app.add_option("--admin", admin, "the admin endpoint's URL")->capture_default_str();
  app.add_option("--token-file", token_file, "file holding the admin token (ternd's --admin-token-file)")->required();
  app.require_subcommand(1);
  std::string name, after;
  unsigned device = 0, limit = 100;
  auto* users = app.add_subcommand("users", "list users");
  users->add_option("--after", after, "start after this user");
  users->add_option("--limit", limit, "page size (1-1000)");
  auto* user = app.add_subcommand("user", "show a user");
  user->add_option("name", name)->required();
  auto* suspend = app.add_subcommand("suspend", "suspend a user: devices disconnected, tokens refused");
  suspend->add_option("name", name)->required();
  auto* unsuspend = app.add_subcommand("unsuspend", "lift a suspension");
  unsuspend->add_option("name", name)->required();
  auto* remove = app.add_subcommand("delete", "close an account: tokens revoked, devices disconnected");
  remove->add_option("name", name)->required();
  auto* revoke = app.add_subcommand("revoke", "revoke one device");
  revoke->add_option("name", name)->required();
  revoke->add_option("device", device)->required();
  auto* reports = app.add_subcommand("reports", "list abuse reports");
  reports->add_option("--after", after, "report id to start after");
  reports->add_option("--limit", limit, "page size (1-1000)");
  auto* stats = app.add_subcommand("stats", "live figures: connections, messages/s, commit latency, queues");
  auto* nodes = app.add_subcommand("nodes", "the nodes sharing the store (Redis mode), as this node sees them");
  CLI11_PARSE(app, argc, argv);

  std::ifstream in(token_file);
  if (!in) {
    std::fprintf(stderr, "ternctl: cannot read %s\n", token_file.c_str());
    return 2;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string token = ss.str();
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) token.pop_back();

  const std::string base = "/admin/v1/";
  const std::string page = "limit=" + std::to_string(limit) + (after.empty() ? "" : "&after=" + after);
  if (*users) return call(admin, token, "GET", base + "users?" + page);
  if (*user) return call(admin, token, "GET", base + "users/" + name);
  if (*suspend) return call(admin, token, "POST", base + "users/" + name + "/suspend");
  if (*unsuspend) return call(admin, token, "POST", base + "users/" + name + "/unsuspend");
  if (*remove) return call(admin, token, "DELETE", base + "users/" + name);
  if (*revoke) return call(admin, token, "DELETE", base + "users/" + name + "/devices/" + std::to_string(device));
  if (*reports) return call(admin, token, "GET", base + "reports?" + page);
  if (*stats) return call(admin, token, "GET", base + "stats");
  if (*nodes) return call(admin, token, "GET", base + "nodes");
  return 2;
}
