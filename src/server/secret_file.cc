#include "server/secret_file.h"

#include <fstream>
#include <sstream>

namespace tern::server {

Result<std::string> read_secret_file(const std::string& path, const char* flag) {
  std::ifstream in(path);
  if (!in) return make_error(ErrorCode::kInvalidArgument, std::string("cannot read ") + flag + " " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string secret = ss.str();
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
  if (secret.empty()) return make_error(ErrorCode::kInvalidArgument, std::string(flag) + " " + path + " is empty");
  return secret;
}

}  // namespace tern::server
