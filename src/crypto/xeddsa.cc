// XEdDSA on libsodium's Ed25519 arithmetic; the Montgomery→Edwards field conversion uses
// OpenSSL's BIGNUM (libsodium exposes no field arithmetic). Only public values pass through
// BIGNUM (the public u), so its variable time does not matter.
#include "crypto/xeddsa.h"

#include <openssl/bn.h>
#include <sodium.h>

#include <cstring>
#include <memory>
#include <mutex>

namespace tern::crypto {
namespace {

struct BnDeleter {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
struct CtxDeleter {
  void operator()(BN_CTX* c) const { BN_CTX_free(c); }
};
using Bn = std::unique_ptr<BIGNUM, BnDeleter>;

// p = 2^255 - 19, little endian.
constexpr uint8_t kP[32] = {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
// Little-endian a < b for 32-byte numbers (public values only: not constant time).
bool less_than(const uint8_t* a, const uint8_t* b) {
  for (int i = 31; i >= 0; --i) {
    if (a[i] != b[i]) return a[i] < b[i];
  }
  return false;
}

// y = (u - 1) / (u + 1) mod p, the birational map from Curve25519 to edwards25519.
// False when u + 1 ≡ 0 (no Edwards point).
bool montgomery_to_edwards_y(const uint8_t u[32], uint8_t y[32]) {
  std::unique_ptr<BN_CTX, CtxDeleter> ctx(BN_CTX_new());
  Bn p(BN_lebin2bn(kP, 32, nullptr)), bu(BN_lebin2bn(u, 32, nullptr));
  Bn num(BN_new()), den(BN_new()), out(BN_new());
  if (!ctx || !p || !bu || !num || !den || !out) return false;
  if (!BN_mod_sub(num.get(), bu.get(), BN_value_one(), p.get(), ctx.get())) return false;
  if (!BN_mod_add(den.get(), bu.get(), BN_value_one(), p.get(), ctx.get())) return false;
  if (BN_is_zero(den.get())) return false;
  if (!BN_mod_inverse(den.get(), den.get(), p.get(), ctx.get())) return false;
  if (!BN_mod_mul(out.get(), num.get(), den.get(), p.get(), ctx.get())) return false;
  return BN_bn2lebinpad(out.get(), y, 32) == 32;
}

// SHA-512 of the concatenation of `parts`, reduced mod q.
void hash_to_scalar(std::initializer_list<std::span<const uint8_t>> parts, uint8_t out[32]) {
  crypto_hash_sha512_state st;
  crypto_hash_sha512_init(&st);
  for (auto part : parts) crypto_hash_sha512_update(&st, part.data(), part.size());
  uint8_t digest[64];
  crypto_hash_sha512_final(&st, digest);
  crypto_core_ed25519_scalar_reduce(out, digest);
  sodium_memzero(digest, sizeof digest);
  sodium_memzero(&st, sizeof st);
}

}  // namespace

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) std::abort();  // no usable RNG: nothing in this library is safe
  });
}

bool xeddsa_verify(std::span<const uint8_t, 32> montgomery_public, std::span<const uint8_t> message,
                   std::span<const uint8_t, 64> signature) {
  init();
  if (!less_than(montgomery_public.data(), kP)) return false;
  uint8_t a_point[32];
  if (!montgomery_to_edwards_y(montgomery_public.data(), a_point)) return false;
  // The Edwards sign bit travels in the signature (0 for spec signatures; see the header).
  a_point[31] = static_cast<uint8_t>((a_point[31] & 0x7f) | (signature[63] & 0x80));
  uint8_t sig[64];
  std::memcpy(sig, signature.data(), 64);
  sig[63] &= 0x7f;
  // The spec's check, R == sB - hA with h = SHA-512(R ‖ A ‖ M) mod q, is exactly Ed25519's
  // verification equation, so libsodium's verifier does it (variable-time double scalar
  // multiplication: public inputs only). It also refuses s >= q, a non-canonical or
  // small-order A, a point not on the curve, and a small-order R.
  return crypto_sign_verify_detached(sig, message.data(), message.size(), a_point) == 0;
}

std::array<uint8_t, 64> xeddsa_sign(std::span<const uint8_t, 32> montgomery_private,
                                    std::span<const uint8_t> message,
                                    std::span<const uint8_t, 64> random) {
  init();
  // k: the clamped X25519 scalar, exactly what crypto_scalarmult uses for the public u.
  uint8_t k[64] = {0};
  std::memcpy(k, montgomery_private.data(), 32);
  k[0] &= 248;
  k[31] &= 127;
  k[31] |= 64;
  // E = kB; A = E with sign bit 0; a = k or -k (mod q) so that A = aB (spec calculate_key_pair).
  uint8_t e_point[32];
  (void)crypto_scalarmult_ed25519_base_noclamp(e_point, k);  // k != 0 after clamping
  uint8_t a[32];
  crypto_core_ed25519_scalar_reduce(a, k);  // k fits in 64 zero-padded bytes
  if (e_point[31] & 0x80) crypto_core_ed25519_scalar_negate(a, a);
  e_point[31] &= 0x7f;

  // r = hash1(a ‖ M ‖ Z) mod q, hash1(X) = SHA-512(0xFE ‖ 0xFF×31 ‖ X).
  uint8_t prefix[32];
  std::memset(prefix, 0xff, sizeof prefix);
  prefix[0] = 0xfe;
  uint8_t r[32];
  hash_to_scalar({std::span<const uint8_t>(prefix, 32), std::span<const uint8_t>(a, 32), message, random}, r);

  std::array<uint8_t, 64> sig{};
  // R = rB. r == 0 has probability 2^-252; the signature would still verify-fail, never leak.
  (void)crypto_scalarmult_ed25519_base_noclamp(sig.data(), r);
  uint8_t h[32];
  hash_to_scalar({std::span<const uint8_t>(sig.data(), 32), std::span<const uint8_t>(e_point, 32), message}, h);
  // s = r + h·a mod q
  uint8_t ha[32];
  crypto_core_ed25519_scalar_mul(ha, h, a);
  crypto_core_ed25519_scalar_add(sig.data() + 32, r, ha);

  sodium_memzero(k, sizeof k);
  sodium_memzero(a, sizeof a);
  sodium_memzero(r, sizeof r);
  sodium_memzero(ha, sizeof ha);
  return sig;
}

std::array<uint8_t, 64> xeddsa_sign(std::span<const uint8_t, 32> montgomery_private,
                                    std::span<const uint8_t> message) {
  init();
  uint8_t z[64];
  randombytes_buf(z, sizeof z);
  auto sig = xeddsa_sign(montgomery_private, message, std::span<const uint8_t, 64>(z, 64));
  sodium_memzero(z, sizeof z);
  return sig;
}

}  // namespace tern::crypto
