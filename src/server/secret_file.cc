#include "server/secret_file.h"

#include <fstream>

namespace tern::server {

Result<std::string> read_secret_file(const std::string& path, const char* flag) {
  std::ifstream in(path);
  if (!in) return make_error(ErrorCode::kInvalidArgument, std::string("cannot read ") + flag + " " + path);
  // A secret is short: a file of more is a wrong path (a log, a disk image), not read whole.
  std::string secret(kMaxSecretFileBytes + 1, '\0');
  in.read(secret.data(), static_cast<std::streamsize>(secret.size()));
  secret.resize(static_cast<size_t>(in.gcount()));
  if (secret.size() > kMaxSecretFileBytes)
    return make_error(ErrorCode::kInvalidArgument,
                      std::string(flag) + " " + path + " is larger than " + std::to_string(kMaxSecretFileBytes) + " bytes");
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
  if (secret.empty()) return make_error(ErrorCode::kInvalidArgument, std::string(flag) + " " + path + " is empty");
  return secret;
}

}  // namespace tern::server
