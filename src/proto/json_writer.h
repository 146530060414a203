// Direct JSON text building for the server's frames: the hot path writes frames by appending
// to a string, never through a JSON DOM. The output is byte-for-byte what boost::json's
// serializer would give for the same keys in the same order (tests compare the two).
//
// Thread-safety: pure functions.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace tern::proto {

// Appends `s` as a JSON string literal (quoted; ", \ and control characters escaped).
void append_json_string(std::string& out, std::string_view s);
void append_uint(std::string& out, uint64_t v);
void append_int(std::string& out, int64_t v);

// Appends `"key":` (key must not need escaping: our keys are fixed ASCII names).
inline void append_key(std::string& out, std::string_view key) {
  out += '"';
  out += key;
  out += "\":";
}

}  // namespace tern::proto
