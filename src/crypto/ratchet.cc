#include "crypto/ratchet.h"

#include <sodium.h>

#include <cstring>

#include "crypto/hkdf.h"

namespace tern::crypto {
namespace {

constexpr std::string_view kX3dhInfo = "WhisperText";
constexpr std::string_view kRootInfo = "WhisperRatchet";
constexpr std::string_view kMessageKeysInfo = "WhisperMessageKeys";

std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

Key32 chain_derive(const Key32& chain_key, uint8_t label) {
  const uint8_t l[1] = {label};
  auto mac = hmac_sha256(chain_key.bytes, std::span<const uint8_t>(l, 1));
  Key32 out(mac);
  sodium_memzero(mac.data(), mac.size());
  return out;
}

RootAndChain split64(std::array<uint8_t, 64>& okm) {
  RootAndChain rc;
  std::memcpy(rc.root_key.data(), okm.data(), 32);
  std::memcpy(rc.chain_key.data(), okm.data() + 32, 32);
  sodium_memzero(okm.data(), okm.size());
  return rc;
}

// HKDF over 0xFF×32 ‖ DHs (the "discontinuity bytes" keep X3DH secrets apart from XEdDSA's
// first hash input).
Result<RootAndChain> x3dh_derive(std::initializer_list<const Key32*> dhs) {
  uint8_t ikm[32 * 5];
  std::memset(ikm, 0xff, 32);
  size_t n = 32;
  for (const Key32* dh : dhs) {
    std::memcpy(ikm + n, dh->data(), 32);
    n += 32;
  }
  std::array<uint8_t, 64> okm;
  auto r = hkdf({}, std::span<const uint8_t>(ikm, n), as_bytes(kX3dhInfo), okm);
  sodium_memzero(ikm, sizeof ikm);
  if (!r.ok()) return r.error();
  return split64(okm);
}

}  // namespace

MessageKeys::~MessageKeys() { sodium_memzero(iv.data(), iv.size()); }

Key32 chain_message_seed(const Key32& chain_key) { return chain_derive(chain_key, 0x01); }
Key32 chain_next(const Key32& chain_key) { return chain_derive(chain_key, 0x02); }

MessageKeys derive_message_keys(const Key32& seed) {
  std::array<uint8_t, 80> okm;
  (void)hkdf({}, seed.bytes, as_bytes(kMessageKeysInfo), okm);  // 80 <= kHkdfMaxOutput
  MessageKeys k;
  std::memcpy(k.cipher_key.data(), okm.data(), 32);
  std::memcpy(k.mac_key.data(), okm.data() + 32, 32);
  std::memcpy(k.iv.data(), okm.data() + 64, 16);
  sodium_memzero(okm.data(), okm.size());
  return k;
}

Result<RootAndChain> root_step(const Key32& root_key, std::span<const uint8_t> our_private,
                               const PublicKey& their_public) {
  auto dh = x25519(our_private, their_public);
  if (!dh.ok()) return dh.error();
  std::array<uint8_t, 64> okm;
  auto r = hkdf(root_key.bytes, dh->bytes, as_bytes(kRootInfo), okm);
  if (!r.ok()) return r.error();
  return split64(okm);
}

Result<RootAndChain> x3dh_initiator(std::span<const uint8_t> our_identity_private, std::span<const uint8_t> our_base_private,
                                    const PublicKey& their_identity, const PublicKey& their_signed_prekey,
                                    const std::optional<PublicKey>& their_one_time_prekey) {
  auto dh1 = x25519(our_identity_private, their_signed_prekey);
  auto dh2 = x25519(our_base_private, their_identity);
  auto dh3 = x25519(our_base_private, their_signed_prekey);
  if (!dh1.ok() || !dh2.ok() || !dh3.ok()) return Errc::kInvalidKey;
  if (!their_one_time_prekey) return x3dh_derive({&*dh1, &*dh2, &*dh3});
  auto dh4 = x25519(our_base_private, *their_one_time_prekey);
  if (!dh4.ok()) return Errc::kInvalidKey;
  return x3dh_derive({&*dh1, &*dh2, &*dh3, &*dh4});
}

Result<RootAndChain> x3dh_responder(std::span<const uint8_t> our_identity_private,
                                    std::span<const uint8_t> our_signed_prekey_private,
                                    std::optional<std::span<const uint8_t>> our_one_time_prekey_private,
                                    const PublicKey& their_identity, const PublicKey& their_base_key) {
  auto dh1 = x25519(our_signed_prekey_private, their_identity);
  auto dh2 = x25519(our_identity_private, their_base_key);
  auto dh3 = x25519(our_signed_prekey_private, their_base_key);
  if (!dh1.ok() || !dh2.ok() || !dh3.ok()) return Errc::kInvalidKey;
  if (!our_one_time_prekey_private) return x3dh_derive({&*dh1, &*dh2, &*dh3});
  auto dh4 = x25519(*our_one_time_prekey_private, their_base_key);
  if (!dh4.ok()) return Errc::kInvalidKey;
  return x3dh_derive({&*dh1, &*dh2, &*dh3, &*dh4});
}

}  // namespace tern::crypto
