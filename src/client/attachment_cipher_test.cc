#include "client/attachment_cipher.h"

#include <gtest/gtest.h>

namespace tern::client {
namespace {

TEST(AttachmentCipher, RoundTripAndFreshKeys) {
  const std::string plain = "a photo, say" + std::string(1000, '\x07');
  auto a = encrypt_attachment(plain);
  auto b = encrypt_attachment(plain);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->key.size(), 32u);
  EXPECT_NE(a->key, b->key);  // a fresh key per file
  EXPECT_NE(a->blob, b->blob);
  EXPECT_EQ(a->digest_hex.size(), 64u);
  EXPECT_EQ(a->blob.find("a photo"), std::string::npos);
  // ciphertext (padded to the block) + 32-byte MAC
  EXPECT_EQ(a->blob.size(), (plain.size() / 16 + 1) * 16 + 32);
  auto back = decrypt_attachment(a->blob, a->key, a->digest_hex);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, plain);
  auto empty = encrypt_attachment("");
  ASSERT_TRUE(empty.ok());
  auto e = decrypt_attachment(empty->blob, empty->key);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*e, "");
}

TEST(AttachmentCipher, TamperingIsRefused) {
  auto a = encrypt_attachment("secret attachment bytes");
  ASSERT_TRUE(a.ok());
  std::string flipped = a->blob;
  flipped[3] ^= 1;
  EXPECT_FALSE(decrypt_attachment(flipped, a->key).ok());                  // MAC
  EXPECT_FALSE(decrypt_attachment(flipped, a->key, a->digest_hex).ok());   // digest
  EXPECT_FALSE(decrypt_attachment(a->blob.substr(0, a->blob.size() - 1), a->key).ok());
  EXPECT_FALSE(decrypt_attachment(a->blob, std::string(32, 'k')).ok());    // wrong key
  EXPECT_FALSE(decrypt_attachment(a->blob, "short").ok());
  EXPECT_FALSE(decrypt_attachment("", a->key).ok());
}

}  // namespace
}  // namespace tern::client
