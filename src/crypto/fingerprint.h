// Signal's numeric safety number (NumericFingerprintGenerator, displayable form) for comparing
// identity keys out of band ("tern verify"): per side, SHA-512 iterated `iterations` times,
// first over 0x0000 (version) ‖ identity key (33) ‖ stable identifier ‖ identity key, then over
// previous digest ‖ identity key; its first 30 bytes as six 5-byte big-endian numbers mod
// 100000, 5 digits each. The two 30-digit halves are concatenated in ascending order, so both
// parties see the same 60 digits. Signal uses 5200 iterations.
// Thread-safety: pure function; any thread.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "crypto/errors.h"
#include "crypto/x25519.h"

namespace tern::crypto {

constexpr uint32_t kSafetyNumberIterations = 5200;
constexpr uint32_t kMaxSafetyNumberIterations = 100000;  // bounds the work of one call

// 60 decimal digits; kTooLarge for more than kMaxSafetyNumberIterations, kMalformed for 0.
Result<std::string> safety_number(uint32_t iterations, std::span<const uint8_t> local_identifier,
                                  const PublicKey& local_key, std::span<const uint8_t> remote_identifier,
                                  const PublicKey& remote_key);

}  // namespace tern::crypto
