// RedisConnection shared by the fibers of one loop (LoopConnections), on a real redis-server,
// the loop driven by the test thread: requests pipelined on one socket, each fiber given its
// own replies, the reading handed from fiber to fiber, and failures (a hung Redis, a
// cancelled fiber) that end every request out without mixing up the replies of the rest.
#include "store/redis/redis_connection.h"

#include <hiredis/hiredis.h>

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/fiber.h"
#include "base/metrics.h"
#include "store/redis/testing/redis_server.h"
#include "store/redis/testing/run_until.h"

namespace tern::store::redis {
namespace {

using namespace std::chrono_literals;

using testing::run_until;

std::string text(const Reply& r) { return r && r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : "?"; }

class SharedConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.start()); }
  void TearDown() override {
    // A fiber still suspended (a failed assertion) is ended as StoreReads ends its fibers.
    for (auto& f : fibers_) {
      f->cancel();
      for (int i = 0; i < 1000 && !f->done(); ++i) f->resume();
    }
  }
  RedisAddress address() const { return RedisAddress{"127.0.0.1", server_.port()}; }
  // A fiber on the test's loop, started at the loop's next turn.
  Fiber& spawn(std::function<void()> body) {
    fibers_.push_back(std::make_unique<Fiber>(io_, std::move(body)));
    Fiber* f = fibers_.back().get();
    boost::asio::post(io_, [f] { f->resume(); });
    return *f;
  }
  // The loop's connection, made in a fiber (as the store's fibers make theirs).
  std::shared_ptr<RedisConnection> connected(std::chrono::milliseconds command_timeout) {
    std::shared_ptr<RedisConnection> conn;
    spawn([&] {
      auto c = pool_.get(address(), 1000ms, command_timeout, {});
      if (c) conn = *c;
    });
    EXPECT_TRUE(run_until(io_, [&] { return all_done(); }));
    return conn;
  }
  bool all_done() const {
    for (const auto& f : fibers_)
      if (!f->done()) return false;
    return true;
  }

  testing::RedisServer server_;
  boost::asio::io_context io_;
  LoopConnections pool_;
  std::vector<std::unique_ptr<Fiber>> fibers_;
};

// Twenty fibers of one loop, each with requests of one to four commands, forty rounds: they
// all use the one connection, the requests of the fibers started in one turn are all out on
// it at once, and every fiber gets exactly its own replies in order.
TEST_F(SharedConnectionTest, FibersOfOneLoopPipelineOnOneConnectionAndEachGetsItsOwnReplies) {
  Counter& connects = MetricsRegistry::global().counter("tern_redis_connects_total", "");
  const uint64_t connects_before = connects.value();
  std::shared_ptr<RedisConnection> seen = connected(2000ms);  // the connection every fiber must get
  ASSERT_TRUE(seen);
  constexpr int kFibers = 20, kRounds = 40;
  size_t most_out = 0;
  int wrong = 0, failed = 0, answered = 0;
  for (int f = 0; f < kFibers; ++f) {
    spawn([&, f] {
      for (int round = 0; round < kRounds; ++round) {
        auto c = pool_.get(address(), 1000ms, 2000ms, {});
        if (!c) {
          ++failed;
          continue;
        }
        if (seen != *c) ++wrong;  // another connection than the others'
        const int n = 1 + (f + round) % 4;
        std::vector<std::string> words;
        for (int i = 0; i < n; ++i) words.push_back("f" + std::to_string(f) + "r" + std::to_string(round) + "i" + std::to_string(i));
        std::vector<std::vector<std::string_view>> commands;
        for (const auto& w : words) commands.push_back({"ECHO", w});
        auto ticket = (*c)->send(commands);
        most_out = std::max(most_out, (*c)->in_flight());
        auto replies = (*c)->receive(ticket);
        if (!replies || replies->size() != words.size()) {
          ++failed;
          continue;
        }
        for (size_t i = 0; i < words.size(); ++i)
          if (text((*replies)[i]) != words[i]) ++wrong;
        ++answered;
      }
    });
  }
  ASSERT_TRUE(run_until(io_, [&] { return all_done(); }));
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(answered, kFibers * kRounds);
  EXPECT_EQ(connects.value(), connects_before + 1);
  // The fibers started in one turn (their resumes queued before the loop polled the socket):
  // all of their first requests were out together.
  EXPECT_EQ(most_out, static_cast<size_t>(kFibers));
  EXPECT_EQ(pool_.size(), 1u);
}

