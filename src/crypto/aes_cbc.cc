#include "crypto/aes_cbc.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <memory>

namespace tern::crypto {
namespace {

struct CtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

Result<std::vector<uint8_t>> run(bool encrypt, std::span<const uint8_t> key, std::span<const uint8_t> iv,
                                 std::span<const uint8_t> in) {
  const EVP_CIPHER* cipher = key.size() == 32   ? EVP_aes_256_cbc()
                             : key.size() == 24 ? EVP_aes_192_cbc()
                             : key.size() == 16 ? EVP_aes_128_cbc()
                                                : nullptr;
  if (cipher == nullptr || iv.size() != 16) return Errc::kMalformed;
  if (in.size() > kAesCbcMaxPlaintext + 16) return Errc::kTooLarge;
  if (!encrypt && (in.empty() || in.size() % 16 != 0)) return Errc::kBadMac;
  std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter> ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return Errc::kInternal;
  if (EVP_CipherInit_ex(ctx.get(), cipher, nullptr, key.data(), iv.data(), encrypt ? 1 : 0) != 1) {
    return Errc::kInternal;
  }
  std::vector<uint8_t> out(in.size() + 16);
  int n1 = 0, n2 = 0;
  if (EVP_CipherUpdate(ctx.get(), out.data(), &n1, in.data(), static_cast<int>(in.size())) != 1) {
    return Errc::kInternal;
  }
  if (EVP_CipherFinal_ex(ctx.get(), out.data() + n1, &n2) != 1) {
    sodium_memzero(out.data(), out.size());
    return encrypt ? Errc::kInternal : Errc::kBadMac;  // decrypt: bad padding
  }
  if (!encrypt) sodium_memzero(out.data() + n1 + n2, out.size() - static_cast<size_t>(n1 + n2));
  out.resize(static_cast<size_t>(n1 + n2));
  return out;
}

}  // namespace

Result<std::vector<uint8_t>> aes_cbc_encrypt(std::span<const uint8_t> key, std::span<const uint8_t> iv,
                                             std::span<const uint8_t> plaintext) {
  if (plaintext.size() > kAesCbcMaxPlaintext) return Errc::kTooLarge;
  return run(true, key, iv, plaintext);
}

Result<std::vector<uint8_t>> aes_cbc_decrypt(std::span<const uint8_t> key, std::span<const uint8_t> iv,
                                             std::span<const uint8_t> ciphertext) {
  return run(false, key, iv, ciphertext);
}

}  // namespace tern::crypto
