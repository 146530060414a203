// Conversation ids that no one but the members can derive, and the data directory's privacy.
//
// A direct conversation's id is `d-` + 32 hex digits of a keyed BLAKE2b (libsodium
// crypto_generichash) of the two user ids, sorted, under a 32-byte server secret. The secret
// is created at random on first start in the data directory (file `direct-ids.secret`, mode
// 0600) and read at every start, so the same pair gets the same id across restarts, while a
// third party, who lacks the secret, cannot compute it. Group ids are random (`g-` + 24 hex).
//
// Non-members get one answer for every conversation they are not in, whether or not it
// exists (conversation_access_error): an id tells them nothing. A member who was removed is
// refused with the same 403, as wire-v1 requires.
//
// Thread-safety: set_direct_id_secret() once at start, before any id is computed; the rest
// is pure and thread-safe.
#pragma once
#include <string>

#include "base/result.h"

namespace tern::services {

inline constexpr const char* kDirectIdSecretFile = "direct-ids.secret";

// Makes `dir` private (umask 077 for the whole process, so every file the store creates later
// is 0600; the directory and what it already holds are set to 0700/0600), creating it if needed.
Result<void> secure_data_dir(const std::string& dir);

// Reads the 32-byte secret from `path`, creating it (0600) on first start.
Result<std::string> load_or_create_secret(const std::string& path);
void set_direct_id_secret(const std::string& secret);

// `d-` + 32 hex digits, keyed with the secret (the order of a and b does not matter).
std::string keyed_direct_conversation_id(const std::string& a, const std::string& b);

// The answer to a non-member, for existing and unknown conversations alike.
Error conversation_access_error();

}  // namespace tern::services
