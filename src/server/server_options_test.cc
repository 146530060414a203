#include "server/server_options.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace tern::server {
namespace {

Result<ServerOptions> parse(std::vector<std::string> args) {
  args.insert(args.begin(), "ternd");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

TEST(ServerOptions, Defaults) {
  auto o = parse({});
  ASSERT_TRUE(o);
  EXPECT_EQ(o->gateway.host, "127.0.0.1");
  EXPECT_EQ(o->gateway.port, 8080);
  EXPECT_EQ(o->data_dir, "./tern-data");
  EXPECT_TRUE(o->services.durable);
  EXPECT_EQ(o->services.limits.max_members_per_group, 1024u);
  EXPECT_EQ(o->services.limits.max_devices_per_user, 6u);
}

TEST(ServerOptions, FlagsOverrideConfigFile) {
  char path[] = "/tmp/tern-config-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << "listen = \"127.0.0.1:9000\"\nmax_members = 10\ndurability = \"none\"\nping_interval = 5\n";
  }
  auto o = parse({"--config", path, "--max-members", "20"});
  std::remove(path);
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->gateway.port, 9000);
  EXPECT_EQ(o->services.limits.max_members_per_group, 20u);
  EXPECT_FALSE(o->services.durable);
  EXPECT_EQ(o->gateway.ping_interval.count(), 5);
}

TEST(ServerOptions, ConfigFileWithAnUnknownKeyIsRefusedByName) {
  char path[] = "/tmp/tern-config-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << "listen = \"127.0.0.1:9000\"\nmax_member = 10\n";  // a typo of max_members
  }
  auto o = parse({"--config", path});
  std::remove(path);
  ASSERT_FALSE(o);
  EXPECT_NE(o.error().message.find("unknown key 'max_member'"), std::string::npos) << o.error().message;
}

TEST(ServerOptions, RejectsBadValues) {
  EXPECT_FALSE(parse({"--listen", "nohostport"}));
  EXPECT_FALSE(parse({"--listen", "127.0.0.1:70000"}));
  EXPECT_FALSE(parse({"--durability", "maybe"}));
  EXPECT_FALSE(parse({"--idempotency-days", "1"}));
  EXPECT_FALSE(parse({"--config", "/nonexistent/tern.toml"}));
  EXPECT_FALSE(parse({"--no-such-flag"}));
}

}  // namespace
}  // namespace tern::server
