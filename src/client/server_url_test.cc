#include "client/server_url.h"

#include <gtest/gtest.h>

namespace tern::client {
namespace {

TEST(ServerUrl, Parses) {
  auto u = parse_server_url("http://127.0.0.1:8080");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->prefix, "");
  EXPECT_EQ(u->to_string(), "http://127.0.0.1:8080");

  auto d = parse_server_url("http://example.org/");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->port, 80);
  EXPECT_EQ(d->prefix, "");

  auto p = parse_server_url("http://h:1/tern/");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->prefix, "/tern");

  auto bare = parse_server_url("localhost:9");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->host, "localhost");
  EXPECT_EQ(bare->port, 9);

  auto v6 = parse_server_url("http://[::1]:8080");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 8080);
  EXPECT_FALSE(v6->tls);
}

TEST(ServerUrl, HttpsCarriesATlsContext) {
  auto u = parse_server_url("https://chat.example");
  ASSERT_TRUE(u.ok()) << u.error().message;
  EXPECT_EQ(u->port, 443);
  ASSERT_TRUE(u->tls);
  EXPECT_EQ(u->to_string(), "https://chat.example:443");
  auto p = parse_server_url("https://h:8443/tern");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->port, 8443);
  EXPECT_EQ(p->prefix, "/tern");
  // A CA file that cannot be read is an error, named.
  auto missing = parse_server_url("https://h:1", "/nonexistent/ca.pem");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("/nonexistent/ca.pem"), std::string::npos) << missing.error().message;
}

TEST(ServerUrl, Refuses) {
  for (const char* bad : {"", "http://", "http://:80", "https://", "ftp://h", "http://h:0", "http://h:65536",
                          "http://h:x", "http://h:", "http://[::1"}) {
    EXPECT_FALSE(parse_server_url(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace tern::client
