// Attachment encryption (issue 11), on the client only: the server stores and serves the
// result without ever seeing the key or the plaintext.
//
// Scheme (WhatsApp's published media encryption, docs/crypto.md "Media"):
//   media_key  32 random bytes, fresh per file
//   HKDF-SHA256(ikm = media_key, salt = 32 zero bytes, info = "Tern Media Keys v1", 80 bytes)
//              → iv (16) ‖ cipher_key (32) ‖ mac_key (32)
//   ciphertext = AES-256-CBC(cipher_key, iv, PKCS#7 padded plaintext)
//   mac        = HMAC-SHA256(mac_key, iv ‖ ciphertext), all 32 bytes (WhatsApp keeps 10)
//   blob       = ciphertext ‖ mac             (what is uploaded)
//   digest     = SHA-256(blob), lowercase hex (the server's media id: content-addressed)
// The key, digest, plaintext size and type travel inside the (end-to-end) message body.
// Decryption checks the digest, then the MAC (constant time), then decrypts: a blob that
// was altered, truncated or swapped is refused before any plaintext is produced.
//
// Pure functions over memory; thread-safe. Attachments up to kMaxAttachmentBytes.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace tern::client {

inline constexpr uint64_t kMaxAttachmentBytes = 100ULL << 20;

struct EncryptedAttachment {
  std::string blob;        // ciphertext ‖ mac
  std::string key;         // the 32-byte media key
  std::string digest_hex;  // SHA-256 of blob (= media id)
};

Result<EncryptedAttachment> encrypt_attachment(std::string_view plaintext);
// `expected_digest_hex` empty: not checked (the caller checked the id it downloaded).
Result<std::string> decrypt_attachment(std::string_view blob, std::string_view key,
                                       std::string_view expected_digest_hex = {});

}  // namespace tern::client
