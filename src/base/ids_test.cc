#include "base/ids.h"

#include <gtest/gtest.h>

namespace tern {

TEST(Ids, UserIds) {
  EXPECT_TRUE(valid_user_id("alice"));
  EXPECT_TRUE(valid_user_id("a.b_c-9"));
  EXPECT_TRUE(valid_user_id(std::string(64, 'a')));
  EXPECT_FALSE(valid_user_id(""));
  EXPECT_FALSE(valid_user_id(std::string(65, 'a')));
  EXPECT_FALSE(valid_user_id("Alice"));
  EXPECT_FALSE(valid_user_id("al ice"));
  EXPECT_FALSE(valid_user_id("al:ice"));
}

TEST(Ids, ClientMsgIds) {
  EXPECT_TRUE(valid_client_msg_id("c-1"));
  EXPECT_TRUE(valid_client_msg_id(std::string(64, '~')));
  EXPECT_FALSE(valid_client_msg_id(""));
  EXPECT_FALSE(valid_client_msg_id(std::string(65, 'x')));
  EXPECT_FALSE(valid_client_msg_id("tab\there"));
  EXPECT_FALSE(valid_client_msg_id("\xc3\xa9"));
}

TEST(Ids, DeviceKeys) {
  auto d = parse_device_key("bob:2");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->user, "bob");
  EXPECT_EQ(d->device, 2u);
  EXPECT_EQ(d->key(), "bob:2");
  for (const char* bad : {"bob", "bob:", ":1", "bob:0", "bob:x", "bob:1x", "Bob:1", "bob:99999999999"})
    EXPECT_FALSE(parse_device_key(bad)) << bad;
}

}  // namespace tern
