#include "crypto/fingerprint.h"

#include <sodium.h>

#include <algorithm>

#include "crypto/xeddsa.h"  // init()

namespace tern::crypto {
namespace {

std::string half(uint32_t iterations, std::span<const uint8_t> identifier, const PublicKey& key) {
  auto k = serialize_public(key);
  static const uint8_t kVersion[2] = {0, 0};
  uint8_t digest[64];
  crypto_hash_sha512_state st;
  crypto_hash_sha512_init(&st);
  crypto_hash_sha512_update(&st, kVersion, 2);
  crypto_hash_sha512_update(&st, k.data(), k.size());
  if (!identifier.empty()) crypto_hash_sha512_update(&st, identifier.data(), identifier.size());
  crypto_hash_sha512_update(&st, k.data(), k.size());
  crypto_hash_sha512_final(&st, digest);
  for (uint32_t i = 1; i < iterations; ++i) {
    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, digest, sizeof digest);
    crypto_hash_sha512_update(&st, k.data(), k.size());
    crypto_hash_sha512_final(&st, digest);
  }
  std::string out;
  for (int chunk = 0; chunk < 6; ++chunk) {
    uint64_t v = 0;
    for (int b = 0; b < 5; ++b) v = (v << 8) | digest[chunk * 5 + b];
    std::string digits = std::to_string(v % 100000);
    out += std::string(5 - digits.size(), '0') + digits;
  }
  return out;
}

}  // namespace

Result<std::string> safety_number(uint32_t iterations, std::span<const uint8_t> local_identifier,
                                  const PublicKey& local_key, std::span<const uint8_t> remote_identifier,
                                  const PublicKey& remote_key) {
  init();
  if (iterations == 0) return Errc::kMalformed;
  if (iterations > kMaxSafetyNumberIterations) return Errc::kTooLarge;
  std::string a = half(iterations, local_identifier, local_key);
  std::string b = half(iterations, remote_identifier, remote_key);
  return a < b ? a + b : b + a;
}

}  // namespace tern::crypto
