// Long-lived key material of one device, as Signal's X3DH needs it, and its serialization for
// the SDK to persist (the bytes contain private keys: the SDK encrypts them at rest).
//  * IdentityKeyPair: an X25519 key pair; signs with XEdDSA (xeddsa.h).
//  * PreKeyRecord: a one-time prekey (id, key pair).
//  * SignedPreKeyRecord: the medium-term signed prekey (id, key pair, XEdDSA signature by the
//    identity key over the 33-byte serialized public key, creation time).
//  * PreKeyBundle: what the key directory hands out for one remote device.
// Serialized records use record_format.h's envelope (version byte + protobuf); parse refuses
// other versions. Thread-safety: values; one thread per object.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "crypto/errors.h"
#include "crypto/secret.h"
#include "crypto/x25519.h"

namespace tern::crypto {

using IdentityKeyPair = KeyPair;
using Signature = std::array<uint8_t, 64>;

// A random registration id in Signal's range 1..16380 (14 bits, never 0).
uint32_t generate_registration_id();

SecretBytes serialize_identity(const IdentityKeyPair& identity);
Result<IdentityKeyPair> parse_identity(std::span<const uint8_t> bytes);

struct PreKeyRecord {
  uint32_t id = 0;
  KeyPair key;

  SecretBytes serialize() const;
  static Result<PreKeyRecord> parse(std::span<const uint8_t> bytes);
};
// `count` one-time prekeys with ids start, start+1, … (wrapping past 2^24 as Signal's
// Medium::MAX_VALUE does, skipping 0).
std::vector<PreKeyRecord> generate_prekeys(uint32_t start, uint32_t count);

struct SignedPreKeyRecord {
  uint32_t id = 0;
  KeyPair key;
  Signature signature{};
  uint64_t created_at_ms = 0;

  static SignedPreKeyRecord generate(const IdentityKeyPair& identity, uint32_t id, uint64_t now_ms);
  SecretBytes serialize() const;
  static Result<SignedPreKeyRecord> parse(std::span<const uint8_t> bytes);
};

// Verifies a signed prekey's signature: XEdDSA by `identity` over serialize_public(prekey).
bool verify_signed_prekey(const PublicKey& identity, const PublicKey& signed_prekey, const Signature& signature);

struct PreKeyBundle {
  uint32_t registration_id = 0;
  uint32_t device_id = 0;
  std::optional<uint32_t> pre_key_id;  // with pre_key: both or neither
  std::optional<PublicKey> pre_key;
  uint32_t signed_pre_key_id = 0;
  PublicKey signed_pre_key{};
  Signature signed_pre_key_signature{};
  PublicKey identity_key{};
};

}  // namespace tern::crypto
