#include <gtest/gtest.h>

#include "client/api.h"
#include "client/errors.h"

namespace tern::client {
namespace {

TEST(LinkCode, TypedFormsBecomeTheIssuedForm) {
  for (const char* typed : {"ABCD-EF23", "abcd-ef23", "ABCDEF23", "abcdef23", " abcd ef23 ", "Abcd-Ef23"}) {
    auto c = normalize_link_code(typed);
    ASSERT_TRUE(c.ok()) << typed;
    EXPECT_EQ(*c, "ABCD-EF23") << typed;
  }
}

TEST(LinkCode, WhatCannotBeACodeIsRefusedLocally) {
  for (const char* typed : {"", "ABCD-EF2", "ABCD-EF234", "ABCD-EF2O", "ABCD-EF21", "ABCD_EF23", "ÄBCD-EF23"}) {
    auto c = normalize_link_code(typed);
    EXPECT_FALSE(c.ok()) << typed;
    if (!c.ok()) {
      EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument);
    }
  }
}

TEST(Errors, NetworkErrorsAreToldApartFromAnOverloadedServer) {
  EXPECT_TRUE(is_network_error(network_error("connect: Connection refused")));
  EXPECT_FALSE(is_network_error(make_error(ErrorCode::kOverloaded, "commit queue full")));
  EXPECT_FALSE(is_network_error(make_error(ErrorCode::kNotFound, "network: not really")));
}

}  // namespace
}  // namespace tern::client
