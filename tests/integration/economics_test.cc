// Integration: the store work of fan-out on both sides of --fanout-read-threshold (issue 9),
// measured on the real ternd through its own counters (tern_store_writes_total: store
// contract ops committed; tern_store_reads_total: store read calls). Below the threshold a
// message costs a log append, an idempotency record and one inbox mark per recipient device;
// at or above it, and in channels, only the first two, whatever the size. The test prints
// the table that docs/fanout.md quotes.
#include <gtest/gtest.h>

#include <cstdio>

#include "support/server_test.h"

namespace tern::test {
namespace {

class TerndEconomics : public ServerTest {
 protected:
  double metric(const Account& who, std::string_view name) {
    auto r = http_request(port(), "GET", "/metrics", std::nullopt, who.token);
    EXPECT_EQ(r.status, 200);
    const std::string needle = std::string("\n") + std::string(name) + " ";
    auto at = r.body.find(needle);
    EXPECT_NE(at, std::string::npos) << name;
    if (at == std::string::npos) return -1;
    return std::stod(r.body.substr(at + needle.size()));
  }

  struct Cost {
    double writes_per_message = 0;
    double reads_per_sync = 0;
  };

  // `sender` sends `n` messages to `conv`; then `reader` (one device, behind by n) connects.
  Cost measure(const Account& sender, const Account& reader, const std::string& conv, int n, const char* tag) {
    Device ds(sender);
    EXPECT_TRUE(ds.connect_synced(port()));
    const double w0 = metric(sender, "tern_store_writes_total");
    for (int i = 0; i < n; ++i) ds.must_send(conv, std::string(tag) + std::to_string(i), "x");
    const double w1 = metric(sender, "tern_store_writes_total");
    Device dr(reader);
    const double r0 = metric(sender, "tern_store_reads_total");
    auto replay = dr.connect_synced(port());
    const double r1 = metric(sender, "tern_store_reads_total");
    EXPECT_TRUE(replay);
    if (!replay) return {};
    EXPECT_GE(message_seqs(*replay, conv).size(), static_cast<size_t>(n)) << tag;
    // Ack everything, so that the next measurement finds this reader behind in one place only.
    std::map<std::string, Seq> last;
    for (const auto& f : *replay)
      if (type_of(f) == "message") last[jstr(f, "conversation_id")] = std::max(last[jstr(f, "conversation_id")], seq_of(f));
    for (const auto& [c, s] : last) EXPECT_TRUE(dr.ack(c, s));
    dr.drain(std::chrono::milliseconds(200));
    return Cost{(w1 - w0) / n, r1 - r0};
  }
};

TEST_F(TerndEconomics, WritesPerMessageStayFlatAboveTheThreshold) {
  ASSERT_NO_FATAL_FAILURE(start_server({"--send-rate", "100000", "--send-burst", "100000", "--create-rate", "0",
                                        "--register-rate", "0", "--invite-rate", "0", "--max-members", "1024", "--channel-post-rate", "100000",
                                        "--channel-post-burst", "100000"}));
  std::vector<Account> users;
  for (int i = 0; i < 1000; ++i) users.push_back(api().must_register("u" + std::to_string(i)));
  ASSERT_EQ(users.size(), 1000u);
  const int n = 20;

  std::printf("\n| conversation | members | fan-out | store writes per message | store reads per sync (behind by %d) |\n"
              "|---|---:|---|---:|---:|\n", n);
  for (size_t size : {10, 100, 499, 500, 1000}) {
    // The reader is in this conversation only: a sync's reads grow with the number of the
    // user's read-side conversations (one head and one cursor read each), not with sizes.
    const Account reader = api().must_register("reader" + std::to_string(size));
    std::vector<std::string> members{reader.user};
    for (size_t i = 1; i + 1 < size; ++i) members.push_back(users[i].user);
    const std::string g = api().must_group(users[0].token, "g", members);
    ASSERT_FALSE(g.empty());
    const Cost c = measure(users[0], reader, g, n, ("g" + std::to_string(size) + "-").c_str());
    const bool read_side = size >= 500;
    std::printf("| group | %zu | on %s | %.1f | %.0f |\n", size, read_side ? "read" : "write", c.writes_per_message,
                c.reads_per_sync);
    if (read_side) {
      EXPECT_EQ(c.writes_per_message, 2.0) << size << ": log append + idempotency record only";
    } else {
      EXPECT_EQ(c.writes_per_message, 2.0 + static_cast<double>(size - 1)) << size << ": + one inbox mark per device";
    }
    // A sync reads a bounded number of times, whatever the size (one conversation behind).
    EXPECT_LE(c.reads_per_sync, 20) << size;
    EXPECT_GE(c.reads_per_sync, 1) << size;
  }

  // A channel: 10 subscribers, then 1,000: a post costs the same.
  auto ch = http_request(port(), "POST", "/v1/conversations", R"({"type":"channel","name":"c"})", users[0].token);
  ASSERT_EQ(ch.status, 201) << ch.body;
  const std::string channel = jstr(ch.obj(), "conversation_id");
  const Account early = api().must_register("early"), late = api().must_register("late");
  auto join = [&](const Account& a) {
    return http_request(port(), "POST", "/v1/conversations/" + channel + "/join", "{}", a.token).status;
  };
  ASSERT_EQ(join(early), 200);
  for (size_t i = 1; i < 9; ++i) ASSERT_EQ(join(users[i]), 200);
  const Cost small = measure(users[0], early, channel, n, "c10-");
  ASSERT_EQ(join(late), 200);
  for (size_t i = 9; i < 998; ++i) ASSERT_EQ(join(users[i]), 200);
  const Cost large = measure(users[0], late, channel, n, "c1000-");
  std::printf("| channel | 10 | on read | %.1f | %.0f |\n| channel | 1000 | on read | %.1f | %.0f |\n",
              small.writes_per_message, small.reads_per_sync, large.writes_per_message, large.reads_per_sync);
  EXPECT_EQ(small.writes_per_message, 2.0);
  EXPECT_EQ(large.writes_per_message, small.writes_per_message);
  EXPECT_EQ(large.reads_per_sync, small.reads_per_sync) << "reads per sync do not grow with the audience";
  EXPECT_LE(large.reads_per_sync, 20);
}

}  // namespace
}  // namespace tern::test