// The driver's request is answered while another fiber's is not (WAIT holds the reply back
// in Redis): the driver leaves and hands the reading to the waiting fiber, which gets its
// reply. Without the hand-over that fiber would wait forever.
TEST_F(SharedConnectionTest, TheDriverHandsTheReadingToAFiberStillWaiting) {
  Counter& connects = MetricsRegistry::global().counter("tern_redis_connects_total", "");
  const uint64_t connects_before = connects.value();
  std::optional<std::string> first;
  std::optional<long long> second;
  std::shared_ptr<RedisConnection> conn;
  spawn([&] {
    auto c = pool_.get(address(), 1000ms, 5000ms, {});
    if (!c) return;
    conn = *c;
    auto r = conn->pipeline({{"ECHO", "first"}});  // sent first: this fiber drives
    if (r) first = text(r->front());
  });
  spawn([&] {
    auto c = pool_.get(address(), 1000ms, 5000ms, {});  // waits for the first fiber's connect
    if (!c) return;
    // No replicas: Redis answers 0 after 300 ms, and the first fiber's reply is out before.
    auto r = (*c)->pipeline({{"WAIT", "1", "300"}});
    if (r && r->front()->type == REDIS_REPLY_INTEGER) second = r->front()->integer;
  });
  ASSERT_TRUE(run_until(io_, [&] { return all_done(); }));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, "first");
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(*second, 0);
  EXPECT_TRUE(conn->healthy());
  EXPECT_EQ(conn->in_flight(), 0u);
  EXPECT_EQ(connects.value(), connects_before + 1);  // the second fiber waited for the first's connect
}

// Redis hangs: every request out fails with `unavailable` after the command timeout (the
// oldest one's), the loop runs other work meanwhile, and once Redis is back the next get()
// connects again.
TEST_F(SharedConnectionTest, AHungRedisFailsEveryRequestOutAndTheLoopGoesOn) {
  Counter& broken = MetricsRegistry::global().counter("tern_redis_connections_broken_total", "");
  std::shared_ptr<RedisConnection> conn = connected(300ms);
  ASSERT_TRUE(conn);
  const uint64_t broken_before = broken.value();
  server_.freeze();
  constexpr int kFibers = 5;
  std::vector<std::optional<Error>> errors(kFibers);
  for (int f = 0; f < kFibers; ++f)
    spawn([&, f] {
      auto r = conn->pipeline({{"PING"}});
      errors[static_cast<size_t>(f)] = r ? Error{ErrorCode::kOk, "answered", {}} : r.error();
    });
  bool loop_ran = false;
  boost::asio::post(io_, [&] { loop_ran = true; });
  const bool ended = run_until(io_, [&] { return all_done(); });
  server_.thaw();
  ASSERT_TRUE(ended);
  EXPECT_TRUE(loop_ran);
  for (const auto& e : errors) {
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->code, ErrorCode::kUnavailable) << e->message;
  }
  EXPECT_FALSE(conn->healthy());
  EXPECT_EQ(broken.value(), broken_before + 1);  // one connection broke, once
  // Back: a new connection, made now.
  bool made = false;
  std::optional<std::string> pong;
  spawn([&] {
    auto c = pool_.get(address(), 1000ms, 1000ms, {}, &made);
    if (!c) return;
    auto r = (*c)->pipeline({{"ECHO", "back"}});
    if (r) pong = text(r->front());
  });
  ASSERT_TRUE(run_until(io_, [&] { return all_done(); }));
  EXPECT_TRUE(made);
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(*pong, "back");
}

