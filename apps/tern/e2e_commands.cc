#include "e2e_commands.h"

#include <filesystem>
#include <iostream>

#include <boost/json.hpp>

#include "client/blocking.h"
#include "client/e2e_session.h"
#include "client/keyring.h"
#include "client/sqlite_store.h"
#include "crypto/fingerprint.h"
#include "terminal.h"

namespace tern::cli {
namespace json = boost::json;
using client::wait_for;

Result<client::Options> device_options(const Profile& p) {
  auto db = state_db_path();
  if (!db) return db.error();
  auto keys = keyring_dir();
  if (!keys) return keys.error();
  auto passphrase = keyring_passphrase();
  if (!passphrase) return passphrase.error();
  client::Options o;
  o.server = p.server;
  o.ca_file = p.ca_file;
  o.credentials = p.credentials;
  o.store_path = *db;
  o.keyring_dir = *keys;
  o.keyring_passphrase = std::move(*passphrase);
  o.api = cli_api_options();
  return o;
}

Result<void> publish_new_device_keys(client::IoThread& io, const client::ServerUrl& url, const client::Credentials& c) {
  auto dir = keyring_dir();
  if (!dir) return dir.error();
  std::error_code ec;
  auto passphrase = keyring_passphrase();
  if (!passphrase) return passphrase.error();
  std::filesystem::remove_all(*dir, ec);
  if (ec) return make_error(ErrorCode::kInternal, "cannot replace " + *dir + ": " + ec.message());
  auto keyring = client::Keyring::open(*dir, keyring_options(*passphrase));
  if (!keyring) return keyring.error();
  auto body = (*keyring)->upload_body(true, client::kPrekeyTarget);
  if (!body) return body.error();
  client::Api api(io.context(), url, c.token, cli_api_options());
  auto count = wait_for<size_t>([&](auto cb) { api.upload_keys(*body, std::move(cb)); });
  if (!count) return count.error();
  return {};
}

void warn_identity_changes(const client::Client& c, const std::vector<std::string>& users) {
  auto changed = c.identity_changes();
  if (!changed) return;
  for (const auto& u : *changed)
    if (std::find(users.begin(), users.end(), u) != users.end())
      std::cerr << "tern: warning: " << printable(u)
                << "'s identity key changed (a new installation, or someone in between); compare safety numbers: "
                   "tern verify "
                << printable(u) << "\n";
}

Result<client::HistoryPage> open_history(client::Client& c, client::HistoryPage page) {
  return wait_for<client::HistoryPage>([&](auto cb) { c.open_page(std::move(page), std::move(cb)); });
}

namespace {
std::string grouped(const std::string& digits) {
  std::string out;
  for (size_t i = 0; i < digits.size(); i += 5) out += (i ? " " : "") + digits.substr(i, 5);
  return out;
}
std::span<const uint8_t> bytes_of(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
}  // namespace

int cmd_verify(const Global& g, const std::string& user) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  auto dir = keyring_dir();
  if (!dir) return fail(g, dir.error());
  if (!std::filesystem::exists(*dir + "/keyring.state"))
    return fail(g, make_error(ErrorCode::kNotFound, "this device has no keys yet (" + *dir + "); send or chat once"));
  auto passphrase = keyring_passphrase();
  if (!passphrase) return fail(g, passphrase.error());
  auto keyring = client::Keyring::open(*dir, keyring_options(*passphrase));
  if (!keyring) return fail(g, keyring.error());
  const std::string own = (*keyring)->identity_public();
  auto own_key = crypto::parse_public(bytes_of(own));
  if (!own_key) return fail(g, make_error(ErrorCode::kInternal, "own identity key is malformed"));
  client::IoThread io;
  auto url = checked_server(io, p->server, false);
  if (!url) return fail(g, url.error());
  client::Api api(io.context(), *url, p->credentials.token, cli_api_options());
  auto devices = wait_for<std::vector<client::UserDevice>>([&](auto cb) { api.user_devices(user, std::move(cb)); });
  if (!devices) return fail(g, devices.error());
  json::array out;
  for (const auto& d : *devices) {
    if (d.identity_key.empty()) continue;
    auto key = crypto::parse_public(bytes_of(d.identity_key));
    if (!key) return fail(g, make_error(ErrorCode::kMalformed, "the server sent a malformed identity key"));
    auto number = crypto::safety_number(crypto::kSafetyNumberIterations, bytes_of(p->credentials.user), *own_key,
                                        bytes_of(user), *key);
    if (!number) return fail(g, make_error(ErrorCode::kInternal, "safety number failed"));
    if (!g.json)
      std::cout << printable(user) << " device " << d.device << ":\n  " << grouped(number->substr(0, 30)) << "\n  "
                << grouped(number->substr(30)) << "\n";
    out.push_back(json::object{{"device", d.device}, {"safety_number", *number}});
  }
  if (out.empty()) return fail(g, make_error(ErrorCode::kNotFound, printable(user) + " has no device with keys"));
  // Shown: a change noted earlier is now the user's to judge.
  if (auto db = state_db_path(); db)
    if (auto store = client::SqliteStore::open(*db); store) (void)(*store)->clear_identity_change(user);
  if (g.json) {
    print_json(json::object{{"user", user}, {"devices", std::move(out)}});
  } else {
    std::cout << "Compare these numbers with " << printable(user)
              << " in person or over another channel: they match on both sides (`tern verify "
              << printable(p->credentials.user) << "` there) unless someone is in between.\n";
  }
  return kExitOk;
}

// Switches the keyring between its key file and a passphrase. The keyring is opened the way
// it is now (--passphrase-file names the current passphrase when it has one), then re-saved
// under the new one (read from new_file, first line) or, with an empty new_file, under a
// fresh key file.
int cmd_keys_protect(const Global& g, const std::string& new_file) {
  auto dir = keyring_dir();
  if (!dir) return fail(g, dir.error());
  if (!std::filesystem::exists(*dir + "/keyring.state"))
    return fail(g, make_error(ErrorCode::kNotFound, "this device has no keys yet (" + *dir + ")"));
  auto current = keyring_passphrase();
  if (!current) return fail(g, current.error());
  std::optional<std::string> next;
  if (!new_file.empty()) {
    set_passphrase_file(new_file);
    auto n = keyring_passphrase();
    if (!n) return fail(g, n.error());
    next = std::move(*n);
  }
  auto keyring = client::Keyring::open(*dir, keyring_options(*current));
  if (!keyring) return fail(g, keyring.error());
  auto r = (*keyring)->set_passphrase(next ? std::optional<std::string_view>(*next) : std::nullopt);
  if (!r) return fail(g, r.error());
  const char* mode = next ? "passphrase" : "key file";
  if (g.json) print_json(json::object{{"protected_by", mode}});
  else std::cout << "keys in " << *dir << " are now protected by a " << mode << "\n";
  return kExitOk;
}

}  // namespace tern::cli
