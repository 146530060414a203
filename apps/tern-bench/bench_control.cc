#include "bench_control.h"

#include <unistd.h>

#include <cerrno>

#include <boost/json.hpp>

namespace tern::bench {
namespace json = boost::json;

std::string encode_control_line(char kind, const json::value& v) {
  std::string s(1, kind);
  s += ' ';
  s += json::serialize(v);
  s += '\n';
  return s;
}

Result<std::pair<char, json::value>> parse_control_line(std::string_view line) {
  if (line.size() < 3 || line[1] != ' ') return make_error(ErrorCode::kMalformed, "control line too short");
  boost::system::error_code ec;
  json::value v = json::parse(line.substr(2), ec);
  if (ec) return make_error(ErrorCode::kMalformed, "control line is not JSON");
  return std::make_pair(line[0], std::move(v));
}

bool write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace tern::bench
