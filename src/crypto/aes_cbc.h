// AES-256-CBC with PKCS#7 padding on OpenSSL 3 EVP: the cipher of Signal's SignalMessage and
// SenderKeyMessage bodies (their integrity comes from the HMAC / XEdDSA signature around them,
// never from the padding). Thread-safety: pure functions; any thread.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "crypto/errors.h"

namespace tern::crypto {

constexpr size_t kAesCbcMaxPlaintext = 1 << 26;  // 64 MiB: larger input is refused

// key: 32 bytes (AES-256, what Signal uses; 16 and 24 select AES-128/-192, kept so the
// Wycheproof suite runs whole); iv: 16 bytes. kMalformed on other sizes; kTooLarge above the
// limit.
Result<std::vector<uint8_t>> aes_cbc_encrypt(std::span<const uint8_t> key, std::span<const uint8_t> iv,
                                             std::span<const uint8_t> plaintext);
// kBadMac when the ciphertext length is not a positive multiple of 16 or the padding is bad.
Result<std::vector<uint8_t>> aes_cbc_decrypt(std::span<const uint8_t> key, std::span<const uint8_t> iv,
                                             std::span<const uint8_t> ciphertext);

}  // namespace tern::crypto
