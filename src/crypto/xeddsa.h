// XEdDSA (Signal's signature scheme on X25519 keys, spec "The XEdDSA and VXEdDSA Signature
// Schemes", rev. 1, 2016): sign with an X25519 private key, verify against the 32-byte
// Montgomery u coordinate that Signal carries on the wire after its 0x05 type byte.
//
// Compatibility with Signal's implementations (why verify is not just the spec's):
//  * The spec converts u to the Edwards point with sign bit 0 and signs with a negated scalar
//    when needed, so the sign bit is always 0. We sign exactly that way.
//  * Older Signal code (curve25519-donna's curve25519_sign, still used by
//    libsignal-protocol-typescript) signs with the Edwards key's real sign bit and carries that
//    bit in the top bit of the signature's last byte. libsignal (and libsignal-protocol-c's
//    curve25519_verify) therefore verify by taking the sign bit from signature[63] & 0x80 and
//    clearing it from s. We do the same: a spec signature has that bit 0, so nothing changes
//    for it, and an old-style signature verifies too.
// Verification is Ed25519's equation on the converted key (libsodium's
// crypto_sign_verify_detached). Stricter than libsignal: s must be canonical (< q), u < p,
// and neither the Edwards key nor R may be of small order.
//
// Signing uses libsodium's Ed25519 arithmetic (crypto_core_ed25519_*, scalarmult base noclamp,
// SHA-512). Thread-safety: pure functions; any thread (init() is called inside).
#pragma once
#include <array>
#include <cstdint>
#include <span>

namespace tern::crypto {

// Verifies a 64-byte XEdDSA signature (R ‖ s, sign bit of the key in s's top bit as above) of
// `message` by the X25519 key `montgomery_public`. False for any malformed input.
bool xeddsa_verify(std::span<const uint8_t, 32> montgomery_public, std::span<const uint8_t> message,
                   std::span<const uint8_t, 64> signature);

// Signs `message` with the X25519 private key (clamped first, as X25519 does) and 64 bytes of
// fresh randomness Z (the spec's nonce input; also hedges against a bad RNG).
std::array<uint8_t, 64> xeddsa_sign(std::span<const uint8_t, 32> montgomery_private,
                                    std::span<const uint8_t> message);
// The same with caller-given Z, for tests that need a deterministic signature.
std::array<uint8_t, 64> xeddsa_sign(std::span<const uint8_t, 32> montgomery_private,
                                    std::span<const uint8_t> message,
                                    std::span<const uint8_t, 64> random);

// Calls sodium_init() once; safe from any thread. Every entry point of tern_crypto that needs
// libsodium calls it, so callers need not.
void init();

}  // namespace tern::crypto
