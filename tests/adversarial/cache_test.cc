// Issue 8, item 8: a 404 for a random user name grew the user cache forever (~1.6 GB/h at the
// observed request rate). Now only real users are cached, and every cache is bounded
// (--directory-cache entries each, LRU).
#include <gtest/gtest.h>

#include <random>

#include "harm.h"

namespace tern::test {
namespace {

class AdversarialCache : public ServerTest {};

// Sends `count` POST /v1/conversations (direct, with a random unknown 64-character user) over
// keep-alive connections, pipelined `batch` at a time. Returns how many answers came back.
size_t flood_unknown_users(uint16_t port, const std::string& token, size_t count, std::mt19937_64& rng) {
  size_t answered = 0;
  const size_t batch = 100;
  while (answered < count) {
    RawConn c;
    if (!c.connect(port)) return answered;
    for (int round = 0; round < 20 && answered < count; ++round) {
      std::string wire;
      for (size_t i = 0; i < batch; ++i) {
        std::string name;
        for (int k = 0; k < 64; ++k) name += "abcdefghijklmnopqrstuvwxyz0123456789"[rng() % 36];
        const std::string body = R"({"type":"direct","members":[")" + name + R"("]})";
        wire += "POST /v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
                "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      }
      if (!c.write_all(wire)) return answered;
      size_t got = 0;
      std::string seen;
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (got < batch && std::chrono::steady_clock::now() < until) {
        seen += c.read_some(ms(200));
        size_t pos = 0, n = 0;
        while ((pos = seen.find("HTTP/1.1 ", pos)) != std::string::npos) ++n, pos += 9;
        got = n;
        if (c.eof()) break;
      }
      answered += got;
      if (got < batch) return answered;
    }
  }
  return answered;
}

// Bounds: 40,000 requests naming unknown users grow the server's RSS by at most 2 MiB (before
// the fix each one cached an entry: ~8 MB here), and the probe's p99 stays within
// 2 × unloaded + 50 ms while they run.
TEST_F(AdversarialCache, UnknownUsersAreNotCached) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args(setup_friendly())));
  Probe probe(api(), port());
  ASSERT_TRUE(probe.ready());
  Account mallory = api().must_register("mallory");
  std::mt19937_64 rng(42);
  ASSERT_EQ(flood_unknown_users(port(), mallory.token, 4000, rng), 4000u);  // warm up allocator and sessions
  const size_t rss0 = rss_kib(server_->pid());
  ASSERT_GT(rss0, 0u);
  const HarmStats base = probe.measure(ms(2000));
  HarmStats loaded;
  size_t sent = 0;
  {
    AttackThread attack([&](const std::atomic<bool>&) { sent = flood_unknown_users(port(), mallory.token, 40000, rng); });
    loaded = probe.measure(ms(4000));
  }
  ASSERT_EQ(sent, 40000u);
  const size_t rss1 = rss_kib(server_->pid());
  EXPECT_LE(rss1, rss0 + 2048) << "RSS grew from " << rss0 << " KiB to " << rss1 << " KiB after " << sent
                               << " lookups of unknown users";
  expect_harm_bounded(base, loaded, "lookups of unknown users");
}

// Bound: with --directory-cache 64, creating 200 conversations and 200 users leaves at most
// 2 × 64 of each cached (tern_directory_cached_conversations and _users on /metrics; entries
// just written are kept beyond the capacity for a while, never beyond twice it).
TEST_F(AdversarialCache, DirectoryCachesAreBounded) {
  ASSERT_NO_FATAL_FAILURE(start_server(config_args(setup_friendly({{"directory_cache", "64"}}))));
  Account alice = api().must_register("alice");
  for (int i = 0; i < 200; ++i) {
    const std::string u = "user" + std::to_string(i);
    api().must_register(u);
    ASSERT_FALSE(api().must_group(alice.token, "g", {u}).empty());
  }
  auto metrics = http_request(port(), "GET", "/metrics", std::nullopt, alice.token);
  ASSERT_EQ(metrics.status, 200);
  for (const char* cache : {"conversations", "users"}) {
    const std::string key = std::string("\ntern_directory_cached_") + cache + " ";
    auto pos = metrics.body.find(key);
    ASSERT_NE(pos, std::string::npos) << "no " << key << "in /metrics";
    const long v = std::strtol(metrics.body.c_str() + pos + key.size(), nullptr, 10);
    EXPECT_LE(v, 128) << cache;
    EXPECT_GT(v, 0) << cache;
  }
}

}  // namespace
}  // namespace tern::test
