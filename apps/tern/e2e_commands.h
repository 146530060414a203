// `tern`'s end-to-end encryption (docs/crypto.md): the SDK options every messaging command
// uses (store and keys under the config directory), publishing a new device's keys at
// `register` / `device link`, identity-change warnings, and `tern verify`.
// Runs on the CLI's main thread.
#pragma once
#include <string>
#include <vector>

#include "client/client.h"
#include "client/io_thread.h"
#include "commands.h"

namespace tern::cli {

// Options for an SDK client of this device: the state store and the keyring under the
// config directory, so messages are end-to-end encrypted (channels excepted).
Result<client::Options> device_options(const Profile& p);
// A new device's keys: a fresh keyring (whatever was in keys/ before belonged to other
// credentials) and its upload, so that others can encrypt to it before it ever connects.
Result<void> publish_new_device_keys(client::IoThread& io, const client::ServerUrl& url, const client::Credentials& c);
// One line on stderr per contact among `users` whose identity key changed since verified.
void warn_identity_changes(const client::Client& c, const std::vector<std::string>& users);
// Messages of a backfill page as this device reads them (decrypted; see Client::open_page).
Result<client::HistoryPage> open_history(client::Client& c, client::HistoryPage page);

int cmd_verify(const Global& g, const std::string& user);
// `tern keys protect --new-passphrase-file F` / `tern keys unprotect`.
int cmd_keys_protect(const Global& g, const std::string& new_file);

}  // namespace tern::cli
