#include "server/server_options.h"

#include "services/push_notifier.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>

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
  // Issue 8's abuse limits.
  EXPECT_EQ(o->services.typing_interval_ms, 1000);
  EXPECT_EQ(o->services.typing_max_members, 100u);
  EXPECT_EQ(o->services.create_rate_per_sec, 1.0);
  EXPECT_EQ(o->services.create_burst, 20.0);
  EXPECT_EQ(o->services.max_conversations_per_user, 10000u);
  EXPECT_EQ(o->services.register_rate_per_min, 10.0);
  EXPECT_EQ(o->services.register_burst, 20.0);
  EXPECT_EQ(o->services.max_presence_subscriptions_per_user, 4096u);
  EXPECT_EQ(o->services.directory_cache, 100000u);
}

TEST(ServerOptions, AbuseLimitsFromFlagsAndConfig) {
  char path[] = "/tmp/tern-config-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << "create_rate = 0.5\nregister_rate = 3.0\ndirectory_cache = 64\ntyping_max_members = 7\n";
  }
  auto o = parse({"--config", path, "--typing-interval-ms", "250", "--create-burst", "4", "--register-burst", "2",
                  "--max-conversations-per-user", "30", "--max-presence-subscriptions-per-user", "9"});
  std::remove(path);
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->services.create_rate_per_sec, 0.5);
  EXPECT_EQ(o->services.create_burst, 4.0);
  EXPECT_EQ(o->services.register_rate_per_min, 3.0);
  EXPECT_EQ(o->services.register_burst, 2.0);
  EXPECT_EQ(o->services.directory_cache, 64u);
  EXPECT_EQ(o->services.typing_max_members, 7u);
  EXPECT_EQ(o->services.typing_interval_ms, 250);
  EXPECT_EQ(o->services.max_conversations_per_user, 30u);
  EXPECT_EQ(o->services.max_presence_subscriptions_per_user, 9u);
  EXPECT_FALSE(parse({"--typing-interval-ms", "0"}));
  EXPECT_FALSE(parse({"--directory-cache", "0"}));
  EXPECT_FALSE(parse({"--create-rate", "-1"}));
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

// ---- issue 12: the options of open_options.h ----

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

// ---- issue 10: the Redis options checked on both paths ----

