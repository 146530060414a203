// The Redis backend runs the store contract suite against a real redis-server (started here
// on a free loopback port, AOF with appendfsync always), plus what only Redis has: a server
// that dies or goes away.
#include "store/redis/redis_store.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <future>

#include "base/clock.h"
#include "base/fiber.h"
#include "base/metrics.h"

#include "store/redis/testing/redis_info.h"
#include "store/redis/testing/redis_server.h"
#include "store/redis/testing/two_nodes.h"
#include "store/store_contract_test.h"

namespace tern::store::redis {
namespace {

// One redis-server for the whole binary (stopped by the environment's TearDown); every
// harness starts from an empty database.
testing::RedisServer* g_server = nullptr;

class SharedServer final : public ::testing::Environment {
 public:
  void SetUp() override {
    g_server = new testing::RedisServer();
    auto r = g_server->start();
    ASSERT_TRUE(r.ok()) << "cannot start redis-server: " << r.error().message;
  }
  void TearDown() override {
    delete g_server;
    g_server = nullptr;
  }
};
const auto* const g_env = ::testing::AddGlobalTestEnvironment(new SharedServer);

testing::RedisServer& shared_server() { return *g_server; }

RedisStoreOptions options_for(const testing::RedisServer& server) {
  RedisStoreOptions o;
  o.address = RedisAddress{"127.0.0.1", server.port()};
  return o;
}

Result<std::unique_ptr<RedisStore>> open_on(const testing::RedisServer& server) {
  return RedisStore::open(options_for(server));
}

// Empties the shared server, through a raw connection: the store has no such op (and must not).
bool flush_shared_server() {
  auto c = RedisConnection::connect(RedisAddress{"127.0.0.1", shared_server().port()}, std::chrono::seconds(1),
                                    std::chrono::seconds(5));
  return c.ok() && (*c)->command({"FLUSHALL"}).ok();
}

class RedisHarness final : public contract::StoreHarness {
 public:
  RedisHarness() {
    if (!flush_shared_server()) ADD_FAILURE() << "FLUSHALL failed";
  }
  Result<std::unique_ptr<Store>> open() override {
    auto s = open_on(shared_server());
    if (!s) return s.error();
    return std::unique_ptr<Store>(std::move(s).value());
  }
};

using contract::StoreContractTest;
INSTANTIATE_TEST_SUITE_P(Redis, StoreContractTest,
                         ::testing::Values(contract::StoreHarnessFactory{
                             "redis", [] { return std::make_unique<RedisHarness>(); }}),
                         [](const auto& info) { return std::to_string(info.index); });

TEST(RedisAddress, ParsesUrls) {
  auto a = parse_redis_url("redis://10.0.0.5:7000");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "10.0.0.5");
  EXPECT_EQ(a->port, 7000);
  auto b = parse_redis_url("localhost");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "localhost");
  EXPECT_EQ(b->port, 6379);
  auto c = parse_redis_url("redis://[::1]:6380/");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 6380);
  for (const char* bad : {"", "redis://", "redis://h:0", "redis://h:70000", "redis://h:12x", "redis://user@h:1",
                          "redis://[::1", "redis://[::1]x"})
    EXPECT_FALSE(parse_redis_url(bad).ok()) << bad;
}

// The test support's INFO reader: a field is a whole line's name, its value runs to the
// line's end.
TEST(RedisInfo, FieldIsAWholeLinesName) {
  const std::string info = "# CPU\r\nused_cpu_sys:1.25\r\nused_cpu_sys_children:9.5\r\nused_cpu_user:0.75\r\n";
  EXPECT_EQ(testing::info_field(info, "used_cpu_sys"), 1.25);
  EXPECT_EQ(testing::info_field(info, "used_cpu_user"), 0.75);
  EXPECT_EQ(testing::info_field(info, "cpu_sys_children"), std::nullopt);  // the tail of a name
  EXPECT_EQ(testing::info_field(info, "used_cpu"), std::nullopt);
  EXPECT_EQ(testing::info_field("process_id:4242\r\n", "process_id"), 4242.0);
}

TEST(RedisStore, WrongAddressFailsToOpenWithUnavailable) {
  RedisStoreOptions o;
  o.address = RedisAddress{"127.0.0.1", 1};  // nothing listens on port 1
  auto s = RedisStore::open(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable);
}