// A fiber that waits for its reply is ended by its owner (cancelled and resumed, as
// StoreReads ends its fibers): it fails at once; its request stays out, and when Redis
// answers, its reply is thrown away, not handed to the requests after it.
TEST_F(SharedConnectionTest, ACancelledWaiterFailsAndItsReplyGoesToNobodyElse) {
  std::shared_ptr<RedisConnection> conn = connected(5000ms);
  ASSERT_TRUE(conn);
  server_.freeze();
  std::optional<std::string> a, c_reply;
  std::optional<Error> b_error;
  spawn([&] {
    auto r = conn->pipeline({{"ECHO", "a"}});  // drives
    if (r) a = text(r->front());
  });
  Fiber& b = spawn([&] {
    auto r = conn->pipeline({{"ECHO", "b"}});  // waits for the driver
    b_error = r ? Error{ErrorCode::kOk, "answered", {}} : r.error();
  });
  ASSERT_TRUE(run_until(io_, [&] { return conn->in_flight() == 2; }));
  boost::asio::post(io_, [&] {
    b.cancel();
    b.resume();
  });
  ASSERT_TRUE(run_until(io_, [&] { return b.done(); }));
  ASSERT_TRUE(b_error.has_value());
  EXPECT_EQ(b_error->code, ErrorCode::kUnavailable);
  EXPECT_EQ(conn->in_flight(), 2u);  // b's request is still out
  server_.thaw();
  spawn([&] {
    auto r = conn->pipeline({{"ECHO", "c"}});
    if (r) c_reply = text(r->front());
  });
  ASSERT_TRUE(run_until(io_, [&] { return all_done(); }));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, "a");
  ASSERT_TRUE(c_reply.has_value());
  EXPECT_EQ(*c_reply, "c");
  EXPECT_TRUE(conn->healthy());
  EXPECT_EQ(conn->in_flight(), 0u);
}

// In a fiber, send() only buffers: the requests of the loop's turn go out in one write at its
// end, also when no fiber reads for them yet (run_many sends to every node before it reads
// any). Seen from another connection: the key is not there while the fiber's turn runs, and
// is once the loop went on, with nobody receiving.
TEST_F(SharedConnectionTest, RequestsOfATurnAreWrittenAtItsEndWithoutAReceive) {
  std::shared_ptr<RedisConnection> conn = connected(2000ms);
  ASSERT_TRUE(conn);
  auto probe = RedisConnection::connect(address(), 1000ms, 2000ms);
  ASSERT_TRUE(probe.ok()) << probe.error().message;
  auto value_of = [&](std::string_view key) {
    auto r = (*probe)->command({"GET", key});
    return r.ok() ? text(*r) : std::string("error");
  };
  std::vector<RedisConnection::Ticket> tickets;
  std::string during_turn;
  spawn([&] {
    tickets.push_back(conn->send({{"SET", "turn-a", "1"}}));
    tickets.push_back(conn->send({{"SET", "turn-b", "2"}}));
    during_turn = value_of("turn-a");  // still in this turn: nothing written yet
  });
  ASSERT_TRUE(run_until(io_, [&] { return all_done(); }));
  EXPECT_EQ(during_turn, "?");  // nil: not written during the turn
  ASSERT_TRUE(run_until(io_, [&] { return value_of("turn-b") == "2"; }));
  EXPECT_EQ(value_of("turn-a"), "1");
  EXPECT_EQ(conn->in_flight(), 2u);  // written, their replies not read: nobody received
}

// On a plain thread (the store's writer thread, the bus's threads): several requests out at
// once, received in any order, each gets its own replies.
TEST_F(SharedConnectionTest, OnAThreadRequestsSentTogetherAreReceivedInAnyOrder) {
  auto c = RedisConnection::connect(address(), 1000ms, 2000ms);
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto t1 = (*c)->send({{"ECHO", "one"}, {"ECHO", "two"}});
  auto t2 = (*c)->send({{"ECHO", "three"}});
  EXPECT_EQ((*c)->in_flight(), 2u);
  auto r2 = (*c)->receive(t2);  // reads t1's replies on the way
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  ASSERT_EQ(r2->size(), 1u);
  EXPECT_EQ(text(r2->front()), "three");
  auto r1 = (*c)->receive(t1);
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  ASSERT_EQ(r1->size(), 2u);
  EXPECT_EQ(text((*r1)[0]), "one");
  EXPECT_EQ(text((*r1)[1]), "two");
  EXPECT_EQ((*c)->in_flight(), 0u);
}

}  // namespace
}  // namespace tern::store::redis
