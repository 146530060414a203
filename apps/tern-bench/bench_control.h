// The line protocol between tern-bench's coordinator and its worker processes, over a pair of
// pipes per worker. One JSON object per line, prefixed by a kind letter:
//   worker → coordinator:  P progress (every second), B barrier {name, data},
//                          R result (last line), E fatal error {message}
//   coordinator → worker:  G go {…}: the answer to the pending barrier
// Pure functions; thread-safe.
#pragma once
#include <string>
#include <string_view>
#include <utility>

#include <boost/json/value.hpp>

#include "base/result.h"

namespace tern::bench {

std::string encode_control_line(char kind, const boost::json::value& v);
// Parses one line (without its newline).
Result<std::pair<char, boost::json::value>> parse_control_line(std::string_view line);
// Writes all of `s` to a blocking fd; false on failure.
bool write_all(int fd, std::string_view s);

}  // namespace tern::bench
