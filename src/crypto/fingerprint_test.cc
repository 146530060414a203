#include "crypto/fingerprint.h"

#include <gtest/gtest.h>

#include <cstring>

#include "crypto/test_hex.h"

namespace tern::crypto {
namespace {

using testing::unhex;

PublicKey key_of(const char* hex33) {
  auto b = unhex(hex33);
  return *parse_public(b);
}

std::vector<uint8_t> id(const char* s) { return std::vector<uint8_t>(s, s + std::strlen(s)); }

// Made once with @signalapp/libsignal-client 0.103.0:
// Fingerprint.new(5200, 2, "alice", A, "bob", B).displayableFingerprint().toString().
// That ours equals it proves the same construction as Signal's; the interop test compares
// fresh keys against libsignal-client and libsignal-protocol-typescript on every run.
TEST(SafetyNumberTest, MatchesSignal) {
  PublicKey a = key_of("054a879348a8cc03b2e62221352091ec5aee5edf5377f8e2d173e0bb70c8b8297f");
  PublicKey b = key_of("059ba0c8679e87f39eb18e4050859fab64bb20eb9dcebfa3a533d57670e8b0195b");
  auto n = safety_number(kSafetyNumberIterations, id("alice"), a, id("bob"), b);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, "323978676189273322959661697624394395920126682853998507934987");
  // Both sides compute the same number.
  EXPECT_EQ(*safety_number(kSafetyNumberIterations, id("bob"), b, id("alice"), a), *n);
  // Another key gives another number.
  EXPECT_NE(*safety_number(kSafetyNumberIterations, id("alice"), a, id("bob"), a), *n);
}

TEST(SafetyNumberTest, IterationsBounded) {
  PublicKey k{};
  EXPECT_EQ(safety_number(0, {}, k, {}, k).error(), Errc::kMalformed);
  EXPECT_EQ(safety_number(kMaxSafetyNumberIterations + 1, {}, k, {}, k).error(), Errc::kTooLarge);
  auto n = safety_number(1, {}, k, {}, k);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->size(), 60u);
}

}  // namespace
}  // namespace tern::crypto