// An integer option checked on both paths: the flag and the config file key each refuse
// lo-1 and hi+1 (and, in the file, a value that would wrap when narrowed, and a string)
// with an error naming the option, and accept lo and hi.
void expect_range_checked(const std::string& flag, const std::string& key, int64_t lo, int64_t hi,
                          const std::function<int64_t(const ServerOptions&)>& get) {
  SCOPED_TRACE(flag);
  for (int64_t ok : {lo, hi}) {
    auto o = parse({flag, std::to_string(ok)});
    ASSERT_TRUE(o) << o.error().message;
    EXPECT_EQ(get(*o), ok);
  }
  for (int64_t bad : {lo - 1, hi + 1}) {
    auto o = parse({flag, std::to_string(bad)});
    ASSERT_FALSE(o) << bad;
    EXPECT_EQ(o.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(o.error().message.find(flag), std::string::npos) << o.error().message;
  }
  auto from_file = [&](const std::string& value) {
    const std::string path = temp_file(key + " = " + value + "\n");
    auto o = parse({"--config", path});
    std::remove(path.c_str());
    return o;
  };
  for (int64_t ok : {lo, hi}) {
    auto o = from_file(std::to_string(ok));
    ASSERT_TRUE(o) << o.error().message;
    EXPECT_EQ(get(*o), ok);
  }
  for (const std::string& bad :
       {std::to_string(lo - 1), std::to_string(hi + 1), std::to_string(hi + (int64_t{1} << 32)), std::string("\"1\"")}) {
    auto o = from_file(bad);
    ASSERT_FALSE(o) << bad;
    EXPECT_EQ(o.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(o.error().message.find(key + " must be an integer " + std::to_string(lo) + "-" + std::to_string(hi)),
              std::string::npos)
        << o.error().message;
  }
  // The flag still wins over an in-range file value.
  const std::string path = temp_file(key + " = " + std::to_string(lo) + "\n");
  auto o = parse({"--config", path, flag, std::to_string(hi)});
  std::remove(path.c_str());
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(get(*o), hi);
}

TEST(ServerOptions, RedisRouteSendsIsRangeCheckedFromFlagAndConfigFile) {
  expect_range_checked("--redis-route-sends", "redis_route_sends", 0, 1,
                       [](const ServerOptions& o) { return int64_t{o.redis_route_sends}; });
}

TEST(ServerOptions, RedisRouteDevicesIsRangeCheckedFromFlagAndConfigFile) {
  expect_range_checked("--redis-route-devices", "redis_route_devices", 0, 1,
                       [](const ServerOptions& o) { return int64_t{o.redis_route_devices}; });
}

TEST(ServerOptions, RedisDropNowhereIsRangeCheckedFromFlagAndConfigFile) {
  expect_range_checked("--redis-drop-nowhere", "redis_drop_nowhere", 0, 1,
                       [](const ServerOptions& o) { return int64_t{o.redis_drop_nowhere}; });
}

TEST(ServerOptions, RedisCommitGapUsIsRangeCheckedFromFlagAndConfigFile) {
  expect_range_checked("--redis-commit-gap-us", "redis_commit_gap_us", 0, 100000,
                       [](const ServerOptions& o) { return o.redis_commit_gap_us; });
}

TEST(ServerOptions, RedisMediaUsageTtlMsIsRangeCheckedFromFlagAndConfigFile) {
  expect_range_checked("--redis-media-usage-ttl-ms", "redis_media_usage_ttl_ms", 0, 3600000,
                       [](const ServerOptions& o) { return o.redis_media_usage_ttl_ms; });
}

TEST(ServerOptions, RedisReadThreadsIsRangeCheckedFromFlagAndConfigFile) {
  expect_range_checked("--redis-read-threads", "redis_read_threads", 1, 64,
                       [](const ServerOptions& o) { return static_cast<int64_t>(o.redis_read_threads); });
}

TEST(ServerOptions, RedisReadFibersIsRangeCheckedFromFlagAndConfigFile) {
  expect_range_checked("--redis-read-fibers", "redis_read_fibers", 0, 256,
                       [](const ServerOptions& o) { return static_cast<int64_t>(o.redis_read_fibers); });
}

// A node id names the node's Redis connections and opens its registry entries: one that
// Redis would refuse as a connection name, or that would split at a space, is refused at
// start with the rule, not found out later as a node the others never see.
TEST(ServerOptions, ANodeIdWithSpacesOrControlCharactersIsRefused) {
  for (const std::string& bad : std::vector<std::string>{"a b", "node\n1", "tab\there", std::string(65, 'n')}) {
    auto o = parse({"--store", "redis", "--redis", "redis://127.0.0.1:6379", "--node-id", bad});
    ASSERT_FALSE(o) << bad;
    EXPECT_EQ(o.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(o.error().message.find("--node-id must be 1-64 printable ASCII characters"), std::string::npos)
        << o.error().message;
  }
  auto ok = parse({"--store", "redis", "--redis", "redis://127.0.0.1:6379", "--node-id", "eu-west/n1:8081"});
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->node_id, "eu-west/n1:8081");
  EXPECT_TRUE(parse({"--node-id", std::string(64, 'n')}));
}

// Issue 10: logging in to Redis. The password from a file or the URL (not both), the user from
// either; the seeds are parsed once, here.
TEST(ServerOptions, RedisLoginFromTheUrlOrAPasswordFile) {
  const std::string file = temp_file("from-the-file\n");
  auto o = parse({"--store", "redis", "--redis", "redis://10.0.0.1:7000,10.0.0.2:7001", "--redis-password-file", file,
                  "--redis-user", "tern"});
  ASSERT_TRUE(o) << o.error().message;
  ASSERT_EQ(o->redis_seeds.size(), 2u);
  EXPECT_EQ(o->redis_seeds[1].host, "10.0.0.2");
  EXPECT_EQ(o->redis_credentials, (store::redis::RedisCredentials{"tern", "from-the-file", nullptr}));
  auto url = parse({"--store", "redis", "--redis", "redis://tern:in%40url@10.0.0.1:7000"});
  ASSERT_TRUE(url) << url.error().message;
  EXPECT_EQ(url->redis_credentials, (store::redis::RedisCredentials{"tern", "in@url", nullptr}));
  auto none = parse({"--store", "redis", "--redis", "redis://10.0.0.1:7000"});
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->redis_credentials.empty());

  auto twice = parse({"--store", "redis", "--redis", "redis://:pw@10.0.0.1:7000", "--redis-password-file", file});
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.error().message.find("once"), std::string::npos) << twice.error().message;
  EXPECT_FALSE(parse({"--store", "redis", "--redis", "redis://10.0.0.1:7000", "--redis-user", "tern"}));
  EXPECT_FALSE(parse({"--store", "redis", "--redis", "redis://a:pw@10.0.0.1:7000", "--redis-user", "b"}));
  EXPECT_FALSE(parse({"--store", "redis", "--redis", "redis://10.0.0.1:7000", "--redis-password-file", "/nonexistent"}));
  const std::string empty = temp_file("\n");
  auto blank = parse({"--store", "redis", "--redis", "redis://10.0.0.1:7000", "--redis-password-file", empty});
  ASSERT_FALSE(blank);
  EXPECT_NE(blank.error().message.find("is empty"), std::string::npos) << blank.error().message;
  const std::string huge = temp_file(std::string(5000, 'x'));
  auto too_big = parse({"--store", "redis", "--redis", "redis://10.0.0.1:7000", "--redis-password-file", huge});
  ASSERT_FALSE(too_big);
  EXPECT_NE(too_big.error().message.find("larger than 4096 bytes"), std::string::npos) << too_big.error().message;
  ::unlink(file.c_str());
  ::unlink(empty.c_str());
  ::unlink(huge.c_str());
}

