// Ed25519 signature verification (RFC 8032) on libsodium's crypto_sign_verify_detached, which
// refuses non-canonical encodings, small-order keys and s >= L. tern signs with XEdDSA
// (xeddsa.h); this is for keys that are native Ed25519 (e.g. a future server-signed token).
// Thread-safety: pure function; any thread.
#pragma once
#include <cstdint>
#include <span>

namespace tern::crypto {

// False for a public key that is not 32 bytes, a signature that is not 64 bytes, or a
// signature that does not verify.
bool ed25519_verify(std::span<const uint8_t> public_key, std::span<const uint8_t> message,
                    std::span<const uint8_t> signature);

}  // namespace tern::crypto
