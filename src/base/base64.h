// Base64 (RFC 4648 standard alphabet, with padding), as wire-v1 carries opaque payloads.
// Pure functions; thread-safe.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace tern {

std::string base64_encode(std::string_view bytes);
// Decodes strict padded base64; nullopt on any invalid character, length or padding.
std::optional<std::string> base64_decode(std::string_view text);
// Validates without allocating; returns the decoded length or nullopt.
std::optional<size_t> base64_decoded_size(std::string_view text);

}  // namespace tern