// TLS to Redis: rediss:// makes the TLS context (the system's CAs without --redis-tls-ca);
// a CA file that cannot be read is named; TLS files without rediss:// are refused (the
// password would go in clear); so is a config file's.
TEST(ServerOptions, RedisTlsFromARedissAddressAndItsFiles) {
  auto tls = parse({"--store", "redis", "--redis", "rediss://10.0.0.1:6380"});
  ASSERT_TRUE(tls) << tls.error().message;
  EXPECT_NE(tls->redis_credentials.tls, nullptr);
  auto plain = parse({"--store", "redis", "--redis", "redis://10.0.0.1:6379"});
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->redis_credentials.tls, nullptr);
  auto no_ca = parse({"--store", "redis", "--redis", "rediss://10.0.0.1:6380", "--redis-tls-ca", "/nonexistent/ca.pem"});
  ASSERT_FALSE(no_ca);
  EXPECT_NE(no_ca.error().message.find("/nonexistent/ca.pem"), std::string::npos) << no_ca.error().message;
  auto in_clear = parse({"--store", "redis", "--redis", "redis://10.0.0.1:6379", "--redis-tls-cert", "/x.pem",
                         "--redis-tls-key", "/x.key"});
  ASSERT_FALSE(in_clear);
  EXPECT_NE(in_clear.error().message.find("rediss://"), std::string::npos) << in_clear.error().message;
  EXPECT_FALSE(parse({"--store", "redis", "--redis", "rediss://10.0.0.1:6380,redis://10.0.0.2:6379"}));
  const std::string config = temp_file("redis_tls_ca = \"/nonexistent/from-config.pem\"\n");
  auto from_config = parse({"--config", config, "--store", "redis", "--redis", "rediss://10.0.0.1:6380"});
  ASSERT_FALSE(from_config);
  EXPECT_NE(from_config.error().message.find("from-config.pem"), std::string::npos) << from_config.error().message;
  ::unlink(config.c_str());
}

}  // namespace
}  // namespace tern::server
