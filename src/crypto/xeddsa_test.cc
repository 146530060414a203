#include "crypto/xeddsa.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include "crypto/test_hex.h"

namespace tern::crypto {
namespace {

using testing::unhex;

std::span<const uint8_t, 32> k32(const std::vector<uint8_t>& v) { return std::span<const uint8_t, 32>(v.data(), 32); }
std::span<const uint8_t, 64> s64(const std::vector<uint8_t>& v) { return std::span<const uint8_t, 64>(v.data(), 64); }

struct KeyPair {
  std::vector<uint8_t> priv = std::vector<uint8_t>(32), pub = std::vector<uint8_t>(32);
};
KeyPair fresh_key() {
  init();
  KeyPair kp;
  randombytes_buf(kp.priv.data(), 32);
  crypto_scalarmult_base(kp.pub.data(), kp.priv.data());
  return kp;
}

TEST(XeddsaTest, SignVerifyRoundTripManyKeys) {
  for (int i = 0; i < 64; ++i) {  // half of the keys have an Edwards sign bit of 1
    KeyPair kp = fresh_key();
    std::vector<uint8_t> msg(static_cast<size_t>(i));
    if (!msg.empty()) randombytes_buf(msg.data(), msg.size());
    auto sig = xeddsa_sign(k32(kp.priv), msg);
    EXPECT_EQ(sig[63] & 0x80, 0) << "our signatures follow the spec: sign bit 0";
    EXPECT_TRUE(xeddsa_verify(k32(kp.pub), msg, sig)) << i;
  }
}

TEST(XeddsaTest, TamperedMessageSignatureOrKeyRefused) {
  KeyPair kp = fresh_key(), other = fresh_key();
  std::vector<uint8_t> msg = {1, 2, 3, 4, 5};
  auto sig = xeddsa_sign(k32(kp.priv), msg);
  ASSERT_TRUE(xeddsa_verify(k32(kp.pub), msg, sig));
  auto bad_msg = msg;
  bad_msg[2] ^= 1;
  EXPECT_FALSE(xeddsa_verify(k32(kp.pub), bad_msg, sig));
  EXPECT_FALSE(xeddsa_verify(k32(other.pub), msg, sig));
  for (size_t byte : {0u, 17u, 31u, 32u, 50u, 63u}) {
    for (uint8_t bit : {0x01, 0x80}) {
      auto bad = sig;
      bad[byte] ^= bit;
      EXPECT_FALSE(xeddsa_verify(k32(kp.pub), msg, bad)) << byte << " " << int(bit);
    }
  }
}

TEST(XeddsaTest, DeterministicWithGivenRandomness) {
  KeyPair kp = fresh_key();
  std::vector<uint8_t> msg = {9, 9, 9};
  std::vector<uint8_t> z(64, 0x42), z2(64, 0x43);
  auto a = xeddsa_sign(k32(kp.priv), msg, s64(z));
  auto b = xeddsa_sign(k32(kp.priv), msg, s64(z));
  auto c = xeddsa_sign(k32(kp.priv), msg, s64(z2));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_TRUE(xeddsa_verify(k32(kp.pub), msg, c));
}

TEST(XeddsaTest, NonCanonicalInputsRefused) {
  KeyPair kp = fresh_key();
  std::vector<uint8_t> msg = {7};
  auto sig = xeddsa_sign(k32(kp.priv), msg);
  // s + q: the same value mod q, a malleated signature. Refused (s must be < q).
  static const uint8_t q[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
                                0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
  auto mal = sig;
  unsigned carry = 0;
  for (int i = 0; i < 32; ++i) {
    unsigned v = mal[32 + i] + q[i] + carry;
    mal[32 + i] = static_cast<uint8_t>(v);
    carry = v >> 8;
  }
  EXPECT_FALSE(xeddsa_verify(k32(kp.pub), msg, mal));
  // u >= p (here p itself, ≡ 0, and all ones) is refused.
  auto p = unhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
  auto ones = std::vector<uint8_t>(32, 0xff);
  EXPECT_FALSE(xeddsa_verify(k32(p), msg, sig));
  EXPECT_FALSE(xeddsa_verify(k32(ones), msg, sig));
  // u = p - 1 (u + 1 ≡ 0: no Edwards point) and u = 0 (small order) are refused.
  auto pm1 = unhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
  auto zero = std::vector<uint8_t>(32, 0);
  EXPECT_FALSE(xeddsa_verify(k32(pm1), msg, sig));
  EXPECT_FALSE(xeddsa_verify(k32(zero), msg, sig));
}

// Signatures made by two independent implementations (generated once with the npm packages
// the interop tests install, then pasted here: public key, message, signature, hex):
//  * @privacyresearch/curve25519-typescript 0.0.12 (curve25519-donna's curve25519_sign, the
//    signer of libsignal-protocol-typescript): it carries the Edwards sign bit in the top bit
//    of the last signature byte; the 2nd and 3rd vectors have that bit set.
//  * @signalapp/libsignal-client 0.103.0 (Signal's own Rust library; PrivateKey.sign). The
//    public keys are Signal's 33-byte form; we strip the 0x05 type byte.
// That every one verifies proves our verify accepts what Signal's signers produce, including
// the sign-bit convention. That our own signatures verify in those libraries is proven by the
// interop tests (tests/interop), where signed prekeys we sign are accepted by them.
struct Vector {
  const char* pub;
  const char* msg;
  const char* sig;
};
constexpr Vector kIndependent[] = {
    {"8171af6cd0b7e2dbb01d5452956ab575477e6d3fb162497b5483bfecda111004",
     "2693caa8d32772ce0828230713b08bd9834269795fc7e6a1f87d0168b0644efdac",
     "eb70552de72ff3f0cd9cf14756d0af70ab4b48b0cc899be2c3729b21fd19c70ed2d91a2cd3486b97538f97682d3fe0b02b9c232f4497999b7b8315bf009e6705"},
    {"b2e19bc2aa9c3c784520d9da027f996cfec00e219ffd935a8e356fa02c5e2754",
     "c61a6a820e2d5ca9c660d639541f542d7249c6df8d62577cac95871678169f1033da",
     "2d9bfe62a3329be154589683619490a7fb98927f48ace2df57ced09d18ac838f06a57baf5f42e2a2ab435b0326c3ee058a6f6b9312734bfa8bc0a2d60790518f"},
    {"a527a37296172c81886cba202a8e56250d52b17a4a133d2a9c2c0766d69eb502",
     "f1a4d4a64a6b6a60c6491ae8bcc8af1ed62c686e6ded0d493355e36f49909929d32c0d",
     "a3ebf334c054293d665eef22d2d7cebd826d157c64d592dcf4531233e181fc03c169d8c66a12b5dc49feee0fb103e3372a12c9fe75da16e5e6d66f05fc9a7b83"},
    {"05443c8232a4b9b2f7a780e4e60babfd60c7f92772216b4a18cad25fd4378eae23",
     "a23f1dc50d178a93417dc4782ea4fb18a484dd24c55880eea8e80f4bb3f13cf350",
     "d34d427a17fbea31247e2dfcfcd7422524bcee88fc2aecf7e07e900073c654c58ab150bc4457a25870fe2945dbe6e6fc2aa899cef0a94ba35bbc757bdd89dd04"},
    {"05931187332119457e1944909795400b43d703c8b2319145bcd7c80d3f7004214c",
     "5371d0fc7f4791c41f1a4db5eebad3de51005054f4dcca3234b00f7aae5078781833",
     "6d74af015f82cf25a56d0987ab116415a371636003ffb3065337462a58413a83b7d3caa2890823cabee1ddb02a03dcadf6a37d8f97f5083075103c45ba371c01"},
    {"05aa837d4c428d442fcb42f9c50571d9aad3e468032840a075df7fa55ed0b0595a",
     "9bdf1f5c1b3df92ad13fa3ddc4f2bbd011807137f15f9ba6b9631aa12c3f5fff485265",
     "6444c77ac3f6ad13036e3ffe1f7336a7c00a202af85159e13ddaa6b726e6d66dde38910902869e5d5b32b20e7cd5e00b474a8b8cdbcea3660545c0729f36ba0e"},
};

TEST(XeddsaTest, SignaturesOfIndependentImplementationsVerify) {
  int with_sign_bit = 0;
  for (const Vector& v : kIndependent) {
    auto pub = unhex(v.pub);
    if (pub.size() == 33) {
      ASSERT_EQ(pub[0], 0x05);
      pub.erase(pub.begin());
    }
    auto msg = unhex(v.msg);
    auto sig = unhex(v.sig);
    ASSERT_EQ(pub.size(), 32u);
    ASSERT_EQ(sig.size(), 64u);
    with_sign_bit += (sig[63] & 0x80) ? 1 : 0;
    EXPECT_TRUE(xeddsa_verify(k32(pub), msg, s64(sig))) << v.sig;
    msg.push_back(0);
    EXPECT_FALSE(xeddsa_verify(k32(pub), msg, s64(sig))) << v.sig;
  }
  EXPECT_EQ(with_sign_bit, 2);
}

}  // namespace
}  // namespace tern::crypto
