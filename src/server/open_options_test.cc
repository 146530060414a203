// ternd's issue-12 options (open_options.h): flags, TOML keys and the checks at start-up.
#include "server/open_options.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "server/server_options.h"
#include "services/push_notifier.h"

namespace tern::server {
namespace {

Result<ServerOptions> parse(std::vector<std::string> args) {
  args.insert(args.begin(), "ternd");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

std::string temp_file(const std::string& content) {
  char path[] = "/tmp/tern-open-XXXXXX";
  const int fd = ::mkstemp(path);
  ::close(fd);
  std::ofstream(path) << content;
  return path;
}

TEST(OpenOptions, DefaultsLeaveAdminAndPushOff) {
  auto o = parse({});
  ASSERT_TRUE(o);
  EXPECT_TRUE(o->open.admin_listen.empty());
  EXPECT_TRUE(o->services.push_webhook.empty());
  EXPECT_EQ(o->services.invite_rate_per_min, 60.0);
  EXPECT_EQ(o->services.report_burst, 5.0);
  EXPECT_EQ(o->services.max_report_bytes, 65536u);
  EXPECT_EQ(o->services.push_queue, 10000u);
}

TEST(OpenOptions, AdminNeedsATokenFileAndAValidAddress) {
  EXPECT_FALSE(parse({"--admin-listen", "127.0.0.1:9000"}));
  const std::string token = temp_file("0123456789abcdef0123\n");
  auto o = parse({"--admin-listen", "127.0.0.1:9000", "--admin-token-file", token});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->open.admin_token, "0123456789abcdef0123");
  EXPECT_EQ(o->open.admin_host, "127.0.0.1");
  EXPECT_EQ(o->open.admin_port, 9000);
  EXPECT_FALSE(parse({"--admin-listen", "127.0.0.1", "--admin-token-file", token}));
  EXPECT_FALSE(parse({"--admin-listen", "127.0.0.1:99999", "--admin-token-file", token}));
  const std::string short_token = temp_file("short\n");
  EXPECT_FALSE(parse({"--admin-listen", "127.0.0.1:9000", "--admin-token-file", short_token}));
  EXPECT_FALSE(parse({"--admin-listen", "127.0.0.1:9000", "--admin-token-file", "/nonexistent/token"}));
  std::remove(token.c_str());
  std::remove(short_token.c_str());
}

TEST(OpenOptions, PushWebhookMustBePlainHttpWithAHost) {
  EXPECT_TRUE(parse({"--push-webhook", "http://127.0.0.1:9100/push"}));
  EXPECT_FALSE(parse({"--push-webhook", "https://push.example/x"}));
  EXPECT_FALSE(parse({"--push-webhook", "http://:80/x"}));
  EXPECT_FALSE(parse({"--push-webhook", "http://host:0/x"}));
  EXPECT_FALSE(parse({"--push-queue", "0"}));
  auto p = services::parse_push_webhook("http://gw.local/notify");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->host, "gw.local");
  EXPECT_EQ(p->port, 80);
  EXPECT_EQ(p->path, "/notify");
}

TEST(OpenOptions, ConfigFileKeysAndFlagsWin) {
  const std::string config = temp_file(
      "invite_rate = 5.0\ninvite_burst = 7.0\nreport_rate = 2.0\nmax_report_bytes = 100\n"
      "push_webhook = \"http://127.0.0.1:9/p\"\npush_batch = 3\n");
  auto o = parse({"--config", config, "--push-batch", "4"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->services.invite_rate_per_min, 5.0);
  EXPECT_EQ(o->services.invite_burst, 7.0);
  EXPECT_EQ(o->services.report_rate_per_hour, 2.0);
  EXPECT_EQ(o->services.max_report_bytes, 100u);
  EXPECT_EQ(o->services.push_webhook, "http://127.0.0.1:9/p");
  EXPECT_EQ(o->services.push_batch, 4u);
  std::remove(config.c_str());
}

}  // namespace
}  // namespace tern::server
