// Lowercase hex of bytes (digests, random ids). Pure function; thread-safe.
#pragma once
#include <string>
#include <string_view>

namespace tern {

std::string hex_encode(std::string_view bytes);
inline std::string hex_encode(const unsigned char* bytes, size_t n) {
  return hex_encode(std::string_view(reinterpret_cast<const char*>(bytes), n));
}

}  // namespace tern
