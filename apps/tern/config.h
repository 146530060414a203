// The CLI's settings and credentials under the XDG config directory:
// $XDG_CONFIG_HOME/tern (default ~/.config/tern), directory mode 0700, files 0600.
//   credentials.json  {"server":"http://…","user":"alice","device":1,"token":"…"}
//   state.sqlite      the SDK's outbox and cursors (so `tern send` and `tern chat` lose
//                     nothing across runs)
//   keys/             this device's end-to-end encryption keys and sessions (client/keyring.h:
//                     keyring.state encrypted under keyring.key, both 0600)
//   conversations.json the last conversation list seen (ids, types, names, members), so
//                     that `tern send` can queue a message while the server is down
// Not thread-safe; used from the CLI's main thread.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "client/keyring.h"
#include "client/types.h"

namespace tern::cli {

struct Profile {
  std::string server;
  std::string ca_file;  // --ca: PEM CAs trusted for an https:// server (a private CA); "ca" key
  client::Credentials credentials;
};

// The directory, created (0700) if missing.
Result<std::string> config_dir();
Result<std::optional<Profile>> load_profile();
// Written to a temporary file (0600) and renamed over the old one.
Result<void> save_profile(const Profile& profile);
Result<std::string> state_db_path();
Result<std::string> keyring_dir();
// The keyring's passphrase, from --passphrase-file (or $TERN_PASSPHRASE_FILE): its first line.
// nullopt: the keyring uses its key file. Set once by main() before any command runs.
void set_passphrase_file(std::string path);
Result<std::optional<std::string>> keyring_passphrase();
client::KeyringOptions keyring_options(const std::optional<std::string>& passphrase);
// The conversation list cache (see above). Saving is best effort; loading a missing file
// gives an empty list.
Result<void> save_conversations(const std::vector<client::ConversationInfo>& list);
Result<std::vector<client::ConversationInfo>> load_conversations();

}  // namespace tern::cli