// In a fiber on an event loop (how ternd runs its sessions' and sequencing's reads), a store
// read waits for Redis suspended: with redis-server frozen the loop's other work runs, the
// read answers once Redis is back, and one that waits past the command timeout fails with
// `unavailable` while the loop goes on.
TEST(RedisStore, AReadInAFiberWaitsForRedisWithoutHoldingItsLoop) {
  using namespace std::chrono_literals;
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto o = options_for(server);
  o.command_timeout = std::chrono::milliseconds(1000);
  auto s = RedisStore::open(o);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Batch b;
  b.add(AppendMessage{"c1", 1, "m1"});
  ASSERT_TRUE((*s)->commit(b, true).ok());

  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread loop([&] { io.run(); });
  std::promise<void> started, loop_ran_1, loop_ran_2;
  std::promise<Result<Seq>> first;
  std::promise<Error> timed_out;
  std::promise<Result<Seq>> after;
  Fiber fiber(io, [&] {
    started.set_value();
    first.set_value((*s)->head("c1"));  // Redis frozen: connects, then waits for the reply
    Fiber::suspend();                   // until the test froze Redis again and resumed it
    auto r = (*s)->head("c1");          // frozen again, for longer than the timeout
    timed_out.set_value(r.ok() ? Error{} : r.error());
    Fiber::suspend();  // until the test thawed Redis and resumed it
    // A new connection, once the store's pause after the failure (retry_backoff) is over.
    auto again = (*s)->head("c1");
    for (int i = 0; i < 100 && !again.ok(); ++i) {
      Fiber::sleep_for(std::chrono::milliseconds(20));
      again = (*s)->head("c1");
    }
    after.set_value(std::move(again));
  });
  server.freeze();
  boost::asio::post(io, [&] { fiber.resume(); });
  ASSERT_EQ(started.get_future().wait_for(10s), std::future_status::ready);
  boost::asio::post(io, [&] { loop_ran_1.set_value(); });
  ASSERT_EQ(loop_ran_1.get_future().wait_for(10s), std::future_status::ready);  // the read holds no loop
  auto f1 = first.get_future();
  EXPECT_EQ(f1.wait_for(100ms), std::future_status::timeout);  // still waiting for frozen Redis
  server.thaw();
  ASSERT_EQ(f1.wait_for(10s), std::future_status::ready);
  auto r1 = f1.get();
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  EXPECT_EQ(*r1, 1u);

  // The process's Redis client metrics (GET /metrics) count the timed-out connection and the
  // new one.
  Counter& broken = MetricsRegistry::global().counter("tern_redis_connections_broken_total", "");
  Counter& connects = MetricsRegistry::global().counter("tern_redis_connects_total", "");
  const uint64_t broken_before = broken.value(), connects_before = connects.value();
  server.freeze();
  boost::asio::post(io, [&] { fiber.resume(); });
  boost::asio::post(io, [&] { loop_ran_2.set_value(); });
  ASSERT_EQ(loop_ran_2.get_future().wait_for(10s), std::future_status::ready);
  auto f2 = timed_out.get_future();
  ASSERT_EQ(f2.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f2.get().code, ErrorCode::kUnavailable);
  server.thaw();
  boost::asio::post(io, [&] { fiber.resume(); });
  auto f3 = after.get_future();
  ASSERT_EQ(f3.wait_for(10s), std::future_status::ready);
  auto r3 = f3.get();
  ASSERT_TRUE(r3.ok()) << r3.error().message;
  EXPECT_EQ(*r3, 1u);
  EXPECT_GE(broken.value(), broken_before + 1);
  EXPECT_GE(connects.value(), connects_before + 1);
  guard.reset();
  loop.join();
  EXPECT_TRUE(fiber.done());
}

// The fibers of one loop (StoreReads' per loop) read through one connection and route by one
// topology: eight fibers' first reads at once make one connection to the one redis-server and
// one read of its topology (the others wait for it), and each gets its own answer.
TEST(RedisStore, TheFibersOfOneLoopReadThroughOneConnection) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto s = RedisStore::open(options_for(server));
  ASSERT_TRUE(s.ok()) << s.error().message;
  constexpr int kFibers = 8;
  Batch b;
  for (int i = 0; i < kFibers; ++i)
    for (int seq = 1; seq <= i + 1; ++seq) b.add(AppendMessage{"c" + std::to_string(i), static_cast<Seq>(seq), "m"});
  ASSERT_TRUE((*s)->commit(b, true).ok());
  Counter& connects = MetricsRegistry::global().counter("tern_redis_connects_total", "");
  const uint64_t connects_before = connects.value();
  Counter& refreshes = MetricsRegistry::global().counter("tern_redis_topology_refreshes_total", "");
  const uint64_t refreshes_before = refreshes.value();

  boost::asio::io_context io;
  std::vector<std::unique_ptr<Fiber>> fibers;
  std::vector<std::optional<Result<Seq>>> heads(kFibers);
  for (int i = 0; i < kFibers; ++i) {
    fibers.push_back(std::make_unique<Fiber>(io, [&, i] { heads[static_cast<size_t>(i)] = (*s)->head("c" + std::to_string(i)); }));
    boost::asio::post(io, [f = fibers.back().get()] { f->resume(); });
  }
  auto all_done = [&] {
    for (const auto& f : fibers)
      if (!f->done()) return false;
    return true;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!all_done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(5));
  }
  for (auto& f : fibers)  // ended as StoreReads ends its fibers, if the wait above ran out
    for (int i = 0; i < 1000 && !f->done(); ++i) {
      f->cancel();
      f->resume();
    }
  for (int i = 0; i < kFibers; ++i) {
    const auto& h = heads[static_cast<size_t>(i)];
    ASSERT_TRUE(h.has_value()) << i;
    ASSERT_TRUE(h->ok()) << h->error().message;
    EXPECT_EQ(**h, static_cast<Seq>(i + 1));
  }
  EXPECT_EQ(connects.value(), connects_before + 1);
  EXPECT_EQ(refreshes.value(), refreshes_before + 1);
}

