// Bearer tokens and one-time codes: generation (256 bit from libsodium's CSPRNG) and the
// hash under which the store keeps them (SHA-256: tokens are uniformly random, so a slow
// password hash adds nothing). Pure functions; thread-safe.
#pragma once
#include <string>
#include <string_view>

namespace tern::services {

std::string new_token();                      // 43 chars, base64url without padding
std::string hash_token(std::string_view token);  // 64 hex chars
std::string new_link_code();                  // "XXXX-XXXX", A-Z2-9 without look-alikes
std::string random_hex(size_t bytes);

}  // namespace tern::services
