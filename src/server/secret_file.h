// A secret that ternd reads from a file at start-up (the admin token, the Redis password), so
// that it never appears on a command line (ps, /proc/<pid>/cmdline) or in a config file
// that is shared more widely than the secret.
// Free function; start-up only.
#pragma once
#include <cstddef>
#include <string>

#include "base/result.h"

namespace tern::server {

inline constexpr size_t kMaxSecretFileBytes = 4096;

// The file's content without trailing newlines and spaces (at most kMaxSecretFileBytes). `flag` names the option in the
// error ("cannot read --admin-token-file <path>"); an empty secret is an error too. The
// secret itself never appears in an error.
Result<std::string> read_secret_file(const std::string& path, const char* flag);

}  // namespace tern::server