// Whatever commit() acknowledged is in the AOF (appendfsync always): a SIGKILLed
// redis-server restarts with it.
TEST(RedisStore, AcknowledgedWritesSurviveRedisSigkill) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  {
    auto s = open_on(server);
    ASSERT_TRUE(s.ok()) << s.error().message;
    Batch b;
    for (Seq seq = 1; seq <= 50; ++seq) b.add(AppendMessage{"c1", seq, "m" + std::to_string(seq)});
    b.add(PutIdempotency{DeviceRef{"alice", 1}, "cm-1", IdempotencyRecord{"c1", 50, 7, 1000}});
    ASSERT_TRUE((*s)->commit(b, true).ok());
  }
  server.kill9();
  ASSERT_TRUE(server.start().ok());
  auto s = open_on(server);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(*(*s)->head("c1"), 50u);
  auto msgs = (*s)->read_messages("c1", 48, 10);
  ASSERT_TRUE(msgs.ok());
  ASSERT_EQ(msgs->size(), 2u);
  EXPECT_EQ((*msgs)[1].frame, "m50");
  auto rec = (*s)->idempotency(DeviceRef{"alice", 1}, "cm-1", 500);
  ASSERT_TRUE(rec.ok());
  ASSERT_TRUE(rec->has_value());
  EXPECT_EQ((*rec)->seq, 50u);
}

// Redis gone: every call fails at once with `unavailable` (no hang, nothing claimed); when it
// is back, the same store object works again without being reopened.
TEST(RedisStore, RedisDownFailsFastThenHeals) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto opened = open_on(server);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  RedisStore& s = **opened;
  Batch first;
  first.add(AppendMessage{"c1", 1, "one"});
  ASSERT_TRUE(s.commit(first, true).ok());

  server.stop();
  Batch second;
  second.add(AppendMessage{"c1", 2, "two"});
  for (int i = 0; i < 3; ++i) {  // the broken connection, then refused connects, then the back-off
    const auto t0 = std::chrono::steady_clock::now();
    auto r = s.commit(second, true);
    const auto took = std::chrono::steady_clock::now() - t0;
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable) << r.error().message;
    EXPECT_LT(took, std::chrono::milliseconds(500));
    auto h = s.head("c1");
    ASSERT_FALSE(h.ok());
    EXPECT_EQ(h.error().code, ErrorCode::kUnavailable);
  }

  ASSERT_TRUE(server.start().ok());
  // The back-off after a failed connect is 100 ms: retry for at most 5 s.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  Result<void> r = make_error(ErrorCode::kUnavailable, "not tried");
  while (!r.ok() && std::chrono::steady_clock::now() < deadline) {
    r = s.commit(second, true);
    if (!r.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*s.head("c1"), 2u);
  auto msgs = s.read_messages("c1", 0, 10);
  ASSERT_TRUE(msgs.ok());
  ASSERT_EQ(msgs->size(), 2u);
  EXPECT_EQ((*msgs)[0].frame, "one");
}

