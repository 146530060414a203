// ternd's options for running in the open (issue 12): safety limits, the admin endpoint and
// the push webhook (TLS is not in ternd yet). Kept apart from server_options.cc so that file stays the list of
// core options; parse_options() calls the three functions below.
// Plain value and functions; start-up only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include "base/result.h"

namespace tern::server {

struct OpenOptions {
  std::string admin_listen;      // HOST:PORT of the admin endpoint; empty = none
  std::string admin_token_file;  // holds the admin token (required with --admin-listen)
  std::string admin_token;       // read from the file at start-up
  std::string admin_host;        // admin_listen, split
  uint16_t admin_port = 0;
};

struct ServerOptions;

void describe_open_options(CLI::App& app, ServerOptions& o);
void read_open_toml(const toml::table& t, std::set<std::string, std::less<>>& known, ServerOptions& o);
// Checks the values after parsing and reads the admin token file.
Result<void> check_open_options(ServerOptions& o);

}  // namespace tern::server
