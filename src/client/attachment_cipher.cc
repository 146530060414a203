#include "client/attachment_cipher.h"

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <sodium.h>

#include <memory>

#include "base/hex.h"

namespace tern::client {
namespace {

constexpr size_t kKey = 32, kIv = 16, kMac = crypto_auth_hmacsha256_BYTES;
constexpr std::string_view kInfo = "Tern Media Keys v1";

Error crypto_error(std::string_view what) {
  return make_error(ErrorCode::kInternal, "attachment crypto: " + std::string(what));
}

struct Keys {
  unsigned char iv[kIv];
  unsigned char cipher[kKey];
  unsigned char mac[kKey];
};

Result<Keys> derive(std::string_view media_key) {
  if (media_key.size() != kKey) return make_error(ErrorCode::kInvalidArgument, "a media key is 32 bytes");
  unsigned char out[kIv + 2 * kKey];
  const unsigned char salt[32] = {};
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr),
                                                                   EVP_PKEY_CTX_free);
  size_t len = sizeof out;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0 || EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), salt, sizeof salt) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), reinterpret_cast<const unsigned char*>(media_key.data()),
                                 static_cast<int>(media_key.size())) <= 0 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), reinterpret_cast<const unsigned char*>(kInfo.data()),
                                  static_cast<int>(kInfo.size())) <= 0 ||
      EVP_PKEY_derive(ctx.get(), out, &len) <= 0 || len != sizeof out)
    return crypto_error("HKDF failed");
  Keys k{};
  std::copy(out, out + kIv, k.iv);
  std::copy(out + kIv, out + kIv + kKey, k.cipher);
  std::copy(out + kIv + kKey, out + sizeof out, k.mac);
  sodium_memzero(out, sizeof out);
  return k;
}

void mac_of(const Keys& k, std::string_view ciphertext, unsigned char out[kMac]) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, k.mac, kKey);
  crypto_auth_hmacsha256_update(&st, k.iv, kIv);
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(ciphertext.data()), ciphertext.size());
  crypto_auth_hmacsha256_final(&st, out);
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char d[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(d, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return hex_encode(d, sizeof d);
}

// AES-256-CBC with PKCS#7 padding, one direction.
Result<std::string> cbc(const Keys& k, std::string_view in, bool encrypt) {
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  if (!ctx || EVP_CipherInit_ex(ctx.get(), EVP_aes_256_cbc(), nullptr, k.cipher, k.iv, encrypt ? 1 : 0) != 1)
    return crypto_error("cipher init failed");
  std::string out(in.size() + kIv, '\0');
  int n1 = 0, n2 = 0;
  if (EVP_CipherUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &n1,
                       reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size())) != 1 ||
      EVP_CipherFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + n1, &n2) != 1)
    return make_error(ErrorCode::kInvalidArgument, "attachment does not decrypt");
  out.resize(static_cast<size_t>(n1 + n2));
  return out;
}

}  // namespace

Result<EncryptedAttachment> encrypt_attachment(std::string_view plaintext) {
  if (sodium_init() < 0) return crypto_error("libsodium failed to initialise");
  if (plaintext.size() > kMaxAttachmentBytes) return make_error(ErrorCode::kTooLarge, "attachment too large");
  EncryptedAttachment a;
  a.key.resize(kKey);
  randombytes_buf(a.key.data(), kKey);
  auto keys = derive(a.key);
  if (!keys) return keys.error();
  auto ct = cbc(*keys, plaintext, true);
  if (!ct) return ct.error();
  unsigned char mac[kMac];
  mac_of(*keys, *ct, mac);
  sodium_memzero(&*keys, sizeof(Keys));
  a.blob = std::move(*ct);
  a.blob.append(reinterpret_cast<const char*>(mac), kMac);
  a.digest_hex = sha256_hex(a.blob);
  return a;
}

Result<std::string> decrypt_attachment(std::string_view blob, std::string_view key, std::string_view expected_digest_hex) {
  if (sodium_init() < 0) return crypto_error("libsodium failed to initialise");
  if (!expected_digest_hex.empty() && sha256_hex(blob) != expected_digest_hex)
    return make_error(ErrorCode::kInvalidArgument, "attachment digest does not match");
  if (blob.size() < kMac + kIv || (blob.size() - kMac) % kIv != 0)
    return make_error(ErrorCode::kInvalidArgument, "attachment is truncated");
  auto keys = derive(key);
  if (!keys) return keys.error();
  const std::string_view ct = blob.substr(0, blob.size() - kMac);
  unsigned char mac[kMac];
  mac_of(*keys, ct, mac);
  if (sodium_memcmp(mac, blob.data() + ct.size(), kMac) != 0) {
    sodium_memzero(&*keys, sizeof(Keys));
    return make_error(ErrorCode::kInvalidArgument, "attachment MAC does not verify");
  }
  auto plain = cbc(*keys, ct, false);
  sodium_memzero(&*keys, sizeof(Keys));
  return plain;
}

}  // namespace tern::client
