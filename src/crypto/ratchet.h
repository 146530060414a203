// The key derivations of Signal's v3 protocol (as libsignal implements them; constants in
// docs/crypto.md):
//  * X3DH: master = HKDF-SHA256(salt = 32 zero bytes, ikm = 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4],
//    info = "WhisperText", 64) → root key ‖ chain key. Initiator (Alice):
//    DH1 = DH(IK_A, SPK_B), DH2 = DH(EK_A, IK_B), DH3 = DH(EK_A, SPK_B), DH4 = DH(EK_A, OPK_B).
//  * Root step: HKDF(salt = root key, ikm = DH(our ratchet, their ratchet), "WhisperRatchet",
//    64) → new root key ‖ chain key.
//  * Chain step: message key seed = HMAC(chain key, 0x01), next chain key = HMAC(chain key, 0x02).
//  * Message keys: HKDF(salt = zeros, ikm = seed, "WhisperMessageKeys", 80) → AES-256 key(32) ‖
//    HMAC key(32) ‖ CBC IV(16).
// Thread-safety: pure functions; any thread.
#pragma once
#include <array>
#include <optional>
#include <span>

#include "crypto/errors.h"
#include "crypto/secret.h"
#include "crypto/x25519.h"

namespace tern::crypto {

struct MessageKeys {
  Key32 cipher_key;
  Key32 mac_key;
  std::array<uint8_t, 16> iv{};
  ~MessageKeys();
};

struct RootAndChain {
  Key32 root_key;
  Key32 chain_key;
};

Key32 chain_message_seed(const Key32& chain_key);  // HMAC(ck, 0x01)
Key32 chain_next(const Key32& chain_key);          // HMAC(ck, 0x02)
MessageKeys derive_message_keys(const Key32& seed);

// One DH ratchet step from `root_key` with DH(our_private, their_public).
Result<RootAndChain> root_step(const Key32& root_key, std::span<const uint8_t> our_private,
                               const PublicKey& their_public);

// X3DH for the initiator: identity and base (ephemeral) private keys; the bundle's keys.
Result<RootAndChain> x3dh_initiator(std::span<const uint8_t> our_identity_private, std::span<const uint8_t> our_base_private,
                                    const PublicKey& their_identity, const PublicKey& their_signed_prekey,
                                    const std::optional<PublicKey>& their_one_time_prekey);
// X3DH for the responder, mirroring the initiator's DHs.
Result<RootAndChain> x3dh_responder(std::span<const uint8_t> our_identity_private,
                                    std::span<const uint8_t> our_signed_prekey_private,
                                    std::optional<std::span<const uint8_t>> our_one_time_prekey_private,
                                    const PublicKey& their_identity, const PublicKey& their_base_key);

}  // namespace tern::crypto
