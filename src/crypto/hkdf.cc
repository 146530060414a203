#include "crypto/hkdf.h"

#include <sodium.h>

#include <algorithm>

#include "crypto/xeddsa.h"  // init()

namespace tern::crypto {

std::array<uint8_t, 32> hmac_sha256(std::span<const uint8_t> key,
                                    std::initializer_list<std::span<const uint8_t>> parts) {
  init();
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key.data(), key.size());
  for (auto p : parts) crypto_auth_hmacsha256_update(&st, p.data(), p.size());
  std::array<uint8_t, 32> out;
  crypto_auth_hmacsha256_final(&st, out.data());
  sodium_memzero(&st, sizeof st);
  return out;
}

std::array<uint8_t, 32> hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> message) {
  return hmac_sha256(key, {message});
}

bool hmac_sha256_verify(std::span<const uint8_t> key, std::span<const uint8_t> message,
                        std::span<const uint8_t> tag) {
  if (tag.empty() || tag.size() > 32) return false;
  auto full = hmac_sha256(key, message);
  return sodium_memcmp(full.data(), tag.data(), tag.size()) == 0;
}

Key32 hkdf_extract(std::span<const uint8_t> salt, std::span<const uint8_t> ikm) {
  static const uint8_t kZeroSalt[32] = {0};
  if (salt.empty()) salt = std::span<const uint8_t>(kZeroSalt, 32);
  auto prk = hmac_sha256(salt, ikm);
  Key32 k(prk);
  sodium_memzero(prk.data(), prk.size());
  return k;
}

Result<void> hkdf_expand(std::span<const uint8_t> prk, std::span<const uint8_t> info, std::span<uint8_t> out) {
  if (out.size() > kHkdfMaxOutput) return Errc::kTooLarge;
  std::array<uint8_t, 32> t{};
  size_t t_len = 0;
  size_t done = 0;
  for (uint8_t counter = 1; done < out.size(); ++counter) {
    const uint8_t c[1] = {counter};
    t = hmac_sha256(prk, {std::span<const uint8_t>(t.data(), t_len), info, std::span<const uint8_t>(c, 1)});
    t_len = 32;
    size_t n = std::min<size_t>(32, out.size() - done);
    std::copy_n(t.begin(), n, out.begin() + static_cast<std::ptrdiff_t>(done));
    done += n;
  }
  sodium_memzero(t.data(), t.size());
  return {};
}

Result<void> hkdf(std::span<const uint8_t> salt, std::span<const uint8_t> ikm, std::span<const uint8_t> info,
                  std::span<uint8_t> out) {
  Key32 prk = hkdf_extract(salt, ikm);
  return hkdf_expand(prk.bytes, info, out);
}

}  // namespace tern::crypto
