// X25519 (RFC 7748) key pairs and Diffie-Hellman on libsodium's crypto_scalarmult, and the
// 33-byte Signal public key form (0x05 type byte ‖ u). Thread-safety: pure functions and values.
#pragma once
#include <array>
#include <cstdint>
#include <span>

#include "crypto/errors.h"
#include "crypto/secret.h"

namespace tern::crypto {

constexpr uint8_t kDjbType = 0x05;  // Signal's key-type byte for Curve25519 public keys
using PublicKey = std::array<uint8_t, 32>;

// A private key lives in sodium_malloc memory; the public key is derived at creation.
struct KeyPair {
  SecretBytes private_key;  // 32 bytes, clamped
  PublicKey public_key{};

  static KeyPair generate();
  // From a 32-byte private key (clamped here, as Signal stores them).
  static Result<KeyPair> from_private(std::span<const uint8_t> private_key);
  KeyPair clone() const;
};

// The shared secret X25519(private, public). kInvalidKey when the result is all zeros (a
// small-order public key: RFC 7748 §6.1 says to check; Signal's X3DH needs contributory keys).
Result<Key32> x25519(std::span<const uint8_t> private_key, std::span<const uint8_t, 32> public_key);

// Signal's serialized public key: 0x05 ‖ u (33 bytes).
std::array<uint8_t, 33> serialize_public(const PublicKey& key);
// Parses the 33-byte form (kMalformed for another length or type byte).
Result<PublicKey> parse_public(std::span<const uint8_t> bytes);

}  // namespace tern::crypto
