// What the nodes on one redis-server share beyond the data (redis_store_marks.cc): media
// marks, token buckets, link codes and report ids, seen through two stores on one server
// (two nodes). Each test starts its own server.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "store/redis/redis_store.h"
#include "store/redis/testing/redis_server.h"

namespace tern::store::redis {
namespace {

Result<std::unique_ptr<RedisStore>> open_on(const testing::RedisServer& server) {
  RedisStoreOptions o;
  o.address = RedisAddress{"127.0.0.1", server.port()};
  return RedisStore::open(o);
}

// Every file of the server's directory, concatenated: its AOF, wherever Redis put it.
std::string files_of(const testing::RedisServer& server) {
  std::string all;
  for (const auto& e : std::filesystem::recursive_directory_iterator(server.dir())) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    all.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return all;
}

// The media marks of services/media_leases.h, as two nodes on one server see them: leases
// by many holders, one collector, each excluding the other, each dropped by its holder,
// and gone on their own after the TTL (by Redis's clock).
TEST(RedisStore, MediaMarksAreSharedByTheNodesOnOneServer) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto a = open_on(server);
  auto b = open_on(server);
  ASSERT_TRUE(a.ok() && b.ok());
  using Mark = Store::MediaMark;
  auto mark = [](RedisStore& s, const std::string& id, Mark kind, const std::string& holder, int64_t ttl) {
    auto t = s.mark_media(id, kind, holder, ttl);
    EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.error().message);
    EXPECT_TRUE(t.ok() && t->has_value());
    return t.ok() && t->has_value() && **t;
  };
  auto unmark = [](RedisStore& s, const std::string& id, Mark kind, const std::string& holder) {
    auto r = s.unmark_media(id, kind, holder);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  };
  const std::string x(64, 'a'), y(64, 'b');
  constexpr int64_t kLong = 60'000;
  EXPECT_TRUE(mark(**a, x, Mark::kLease, "a.1", kLong));
  EXPECT_TRUE(mark(**b, x, Mark::kLease, "b.1", kLong));
  EXPECT_FALSE(mark(**b, x, Mark::kCollect, "b", kLong)) << "two leases held";
  unmark(**b, x, Mark::kLease, "b.1");  // a holder drops its own lease only
  EXPECT_FALSE(mark(**b, x, Mark::kCollect, "b", kLong)) << "a.1 still held";
  unmark(**a, x, Mark::kLease, "a.1");
  EXPECT_TRUE(mark(**b, x, Mark::kCollect, "b", kLong));
  EXPECT_FALSE(mark(**a, x, Mark::kLease, "a.2", kLong)) << "being collected";
  EXPECT_FALSE(mark(**a, x, Mark::kCollect, "a", kLong)) << "one collector";
  unmark(**a, x, Mark::kCollect, "a");  // not a's mark: stays
  EXPECT_FALSE(mark(**a, x, Mark::kLease, "a.2", kLong));
  unmark(**b, x, Mark::kCollect, "b");
  EXPECT_TRUE(mark(**a, x, Mark::kLease, "a.3", kLong));
  // Marks of a node that died: gone after their TTL.
  EXPECT_TRUE(mark(**a, y, Mark::kLease, "dead.1", 50));
  EXPECT_FALSE(mark(**b, y, Mark::kCollect, "b", kLong));
  bool collected = false;
  for (int i = 0; i < 400 && !collected; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // Redis's clock must pass the TTL
    collected = mark(**b, y, Mark::kCollect, "dead", 50);
  }
  EXPECT_TRUE(collected) << "the lease did not expire";
  bool leased = false;
  for (int i = 0; i < 400 && !leased; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    leased = mark(**a, y, Mark::kLease, "a.4", kLong);
  }
  EXPECT_TRUE(leased) << "the collect mark did not expire";
  auto bad = (*a)->mark_media(x, Mark::kLease, "", kLong);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
}

// The marks live for one send or one collection: they are not written to the AOF (each would
// cost an fsync with appendfsync always), while a commit's writes are.
TEST(RedisStore, MediaMarksAreNotWrittenToTheAof) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto a = open_on(server);
  ASSERT_TRUE(a.ok());
  auto taken = (*a)->mark_media(std::string(64, 'c'), Store::MediaMark::kLease, "holder-kept-out-of-aof", 60'000);
  ASSERT_TRUE(taken.ok() && taken->value_or(false));
  Batch b;
  b.add(PutReport{1, "report-kept-in-aof"});
  ASSERT_TRUE((*a)->commit(b, true).ok());
  const std::string aof = files_of(server);
  EXPECT_NE(aof.find("report-kept-in-aof"), std::string::npos) << "the AOF was not where the test looked";
  EXPECT_EQ(aof.find("holder-kept-out-of-aof"), std::string::npos);
}

