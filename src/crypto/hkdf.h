// HMAC-SHA256 (RFC 2104, libsodium's crypto_auth_hmacsha256 with keys of any length) and
// HKDF-SHA256 (RFC 5869) written on it. Signal derives every root, chain and message key with
// these. Thread-safety: pure functions; any thread.
#pragma once
#include <array>
#include <cstdint>
#include <span>

#include "crypto/errors.h"
#include "crypto/secret.h"

namespace tern::crypto {

constexpr size_t kHmacSha256Size = 32;
constexpr size_t kHkdfMaxOutput = 255 * 32;  // RFC 5869: L <= 255·HashLen

std::array<uint8_t, 32> hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> message);
// HMAC over several parts, as if concatenated (the MAC input of a SignalMessage).
std::array<uint8_t, 32> hmac_sha256(std::span<const uint8_t> key,
                                    std::initializer_list<std::span<const uint8_t>> parts);
// Constant-time check of a tag truncated to tag.size() bytes (1..32). A tag of another length
// is refused.
bool hmac_sha256_verify(std::span<const uint8_t> key, std::span<const uint8_t> message,
                        std::span<const uint8_t> tag);

// HKDF-Extract: PRK = HMAC(salt, ikm); an empty salt means 32 zero bytes (RFC 5869 §2.2).
Key32 hkdf_extract(std::span<const uint8_t> salt, std::span<const uint8_t> ikm);
// HKDF-Expand into out (out.size() <= kHkdfMaxOutput, else kTooLarge).
Result<void> hkdf_expand(std::span<const uint8_t> prk, std::span<const uint8_t> info, std::span<uint8_t> out);
// Extract then expand.
Result<void> hkdf(std::span<const uint8_t> salt, std::span<const uint8_t> ikm, std::span<const uint8_t> info,
                  std::span<uint8_t> out);

}  // namespace tern::crypto
