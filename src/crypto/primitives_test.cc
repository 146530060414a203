// RFC vectors for the primitives: RFC 5869 (HKDF-SHA256), RFC 4231 (HMAC-SHA256), RFC 7748
// (X25519), RFC 8032 (Ed25519), plus AES-CBC round trips and SecretBytes behaviour.
#include <gtest/gtest.h>
#include <sodium.h>

#include <string>

#include "crypto/aes_cbc.h"
#include "crypto/ed25519.h"
#include "crypto/hkdf.h"
#include "crypto/secret.h"
#include "crypto/test_hex.h"
#include "crypto/x25519.h"

namespace tern::crypto {
namespace {

using testing::hex;
using testing::unhex;

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

TEST(HkdfTest, Rfc5869Case1) {
  auto ikm = std::vector<uint8_t>(22, 0x0b);
  auto salt = unhex("000102030405060708090a0b0c");
  auto info = unhex("f0f1f2f3f4f5f6f7f8f9");
  EXPECT_EQ(hex(hkdf_extract(salt, ikm).bytes), "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5");
  std::vector<uint8_t> okm(42);
  ASSERT_TRUE(hkdf(salt, ikm, info, okm).ok());
  EXPECT_EQ(hex(okm), "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

TEST(HkdfTest, Rfc5869Case3EmptySaltAndInfo) {
  auto ikm = std::vector<uint8_t>(22, 0x0b);
  EXPECT_EQ(hex(hkdf_extract({}, ikm).bytes), "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04");
  std::vector<uint8_t> okm(42);
  ASSERT_TRUE(hkdf({}, ikm, {}, okm).ok());
  EXPECT_EQ(hex(okm), "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

TEST(HkdfTest, OutputOverLimitRefused) {
  std::vector<uint8_t> okm(kHkdfMaxOutput + 1);
  auto r = hkdf({}, std::vector<uint8_t>(32, 1), {}, okm);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errc::kTooLarge);
  std::vector<uint8_t> max(kHkdfMaxOutput);
  EXPECT_TRUE(hkdf({}, std::vector<uint8_t>(32, 1), {}, max).ok());
}

TEST(HmacTest, Rfc4231) {
  EXPECT_EQ(hex(hmac_sha256(std::vector<uint8_t>(20, 0x0b), bytes("Hi There"))),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(hex(hmac_sha256(bytes("Jefe"), bytes("what do ya want for nothing?"))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(hex(hmac_sha256(std::vector<uint8_t>(131, 0xaa),
                            bytes("Test Using Larger Than Block-Size Key - Hash Key First"))),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  // Test case 5: output truncated to 128 bits.
  auto tag = unhex("a3b6167473100ee06e0c796c2955552b");
  EXPECT_TRUE(hmac_sha256_verify(std::vector<uint8_t>(20, 0x0c), bytes("Test With Truncation"), tag));
  tag[15] ^= 1;
  EXPECT_FALSE(hmac_sha256_verify(std::vector<uint8_t>(20, 0x0c), bytes("Test With Truncation"), tag));
  EXPECT_FALSE(hmac_sha256_verify(std::vector<uint8_t>(20, 0x0c), bytes("Test With Truncation"), {}));
}

TEST(HmacTest, PartsEqualConcatenation) {
  auto key = bytes("k");
  auto a = bytes("hello "), b = bytes("world");
  EXPECT_EQ(hmac_sha256(key, {a, b}), hmac_sha256(key, bytes("hello world")));
}

TEST(X25519Test, Rfc7748) {
  auto k = unhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
  auto u = unhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
  auto out = x25519(k, std::span<const uint8_t, 32>(u.data(), 32));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(hex(out->bytes), "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");

  auto alice = KeyPair::from_private(unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
  auto bob = KeyPair::from_private(unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
  ASSERT_TRUE(alice.ok() && bob.ok());
  EXPECT_EQ(hex(alice->public_key), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(hex(bob->public_key), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  auto s1 = x25519(alice->private_key.span(), bob->public_key);
  auto s2 = x25519(bob->private_key.span(), alice->public_key);
  ASSERT_TRUE(s1.ok() && s2.ok());
  EXPECT_EQ(hex(s1->bytes), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  EXPECT_TRUE(*s1 == *s2);
}

TEST(X25519Test, AllZeroOutputRefused) {
  auto kp = KeyPair::generate();
  PublicKey zero{};  // u = 0 has order 1: the output is all zeros
  auto r = x25519(kp.private_key.span(), zero);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errc::kInvalidKey);
}

TEST(X25519Test, SignalPublicKeyForm) {
  auto kp = KeyPair::generate();
  auto ser = serialize_public(kp.public_key);
  EXPECT_EQ(ser[0], 0x05);
  auto back = parse_public(ser);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, kp.public_key);
  ser[0] = 0x06;
  EXPECT_FALSE(parse_public(ser).ok());
  EXPECT_FALSE(parse_public(std::span<const uint8_t>(ser.data(), 32)).ok());
}

TEST(Ed25519Test, Rfc8032Tests1And2) {
  auto pk1 = unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  auto sig1 = unhex(
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
  EXPECT_TRUE(ed25519_verify(pk1, {}, sig1));
  auto pk2 = unhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
  auto sig2 = unhex(
      "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00");
  EXPECT_TRUE(ed25519_verify(pk2, unhex("72"), sig2));
  EXPECT_FALSE(ed25519_verify(pk2, unhex("73"), sig2));
  EXPECT_FALSE(ed25519_verify(pk1, unhex("72"), sig2));
  EXPECT_FALSE(ed25519_verify(std::span<const uint8_t>(pk2.data(), 31), unhex("72"), sig2));
}

TEST(AesCbcTest, RoundTripAndPadding) {
  std::vector<uint8_t> key(32, 7), iv(16, 9);
  for (size_t n : {0u, 1u, 15u, 16u, 17u, 1000u}) {
    std::vector<uint8_t> pt(n, 0x5a);
    auto ct = aes_cbc_encrypt(key, iv, pt);
    ASSERT_TRUE(ct.ok());
    EXPECT_EQ(ct->size(), (n / 16 + 1) * 16) << "PKCS#7 always adds 1..16 bytes";
    auto back = aes_cbc_decrypt(key, iv, *ct);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, pt);
  }
  EXPECT_FALSE(aes_cbc_decrypt(key, iv, std::vector<uint8_t>(15)).ok());
  EXPECT_FALSE(aes_cbc_decrypt(key, iv, {}).ok());
  EXPECT_FALSE(aes_cbc_encrypt(std::vector<uint8_t>(31), iv, {}).ok());
  EXPECT_FALSE(aes_cbc_encrypt(key, std::vector<uint8_t>(15), {}).ok());
}

TEST(SecretBytesTest, OwnsCopiesAndCompares) {
  auto a = SecretBytes::copy_of(bytes("secret"));
  EXPECT_EQ(a.size(), 6u);
  EXPECT_TRUE(a.equals(bytes("secret")));
  EXPECT_FALSE(a.equals(bytes("secreT")));
  EXPECT_FALSE(a.equals(bytes("secre")));
  SecretBytes b = std::move(a);
  EXPECT_TRUE(a.empty());
  EXPECT_TRUE(b.equals(bytes("secret")));
  auto c = b.clone();
  EXPECT_NE(c.data(), b.data());
  EXPECT_TRUE(c.equals(b.span()));
  SecretBytes empty(0);
  EXPECT_TRUE(empty.equals({}));
}

}  // namespace
}  // namespace tern::crypto