// A token bucket lives in Redis (Store::take_tokens): two stores on one server (two nodes)
// take from one bucket, full when first used and refilled by Redis's clock; each key has its
// own; `n` tokens go at once or not at all.
TEST(RedisStore, ATokenBucketIsSharedByTheNodesOnOneServer) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto a = open_on(server);
  auto b = open_on(server);
  ASSERT_TRUE(a.ok() && b.ok());
  auto take = [](RedisStore& s, const std::string& key, double rate, double burst, double n) {
    auto t = s.take_tokens(key, rate, burst, n);
    EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.error().message);
    EXPECT_TRUE(t.ok() && t->has_value());
    return t.ok() && t->has_value() && **t;
  };
  constexpr double kHourly = 1.0 / 3600;  // no token comes back during the test
  EXPECT_TRUE(take(**a, "register:10.0.0.1", kHourly, 3, 1));
  EXPECT_TRUE(take(**b, "register:10.0.0.1", kHourly, 3, 1));
  EXPECT_TRUE(take(**a, "register:10.0.0.1", kHourly, 3, 1));
  EXPECT_FALSE(take(**b, "register:10.0.0.1", kHourly, 3, 1));
  EXPECT_FALSE(take(**a, "register:10.0.0.1", kHourly, 3, 1));
  EXPECT_TRUE(take(**b, "register:10.0.0.2", kHourly, 3, 1));
  EXPECT_TRUE(take(**a, "invite:alice", kHourly, 3, 2));
  EXPECT_FALSE(take(**b, "invite:alice", kHourly, 3, 2));
  EXPECT_TRUE(take(**b, "invite:alice", kHourly, 3, 1));
  // 1,000 a second, one at most: emptied, then back within a few milliseconds.
  EXPECT_TRUE(take(**a, "fast:x", 1000, 1, 1));
  bool back = false;
  for (int i = 0; i < 1000 && !back; ++i) back = take(**b, "fast:x", 1000, 1, 1);
  EXPECT_TRUE(back);
  auto bad = (*a)->take_tokens("x", 0, 1, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
}

// A user's link codes (services/accounts.h) are shared: a code added through one node is
// taken through the other, once; each user holds at most `max` unexpired codes; a code is
// its user's only; an expired code is not taken and no longer counts (by Redis's clock).
TEST(RedisStore, LinkCodesAreSharedByTheNodesOnOneServer) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto a = open_on(server);
  auto b = open_on(server);
  ASSERT_TRUE(a.ok() && b.ok());
  auto add = [](RedisStore& s, const std::string& user, const std::string& hash, int64_t ttl) -> int64_t {
    auto r = s.add_link_code(user, hash, ttl, 3);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    EXPECT_TRUE(r.ok() && r->has_value());
    return r.ok() && r->has_value() ? **r : -1;
  };
  auto take = [](RedisStore& s, const std::string& user, const std::string& hash) {
    auto r = s.take_link_code(user, hash);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    EXPECT_TRUE(r.ok() && r->has_value());
    return r.ok() && r->has_value() && **r;
  };
  constexpr int64_t kTenMinutes = 600'000;
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  const int64_t expiry = add(**a, "alice", "h1", kTenMinutes);
  EXPECT_GT(expiry, now + kTenMinutes - 60'000) << "the expiry is on Redis's clock, this machine's";
  EXPECT_LT(expiry, now + kTenMinutes + 60'000);
  EXPECT_FALSE(take(**b, "bob", "h1")) << "another user's code";
  EXPECT_TRUE(take(**b, "alice", "h1"));
  EXPECT_FALSE(take(**a, "alice", "h1")) << "single use";
  EXPECT_GT(add(**a, "alice", "h2", kTenMinutes), 0);
  EXPECT_GT(add(**b, "alice", "h3", kTenMinutes), 0);
  EXPECT_GT(add(**a, "alice", "h4", kTenMinutes), 0);
  EXPECT_EQ(add(**b, "alice", "h5", kTenMinutes), 0) << "three outstanding, across both nodes";
  EXPECT_GT(add(**b, "bob", "h5", kTenMinutes), 0) << "each user has their own";
  EXPECT_TRUE(take(**a, "alice", "h3"));
  EXPECT_GT(add(**b, "alice", "h5", kTenMinutes), 0) << "a taken code no longer counts";
  // A code past its TTL: not taken, and its place is free again.
  EXPECT_GT(add(**a, "carol", "short", 20), 0);
  EXPECT_GT(add(**a, "carol", "long1", kTenMinutes), 0);
  EXPECT_GT(add(**a, "carol", "long2", kTenMinutes), 0);
  EXPECT_EQ(add(**a, "carol", "long3", kTenMinutes), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(40));  // Redis's clock must pass the 20 ms TTL
  EXPECT_FALSE(take(**b, "carol", "short")) << "expired";
  EXPECT_GT(add(**a, "carol", "long3", kTenMinutes), 0) << "an expired code no longer counts";
  auto bad = (*a)->add_link_code("alice", "", kTenMinutes, 3);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
}

// A code is durable as any write: it is in the AOF under its hash, never the code itself.
TEST(RedisStore, LinkCodesAreKeptByHashInTheAof) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto a = open_on(server);
  ASSERT_TRUE(a.ok());
  auto added = (*a)->add_link_code("alice", "hash-of-the-code-in-aof", 600'000, 5);
  ASSERT_TRUE(added.ok() && added->value_or(0) > 0);
  const std::string aof = files_of(server);
  EXPECT_NE(aof.find("hash-of-the-code-in-aof"), std::string::npos);
}

// Report ids come from one counter in Redis: two nodes never hand out one id (each node's own
// counter would, and one report would replace the other). A counter made after reports were
// stored (by an older version) starts above them.
TEST(RedisStore, ReportIdsAreSharedByTheNodesOnOneServer) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto a = open_on(server);
  auto b = open_on(server);
  ASSERT_TRUE(a.ok() && b.ok());
  Batch earlier;
  earlier.add(PutReport{1, "r1"});
  earlier.add(PutReport{7, "r7"});
  ASSERT_TRUE((*a)->commit(earlier, true).ok());
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    auto id = (i % 2 ? *b : *a)->next_report_id();
    ASSERT_TRUE(id.ok()) << id.error().message;
    ASSERT_TRUE(id->has_value());
    ids.push_back(**id);
  }
  EXPECT_EQ(ids, (std::vector<uint64_t>{8, 9, 10, 11}));
}

}  // namespace
}  // namespace tern::store::redis
