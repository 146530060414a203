#include "crypto/x25519.h"

#include <sodium.h>

#include <cstring>

#include "crypto/xeddsa.h"  // init()

namespace tern::crypto {

namespace {
void clamp(uint8_t* k) {
  k[0] &= 248;
  k[31] &= 127;
  k[31] |= 64;
}
}  // namespace

KeyPair KeyPair::generate() {
  init();
  KeyPair kp;
  kp.private_key = SecretBytes(32);
  randombytes_buf(kp.private_key.data(), 32);
  clamp(kp.private_key.data());
  crypto_scalarmult_base(kp.public_key.data(), kp.private_key.data());
  return kp;
}

Result<KeyPair> KeyPair::from_private(std::span<const uint8_t> private_key) {
  init();
  if (private_key.size() != 32) return Errc::kMalformed;
  KeyPair kp;
  kp.private_key = SecretBytes::copy_of(private_key);
  clamp(kp.private_key.data());
  if (crypto_scalarmult_base(kp.public_key.data(), kp.private_key.data()) != 0) return Errc::kInvalidKey;
  return kp;
}

KeyPair KeyPair::clone() const {
  KeyPair kp;
  kp.private_key = private_key.clone();
  kp.public_key = public_key;
  return kp;
}

Result<Key32> x25519(std::span<const uint8_t> private_key, std::span<const uint8_t, 32> public_key) {
  init();
  if (private_key.size() != 32) return Errc::kMalformed;
  Key32 out;
  // libsodium returns -1 exactly when the output is all zeros.
  if (crypto_scalarmult(out.data(), private_key.data(), public_key.data()) != 0) return Errc::kInvalidKey;
  return out;
}

std::array<uint8_t, 33> serialize_public(const PublicKey& key) {
  std::array<uint8_t, 33> out;
  out[0] = kDjbType;
  std::memcpy(out.data() + 1, key.data(), 32);
  return out;
}

Result<PublicKey> parse_public(std::span<const uint8_t> bytes) {
  if (bytes.size() != 33 || bytes[0] != kDjbType) return Errc::kMalformed;
  PublicKey k;
  std::memcpy(k.data(), bytes.data() + 1, 32);
  return k;
}

}  // namespace tern::crypto
