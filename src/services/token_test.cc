#include "services/token.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <set>

namespace tern::services {
namespace {

TEST(Token, TokensAreLongRandomAndUrlSafe) {
  ASSERT_GE(sodium_init(), 0);
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const auto t = new_token();
    EXPECT_EQ(t.size(), 43u);  // 256 bits
    EXPECT_EQ(t.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), std::string::npos);
    EXPECT_TRUE(seen.insert(t).second);
  }
}

TEST(Token, HashIsStableHexAndNotTheToken) {
  const auto t = new_token();
  EXPECT_EQ(hash_token(t), hash_token(t));
  EXPECT_EQ(hash_token(t).size(), 64u);
  EXPECT_NE(hash_token(t), t);
  EXPECT_NE(hash_token(t), hash_token(new_token()));
  EXPECT_EQ(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Token, LinkCodesHaveNoLookAlikes) {
  for (int i = 0; i < 50; ++i) {
    const auto c = new_link_code();
    ASSERT_EQ(c.size(), 9u);
    EXPECT_EQ(c[4], '-');
    EXPECT_EQ(c.find_first_of("01IO"), std::string::npos);
  }
}

}  // namespace
}  // namespace tern::services