TEST(RedisStore, NulInAnIdRefusesTheWholeBatch) {
  auto s = open_on(shared_server());
  ASSERT_TRUE(s.ok()) << s.error().message;
  Batch b;
  b.add(AppendMessage{"ok-conv", 1, "x"});
  b.add(AppendMessage{std::string("bad\0conv", 8), 1, "y"});
  auto r = (*s)->commit(b, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(*(*s)->head("ok-conv"), 0u);
}

// With --redis-wait-replicas and no replica, a commit is applied but not acknowledged.
TEST(RedisStore, WaitForMissingReplicasFailsTheCommit) {
  auto o = options_for(shared_server());
  o.wait_replicas = 1;
  o.command_timeout = std::chrono::milliseconds(200);
  auto s = RedisStore::open(o);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Batch b;
  b.add(SetLastSeen{"waiter", 5});
  auto r = (*s)->commit(b, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
}

// Dense appends (ternd): an append that is not the conversation's next seq writes nothing,
// not even the batch's other ops, and fails with `unavailable` (the node reloads its head).
TEST(RedisStore, DenseAppendsRefuseAGapOrARewriteAndWriteNothing) {
  ASSERT_TRUE(flush_shared_server());
  auto o = options_for(shared_server());
  o.dense_appends = true;
  auto s = RedisStore::open(o);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Batch ok;
  ok.add(AppendMessage{"c1", 1, "a"});
  ok.add(AppendMessage{"c1", 2, "b"});
  ok.add(AppendMessage{"c2", 1, "x"});
  ASSERT_TRUE((*s)->commit(ok, true).ok());
  for (Seq bad : {Seq{2}, Seq{4}}) {  // a rewrite of seq 2 (another node's head was behind), a gap
    Batch b;
    b.add(SetCursor{DeviceRef{"alice", 1}, "c2", 1});
    b.add(AppendMessage{"c2", 2, "y"});
    b.add(AppendMessage{"c1", bad, "stale"});
    auto r = (*s)->commit(b, true);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
    EXPECT_EQ(*(*s)->head("c1"), 2u);
    EXPECT_EQ(*(*s)->head("c2"), 1u);
    EXPECT_EQ(*(*s)->cursor(DeviceRef{"alice", 1}, "c2"), 0u);
  }
  auto msgs = (*s)->read_messages("c1", 0, 10);
  ASSERT_TRUE(msgs.ok());
  ASSERT_EQ(msgs->size(), 2u);
  EXPECT_EQ((*msgs)[1].frame, "b");
}

// Two nodes (stores) append to one conversation: the commit whose append is behind names that
// conversation in behind() (and only it), writes nothing on one redis-server (the caller
// commits the rest again), and the head is the other node's.
TEST(RedisStore, ADenseAppendBehindNamesItsConversationAndWritesNothing) {
  ASSERT_TRUE(flush_shared_server());
  auto nodes = testing::two_nodes_after_first_appends(options_for(shared_server()));
  ASSERT_TRUE(nodes.ok()) << nodes.error().message;
  EXPECT_TRUE(nodes->a->behind().conversations.empty());
  std::unique_ptr<RedisStore>* b = &nodes->b;
  Batch late;  // node b still thinks c1 and c3 are empty; c2 it knows
  late.add(AppendMessage{"c1", 1, "b1"});
  late.add(AppendMessage{"c1", 2, "b1'"});
  late.add(AppendMessage{"c2", 2, "b2"});
  late.add(PutIdempotency{DeviceRef{"bob", 1}, "m2", IdempotencyRecord{"c2", 2, 7, 1'000'000'000}});
  late.add(AppendMessage{"c3", 5, "gap"});
  auto r = (*b)->commit(late, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  const Store::Behind behind = (*b)->behind();
  EXPECT_EQ(behind.conversations, (std::vector<std::string>{"c1", "c3"}));
  EXPECT_FALSE(behind.rest_applied);
  EXPECT_EQ(*(*b)->head("c1"), 1u);
  EXPECT_EQ(*(*b)->head("c2"), 1u);
  EXPECT_FALSE((*(*b)->idempotency(DeviceRef{"bob", 1}, "m2", 0)).has_value());
  EXPECT_EQ((*(*b)->read_messages("c1", 0, 10))[0].frame, "a1");
  // The next commit clears it.
  Batch next;
  next.add(AppendMessage{"c1", 2, "b1"});
  ASSERT_TRUE((*b)->commit(next, true).ok());
  EXPECT_TRUE((*b)->behind().conversations.empty());
}

// A send whose client_msg_id already has a record (its first attempt committed, e.g. through
// another node) is refused by the commit itself on one redis-server with dense appends: nothing
// of the batch is written, its conversation is named in behind() without a seq reservation
// (the other node appends next at once), and an expired record refuses nothing.
TEST(RedisStore, ACommitRefusesAClientMsgIdThatHasARecord) {
  ASSERT_TRUE(flush_shared_server());
  auto nodes = testing::two_nodes_after_first_appends(options_for(shared_server()));
  ASSERT_TRUE(nodes.ok()) << nodes.error().message;
  EXPECT_TRUE(nodes->a->commit_checks_idempotency());
  auto plain = RedisStore::open(options_for(shared_server()));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE((*plain)->commit_checks_idempotency());  // the contract suite's: no dense appends

  const DeviceRef bob{"bob", 1};
  const int64_t later = now_ms() + 3'600'000;
  Batch first;  // node a: bob's m1 gets c1 seq 2
  first.add(AppendMessage{"c1", 2, "m1"});
  first.add(PutIdempotency{bob, "m1", IdempotencyRecord{"c1", 2, 7, later}});
  ASSERT_TRUE(nodes->a->commit(first, true).ok());

  Batch again;  // node b: the same m1 again (b's head of c1 is right), plus a send into c2
  again.add(AppendMessage{"c2", 2, "other"});
  again.add(PutIdempotency{bob, "m2", IdempotencyRecord{"c2", 2, 8, later}});
  again.add(AppendMessage{"c1", 3, "m1 again"});
  again.add(PutIdempotency{bob, "m1", IdempotencyRecord{"c1", 3, 9, later}});
  again.add(InboxMark{DeviceRef{"alice", 1}, "c1", 3});
  auto r = nodes->b->commit(again, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  const Store::Behind behind = nodes->b->behind();
  EXPECT_EQ(behind.conversations, (std::vector<std::string>{"c1"}));
  EXPECT_FALSE(behind.rest_applied);
  EXPECT_EQ(*nodes->b->head("c1"), 2u);
  EXPECT_EQ(*nodes->b->head("c2"), 1u);  // nothing of the batch was written
  EXPECT_FALSE((*nodes->b->idempotency(bob, "m2", now_ms())).has_value());
  EXPECT_TRUE((*nodes->b->inbox(DeviceRef{"alice", 1})).empty());
  auto rec = nodes->b->idempotency(bob, "m1", now_ms());
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->seq, 2u);  // the first answer stays
  EXPECT_EQ((*nodes->b->read_messages("c1", 0, 10)).size(), 2u);

  // No reservation was taken for b: node a appends c1 seq 3 at once.
  Batch next;
  next.add(AppendMessage{"c1", 3, "a3"});
  ASSERT_TRUE(nodes->a->commit(next, true).ok());

  // A record that has expired (not yet purged) is no duplicate.
  ASSERT_TRUE(testing::resend_after_expiry(*nodes->b, 2, now_ms(), later).ok());
  EXPECT_EQ((*nodes->b->idempotency(bob, "m3", now_ms()))->seq, 3u);
  // ... and its expiry-index entry carries the new expiry: a purge now keeps it.
  ASSERT_TRUE(nodes->b->purge_expired(now_ms()).ok());
  auto kept = nodes->b->idempotency(bob, "m3", now_ms());
  ASSERT_TRUE(kept.ok() && kept->has_value());
  EXPECT_EQ((*kept)->seq, 3u);
}

namespace {
// Runs `command` on the shared server through a raw connection; whether it answered.
bool on_shared_server(std::vector<std::string_view> command) {
  auto c = RedisConnection::connect(RedisAddress{"127.0.0.1", shared_server().port()}, std::chrono::seconds(1),
                                    std::chrono::seconds(5));
  return c.ok() && (*c)->command(command).ok();
}
}  // namespace

// The idempotency check of a send (one redis-server, dense appends) writes the record's
// expiry-index entry itself; a commit refused afterwards (a conversation behind, a device
// that exists, a prekey taken) must remove it again: the purge then finds only the entries of
// records that were written.
TEST(RedisStore, ARefusedCommitLeavesNoIdempotencyIndexEntry) {
  ASSERT_TRUE(flush_shared_server());
  auto nodes = testing::two_nodes_after_first_appends(options_for(shared_server()));
  ASSERT_TRUE(nodes.ok()) << nodes.error().message;
  const DeviceRef bob{"bob", 1};
  const int64_t later = now_ms() + 3'600'000;
  Batch dev;
  dev.add(PutDevice{bob, "tok", true});
  ASSERT_TRUE(nodes->a->commit(dev, true).ok());

  Batch behind;  // c2's send is fine, c1's is behind: nothing is written
  behind.add(AppendMessage{"c2", 2, "x"});
  behind.add(PutIdempotency{bob, "m1", IdempotencyRecord{"c2", 2, 7, later}});
  behind.add(AppendMessage{"c1", 1, "y"});
  behind.add(PutIdempotency{bob, "m2", IdempotencyRecord{"c1", 1, 7, later}});
  auto r = nodes->b->commit(behind, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);

  Batch exists;  // a send, then a device that must be new but is not
  exists.add(AppendMessage{"c2", 2, "x"});
  exists.add(PutIdempotency{bob, "m3", IdempotencyRecord{"c2", 2, 7, later}});
  exists.add(PutDevice{bob, "tok2", true});
  r = nodes->b->commit(exists, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kExists);

  Batch take;  // a send, then a take of a one-time prekey that is not there
  take.add(AppendMessage{"c2", 2, "x"});
  take.add(PutIdempotency{bob, "m4", IdempotencyRecord{"c2", 2, 7, later}});
  take.add(DeleteOneTimePrekey{bob, 5, true});
  r = nodes->b->commit(take, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);

  for (const char* m : {"m1", "m2", "m3", "m4"}) EXPECT_FALSE((*nodes->b->idempotency(bob, m, 0)).has_value()) << m;
  Batch ok;
  ok.add(AppendMessage{"c2", 2, "x"});
  ok.add(PutIdempotency{bob, "m5", IdempotencyRecord{"c2", 2, 7, later}});
  ASSERT_TRUE(nodes->b->commit(ok, true).ok());
  auto purged = nodes->b->purge_expired(later + 1);
  ASSERT_TRUE(purged.ok());
  EXPECT_EQ(*purged, 1u);  // m5's entry only
  EXPECT_FALSE((*nodes->b->idempotency(bob, "m5", 0)).has_value());
}

// A send's commit on one redis-server (dense appends, idempotency checked in the script) costs
// Redis per message: the head read, the log and frame writes, the idempotency record and its
// index entry (whose ZADD NX is the check: no ZSCORE), the inbox mark; and, while no
// conversation holds a seq reservation, one EXISTS per script instead of a GET per conversation.
TEST(RedisStore, ASendsCommitMakesNoRedundantRedisCalls) {
  ASSERT_TRUE(flush_shared_server());
  auto nodes = testing::two_nodes_after_first_appends(options_for(shared_server()));
  ASSERT_TRUE(nodes.ok()) << nodes.error().message;
  const uint16_t port = shared_server().port();
  ASSERT_TRUE(on_shared_server({"CONFIG", "RESETSTAT"}));
  Batch sends;  // two sends, as a group commit carries them
  for (const auto& [conv, cmid] : {std::pair{"c1", "m1"}, std::pair{"c2", "m2"}}) {
    sends.add(AppendMessage{conv, 2, "frame"});
    sends.add(PutIdempotency{DeviceRef{"alice", 1}, cmid, IdempotencyRecord{conv, 2, 7, now_ms() + 60'000}});
    sends.add(InboxMark{DeviceRef{"bob", 1}, conv, 2});
  }
  ASSERT_TRUE(nodes->a->commit(sends, true).ok());
  EXPECT_EQ(testing::command_calls(port, "evalsha"), 1);
  EXPECT_EQ(testing::command_calls(port, "zrange"), 2);   // each conversation's head
  EXPECT_EQ(testing::command_calls(port, "exists"), 1);   // is any seq reserved?
  EXPECT_EQ(testing::command_calls(port, "get"), 0);
  EXPECT_EQ(testing::command_calls(port, "zscore"), 0);
  EXPECT_EQ(testing::command_calls(port, "zadd"), 4);     // log, idempotency index
  EXPECT_EQ(testing::command_calls(port, "hset"), 6);     // frame, idempotency record, inbox mark
  EXPECT_EQ(*nodes->a->head("c2"), 2u);
  EXPECT_EQ((*nodes->a->idempotency(DeviceRef{"alice", 1}, "m2", now_ms()))->seq, 2u);
}

// A node whose append was behind reserves the conversation's next seq: another node's append
// of that seq is behind too until the reserving node's append lands (or the reservation
// lapses, 250 ms), also on one redis-server where appends read reservations only while one
// may exist.
TEST(RedisStore, AReservedSeqHoldsOffOtherNodesUntilItsAppendLands) {
  ASSERT_TRUE(flush_shared_server());
  auto nodes = testing::two_nodes_after_first_appends(options_for(shared_server()));
  ASSERT_TRUE(nodes.ok()) << nodes.error().message;
  Batch stale;  // b thinks c1 is empty: behind, and c1's seq 2 is reserved for b
  stale.add(AppendMessage{"c1", 1, "b1"});
  ASSERT_FALSE(nodes->b->commit(stale, true).ok());
  Batch a2;
  a2.add(AppendMessage{"c1", 2, "a2"});
  ASSERT_FALSE(nodes->a->commit(a2, true).ok());
  EXPECT_EQ(nodes->a->behind().conversations, (std::vector<std::string>{"c1"}));
  Batch other;  // another conversation is not held up
  other.add(AppendMessage{"c2", 2, "a2"});
  ASSERT_TRUE(nodes->a->commit(other, true).ok());
  Batch b2;
  b2.add(AppendMessage{"c1", 2, "b2"});
  ASSERT_TRUE(nodes->b->commit(b2, true).ok());
  Batch a3;  // b's append released the reservation
  a3.add(AppendMessage{"c1", 3, "a3"});
  ASSERT_TRUE(nodes->a->commit(a3, true).ok());
  EXPECT_EQ((*nodes->a->read_messages("c1", 0, 10))[1].frame, "b2");

  // A reservation whose node never appends lapses.
  Batch stale2;
  stale2.add(AppendMessage{"c1", 3, "b3"});
  ASSERT_FALSE(nodes->b->commit(stale2, true).ok());
  Batch a4;
  a4.add(AppendMessage{"c1", 4, "a4"});
  ASSERT_FALSE(nodes->a->commit(a4, true).ok());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool landed = false;
  while (!landed && std::chrono::steady_clock::now() < deadline) {
    landed = nodes->a->commit(a4, true).ok();
    if (!landed) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(landed);
  EXPECT_EQ(*nodes->a->head("c1"), 4u);
}

// A one-time prekey handed out by a bundle (a take) goes to one requester even when several
// nodes (stores) take at once: the commit script refuses a take of a key that is gone, with
// `unavailable`, writing nothing of that batch.
TEST(RedisStore, AOneTimePrekeyIsTakenOnceAcrossStores) {
  ASSERT_TRUE(flush_shared_server());
  auto a = open_on(shared_server());
  auto b = open_on(shared_server());
  ASSERT_TRUE(a.ok() && b.ok());
  const DeviceRef bob{"bob", 1};
  Batch keys;
  for (uint32_t id = 1; id <= 3; ++id) keys.add(PutOneTimePrekey{bob, {id, "k" + std::to_string(id)}});
  ASSERT_TRUE((*a)->commit(keys, true).ok());

  Batch take_a;
  take_a.add(DeleteOneTimePrekey{bob, 1, /*take=*/true});
  ASSERT_TRUE((*a)->commit(take_a, true).ok());
  Batch take_b;  // node b read key 1 before a's take committed
  take_b.add(SetLastSeen{"carol", 9});
  take_b.add(DeleteOneTimePrekey{bob, 1, /*take=*/true});
  auto r = (*b)->commit(take_b, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable) << r.error().message;
  EXPECT_EQ(*(*b)->last_seen("carol"), 0) << "nothing of the refused batch is written";
  Batch twice;  // the same key twice in one batch: the second take fails it
  twice.add(DeleteOneTimePrekey{bob, 2, true});
  twice.add(DeleteOneTimePrekey{bob, 2, true});
  EXPECT_FALSE((*b)->commit(twice, true).ok());
  Batch blind;  // a plain delete of an absent key stays blind
  blind.add(DeleteOneTimePrekey{bob, 1});
  EXPECT_TRUE((*b)->commit(blind, true).ok());
  auto left = (*a)->one_time_prekeys(bob, 10);
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(*left, (std::vector<OneTimePrekey>{{2, "k2"}, {3, "k3"}}));
}

// Four threads on two stores race to take the lowest key they read, 200 keys in all: every
// key is handed out exactly once, and a lost race is an `unavailable` the taker retries.
TEST(RedisStore, ConcurrentTakesFromTwoStoresHandOutEveryKeyOnce) {
  ASSERT_TRUE(flush_shared_server());
  auto a = open_on(shared_server());
  auto b = open_on(shared_server());
  ASSERT_TRUE(a.ok() && b.ok());
  const DeviceRef bob{"bob", 1};
  constexpr uint32_t kKeys = 200;
  Batch keys;
  for (uint32_t id = 1; id <= kKeys; ++id) keys.add(PutOneTimePrekey{bob, {id, "k"}});
  ASSERT_TRUE((*a)->commit(keys, true).ok());
  std::mutex mu;
  std::vector<uint32_t> handed;
  std::atomic<int> conflicts{0}, errors{0};
  auto taker = [&](RedisStore& s) {
    for (int tries = 0; tries < 2000; ++tries) {
      auto list = s.one_time_prekeys(bob, 1);
      if (!list.ok()) {
        ++errors;
        return;
      }
      if (list->empty()) return;
      const uint32_t id = (*list)[0].id;
      Batch t;
      t.add(DeleteOneTimePrekey{bob, id, true});
      auto r = s.commit(t, true);
      if (r.ok()) {
        std::lock_guard lock(mu);
        handed.push_back(id);
      } else if (r.error().code == ErrorCode::kUnavailable) {
        ++conflicts;
      } else {
        ++errors;
        return;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(taker, std::ref(i % 2 ? **a : **b));
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  ASSERT_EQ(handed.size(), kKeys) << "conflicts: " << conflicts.load();
  EXPECT_EQ(std::set<uint32_t>(handed.begin(), handed.end()).size(), size_t{kKeys}) << "a key went out twice";
  EXPECT_TRUE((*a)->one_time_prekeys(bob, 10)->empty());
}

bool dir_holds(const std::string& dir, const std::string& needle) {
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.find(needle) != std::string::npos) return true;
  }
  return false;
}

// Disappearing messages: erase_expired overwrites the frame in Redis at once and asks for an
// AOF rewrite, after which no file in Redis's directory holds the old bytes.
TEST(RedisStore, ErasedBytesLeaveTheAofAfterTheRewrite) {
  testing::RedisServer server;
  ASSERT_TRUE(server.start().ok());
  auto s = open_on(server);
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::string canary = "Q2FuYXJ5Qnl0ZXNPZlRoZU1lc3NhZ2U";  // base64 body, unique in the data
  const std::string frame = R"({"type":"message","conversation_id":"c1","seq":1,"sender":"alice","sender_device":1,)"
                            R"("ts":1,"body":")" + canary + R"(","expires_at":5000})";
  Batch b;
  b.add(AppendMessage{"c1", 1, frame, 5000, {}});
  ASSERT_TRUE((*s)->commit(b, true).ok());
  ASSERT_TRUE(dir_holds(server.dir(), canary)) << "the AOF holds the appended frame";
  auto due = (*s)->expiring_messages(5000, 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 1u);
  ASSERT_TRUE((*s)->erase_expired(*due).ok());
  auto msgs = (*s)->read_messages("c1", 0, 10);
  ASSERT_TRUE(msgs.ok());
  ASSERT_EQ(msgs->size(), 1u);
  EXPECT_EQ((*msgs)[0].frame.find(canary), std::string::npos);
  // The rewrite runs in a child process and the old AOF files are deleted after it: await it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool gone = false;
  while (!gone && std::chrono::steady_clock::now() < deadline) {
    gone = !dir_holds(server.dir(), canary);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(gone) << "the canary is still in " << server.dir() << " 20 s after the rewrite was asked for";
  server.kill9();  // what is on disk now is what a restart sees: the tombstone
  ASSERT_TRUE(server.start().ok());
  auto again = open_on(server);
  ASSERT_TRUE(again.ok());
  auto after = (*again)->read_messages("c1", 0, 10);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 1u);
  EXPECT_NE(after->front().frame.find(R"("expired":true)"), std::string::npos);
}

// One expiring message appended and erased (the erase asks for the AOF rewrites).
void erase_one_expired_message(RedisStore& s) {
  Batch b;
  b.add(AppendMessage{"c1", 1, R"({"type":"message","seq":1,"body":"eA==","expires_at":5000})", 5000, {}});
  ASSERT_TRUE(s.commit(b, true).ok());
  auto due = s.expiring_messages(5000, 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 1u);
  auto erased = s.erase_expired(*due);
  ASSERT_TRUE(erased.ok()) << erased.error().message;
}

// What RedisCluster::on_every_node reaches from the plain redis-server on `port`.
Result<RedisCluster::EveryNode> every_node_from(uint16_t port) {
  auto c = RedisCluster::open({.seeds = {RedisAddress{"127.0.0.1", port}}, .command_timeout = std::chrono::milliseconds(300)});
  if (!c) return c.error();
  return (*c)->on_every_node({"PING"});
}

// For a master: a replica's first sync starts at once (not after the default 5 s wait for
// more replicas to share it).
const std::vector<std::string> kNoSyncDelay = {"--repl-diskless-sync-delay", "0"};

// A replica of `master` (`replicaof`, its own AOF), started, linked, and done with the AOF
// rewrite that follows its first sync (until then it refuses to shut down: "Writing initial
// AOF, can't exit").
std::unique_ptr<testing::RedisServer> linked_replica_of(const testing::RedisServer& master) {
  auto replica = std::make_unique<testing::RedisServer>(
      std::vector<std::string>{"--replicaof", "127.0.0.1", std::to_string(master.port())});
  auto started = replica->start();
  EXPECT_TRUE(started.ok()) << started.error().message;
  EXPECT_TRUE(testing::await_replica_linked(replica->port())) << "the replica did not link to its master";
  EXPECT_GE(testing::aof_rewrites_when_idle(replica->port()), 0);
  return replica;
}

// A plain redis-server with one replica, linked, neither rewriting its AOF; master_before_:
// the server's aof_rewrites then.
class RedisStoreWithAReplica : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(master_.start().ok());
    replica_ = linked_replica_of(master_);
    ASSERT_FALSE(HasFailure());
    master_before_ = testing::aof_rewrites_when_idle(master_.port());
    ASSERT_GE(master_before_, 0);
  }

  testing::RedisServer master_{kNoSyncDelay};
  std::unique_ptr<testing::RedisServer> replica_;  // stopped before master_ (declared after it)
  int master_before_ = -1;
};

// Disappearing messages on a plain redis-server with a replica: the replica appended its copy
// of the frame to its own AOF, so the erase's rewrite reaches it too (INFO replication).
TEST_F(RedisStoreWithAReplica, AnEraseAsksTheServerAndTheReplicaToRewriteTheirAofs) {
  const int replica_before = testing::aof_rewrites_when_idle(replica_->port());
  ASSERT_GE(replica_before, 0);
  auto s = open_on(master_);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_NO_FATAL_FAILURE(erase_one_expired_message(**s));
  EXPECT_TRUE(testing::await_aof_rewrites_above(master_.port(), master_before_)) << "the server did not rewrite";
  EXPECT_TRUE(testing::await_aof_rewrites_above(replica_->port(), replica_before)) << "the replica did not rewrite";
  auto every = every_node_from(master_.port());
  ASSERT_TRUE(every.ok()) << every.error().message;
  EXPECT_EQ(every->masters, 1u);
  EXPECT_EQ(every->replicas, 1u);
  EXPECT_TRUE(every->unreachable.empty()) << every->unreachable.front();
}

// A replica that is down does not fail the erase (that succeeded): the server still rewrites.
TEST_F(RedisStoreWithAReplica, AnEraseWithTheReplicaDownSucceedsAndTheServerRewrites) {
  const uint16_t down = replica_->port();
  replica_->kill9();
  auto s = open_on(master_);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_NO_FATAL_FAILURE(erase_one_expired_message(**s));
  EXPECT_TRUE(testing::await_aof_rewrites_above(master_.port(), master_before_)) << "the server did not rewrite";
  auto every = every_node_from(master_.port());
  ASSERT_TRUE(every.ok()) << every.error().message;
  EXPECT_EQ(every->masters, 1u);
  EXPECT_EQ(every->replicas, 0u);
  // The server lists the replica until it has seen the link close: until then, unreachable.
  for (const std::string& u : every->unreachable)
    EXPECT_NE(u.find(":" + std::to_string(down) + ":"), std::string::npos) << u;
}

// A replica that hangs (the server still lists it, it answers nothing) is reported
// unreachable after the command timeout; the erase succeeds and the server rewrites.
TEST_F(RedisStoreWithAReplica, AHungReplicaIsReportedUnreachableAndTheServerStillRewrites) {
  replica_->freeze();
  RedisStoreOptions o = options_for(master_);
  o.command_timeout = std::chrono::milliseconds(1000);
  auto s = RedisStore::open(o);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_NO_FATAL_FAILURE(erase_one_expired_message(**s));
  EXPECT_TRUE(testing::await_aof_rewrites_above(master_.port(), master_before_)) << "the server did not rewrite";
  auto every = every_node_from(master_.port());
  replica_->thaw();
  ASSERT_TRUE(every.ok()) << every.error().message;
  EXPECT_EQ(every->masters, 1u);
  EXPECT_EQ(every->replicas, 0u);
  ASSERT_EQ(every->unreachable.size(), 1u);
  EXPECT_NE(every->unreachable[0].find(":" + std::to_string(replica_->port()) + ":"), std::string::npos)
      << every->unreachable[0];
}

}  // namespace
}  // namespace tern::store::redis

namespace tern::store::redis {
namespace {

TEST(ReconnectBackoff, DoublesFromTheFirstDelayUpToTheCapAndStartsOverAfterASuccess) {
  using std::chrono::milliseconds;
  ReconnectBackoff b(milliseconds(100), milliseconds(1000));
  std::vector<int64_t> got;
  for (int i = 0; i < 6; ++i) got.push_back(b.next().count());
  EXPECT_EQ(got, (std::vector<int64_t>{100, 200, 400, 800, 1000, 1000}));
  b.reset();
  EXPECT_EQ(b.next().count(), 100);
  ReconnectBackoff capped_below(milliseconds(300), milliseconds(100));  // a cap under the first delay
  EXPECT_EQ(capped_below.next().count(), 300);
  EXPECT_EQ(capped_below.next().count(), 300);
}

}  // namespace
}  // namespace tern::store::redis
