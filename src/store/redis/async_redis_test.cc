// AsyncRedis on a real redis-server, its loop driven by the test thread.
#include "store/redis/async_redis.h"

#include <hiredis/hiredis.h>

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "store/redis/testing/redis_server.h"
#include "store/redis/testing/run_until.h"

namespace tern::store::redis {
namespace {

using namespace std::chrono_literals;

using testing::run_until;

class AsyncRedisTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.start()); }
  std::shared_ptr<AsyncRedis> make(std::chrono::milliseconds command_timeout = 1000ms) {
    AsyncRedisOptions o;
    o.address = RedisAddress{"127.0.0.1", server_.port()};
    o.command_timeout = command_timeout;
    return AsyncRedis::create(io_, o);
  }
  // Issues one command and runs the loop until its answer.
  Result<Reply> call(AsyncRedis& r, std::vector<std::string_view> argv) {
    std::optional<Result<Reply>> got;
    r.command(argv, [&](Result<Reply> reply) { got = std::move(reply); });
    EXPECT_TRUE(run_until(io_, [&] { return got.has_value(); }));
    if (!got) return make_error(ErrorCode::kInternal, "no answer");
    return std::move(*got);
  }

  testing::RedisServer server_;
  boost::asio::io_context io_;
};

TEST_F(AsyncRedisTest, CommandsOfOneTurnGoOutInOneWriteAndAnswerInOrder) {
  auto r = make();
  ASSERT_TRUE(call(*r, {"PING"}));  // connected
  const uint64_t writes_before = r->writes();
  std::vector<std::string> answers;
  constexpr int kCommands = 200;
  for (int i = 0; i < kCommands; ++i) {
    const std::string n = std::to_string(i);
    r->command({"SET", "k" + n, "v" + n}, [](Result<Reply> reply) { ASSERT_TRUE(reply); });
    r->command({"GET", "k" + n}, [&answers](Result<Reply> reply) {
      ASSERT_TRUE(reply);
      ASSERT_EQ((*reply)->type, REDIS_REPLY_STRING);
      answers.emplace_back((*reply)->str, (*reply)->len);
    });
  }
  EXPECT_EQ(r->pending(), 2u * kCommands);
  ASSERT_TRUE(run_until(io_, [&] { return answers.size() == kCommands; }));
  for (int i = 0; i < kCommands; ++i) EXPECT_EQ(answers[i], "v" + std::to_string(i));
  EXPECT_EQ(r->writes() - writes_before, 1u);  // the whole turn in one write
  EXPECT_EQ(r->connects(), 1u);
  EXPECT_EQ(r->pending(), 0u);
}

TEST_F(AsyncRedisTest, ARedisErrorIsAReplyNotAFailure) {
  auto r = make();
  ASSERT_TRUE(call(*r, {"SET", "text", "abc"}));
  auto reply = call(*r, {"INCR", "text"});
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)->type, REDIS_REPLY_ERROR);
  EXPECT_TRUE(r->connected());  // the connection stays
  EXPECT_TRUE(call(*r, {"PING"}));
}

TEST_F(AsyncRedisTest, ADeadRedisFailsAtOnceAndTheBackOffSendsNothing) {
  server_.stop();
  const uint64_t failures_before = redis_connection_counters().connect_failures.value();
  const uint64_t connects_before = redis_connection_counters().connects.value();
  auto r = make();
  auto first = call(*r, {"PING"});
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(r->connects(), 1u);
  // Within the back-off: refused without a connection attempt.
  auto second = call(*r, {"PING"});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(r->connects(), 1u);
  // GET /metrics counts the one failed attempt, and no connection made.
  EXPECT_EQ(redis_connection_counters().connect_failures.value(), failures_before + 1);
  EXPECT_EQ(redis_connection_counters().connects.value(), connects_before);
}

TEST_F(AsyncRedisTest, WaitingCommandsFailWhenRedisDiesAndTheNextConnectsAgainWhenItIsBack) {
  auto r = make();
  ASSERT_TRUE(call(*r, {"SET", "kept", "1"}));
  const uint64_t broken_before = redis_connection_counters().broken.value();
  server_.kill9();
  auto lost = call(*r, {"GET", "kept"});
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, ErrorCode::kUnavailable);
  ASSERT_TRUE(server_.start());
  // (start() connects to the new server itself to await it: it counts in the same process.)
  const uint64_t connects_before = redis_connection_counters().connects.value();
  // After the back-off (100 ms, then 200 ms...) a command reconnects; bounded attempts.
  std::optional<Result<Reply>> back;
  for (int i = 0; i < 100 && !(back && *back); ++i) {
    back = call(*r, {"GET", "kept"});
    if (!*back) {
      boost::asio::steady_timer t(io_, 20ms);
      bool fired = false;
      t.async_wait([&](auto) { fired = true; });
      ASSERT_TRUE(run_until(io_, [&] { return fired; }));
    }
  }
  ASSERT_TRUE(back && *back);
  ASSERT_EQ((**back)->type, REDIS_REPLY_STRING);
  EXPECT_EQ(std::string((**back)->str, (**back)->len), "1");
  EXPECT_GE(r->connects(), 2u);
  // GET /metrics: the connection Redis's death broke, and the one made when it was back.
  EXPECT_EQ(redis_connection_counters().broken.value(), broken_before + 1);
  EXPECT_EQ(redis_connection_counters().connects.value(), connects_before + 1);
}

TEST_F(AsyncRedisTest, AHungRedisTimesOutTheWaitingCommandsAndTheLoopGoesOn) {
  auto r = make(300ms);
  ASSERT_TRUE(call(*r, {"PING"}));
  const uint64_t broken_before = redis_connection_counters().broken.value();
  server_.freeze();
  std::vector<Result<Reply>> got;
  for (int i = 0; i < 3; ++i) r->command({"PING"}, [&](Result<Reply> reply) { got.push_back(std::move(reply)); });
  // Other work on the loop keeps running meanwhile.
  int ticks = 0;
  boost::asio::steady_timer tick(io_);
  std::function<void()> again = [&] {
    tick.expires_after(10ms);
    tick.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      ++ticks;
      if (got.size() < 3) again();
    });
  };
  again();
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_until(io_, [&] { return got.size() == 3; }));
  const auto waited = std::chrono::steady_clock::now() - start;
  for (auto& g : got) {
    ASSERT_FALSE(g);
    EXPECT_EQ(g.error().code, ErrorCode::kUnavailable);
  }
  EXPECT_GE(waited, 250ms);
  EXPECT_GE(ticks, 5);  // the loop was not blocked while Redis hung
  EXPECT_EQ(redis_connection_counters().broken.value(), broken_before + 1);  // one connection, three commands
  server_.thaw();
}

TEST_F(AsyncRedisTest, CommandsBeyondTheBoundAreOverloadedWithoutBeingSent) {
  AsyncRedisOptions o;
  o.address = RedisAddress{"127.0.0.1", server_.port()};
  o.max_pending = 2;
  auto r = AsyncRedis::create(io_, o);
  std::vector<Result<Reply>> got;
  for (int i = 0; i < 3; ++i)
    r->command({"INCR", "counter"}, [&](Result<Reply> reply) { got.push_back(std::move(reply)); });
  ASSERT_TRUE(run_until(io_, [&] { return got.size() == 3; }));
  // The refusal is posted at once, before the two answers.
  ASSERT_FALSE(got[0]);
  EXPECT_EQ(got[0].error().code, ErrorCode::kOverloaded);
  ASSERT_TRUE(got[1]);
  ASSERT_TRUE(got[2]);
  auto value = call(*r, {"GET", "counter"});
  ASSERT_TRUE(value);
  EXPECT_EQ(std::string((*value)->str, (*value)->len), "2");
}

TEST_F(AsyncRedisTest, ACallbackMayCloseTheConnectionAndTheRestFail) {
  auto r = make();
  ASSERT_TRUE(call(*r, {"PING"}));
  const uint64_t broken_before = redis_connection_counters().broken.value();
  std::vector<Result<Reply>> got;
  r->command({"PING"}, [&](Result<Reply> reply) {
    got.push_back(std::move(reply));
    r->close();
  });
  r->command({"PING"}, [&](Result<Reply> reply) { got.push_back(std::move(reply)); });
  ASSERT_TRUE(run_until(io_, [&] { return got.size() == 2; }));
  EXPECT_TRUE(got[0]);
  ASSERT_FALSE(got[1]);
  EXPECT_EQ(got[1].error().code, ErrorCode::kUnavailable);
  EXPECT_TRUE(call(*r, {"PING"}));  // no back-off after a close
  EXPECT_EQ(r->connects(), 2u);
  EXPECT_EQ(redis_connection_counters().broken.value(), broken_before);  // a close is not a break
}

// A subscriber: the SUBSCRIBE's first confirmation answers the command, the second (its other
// channel) and every published message go to the push handler; a killed connection is
// reported to the broken handler (no command waits to tell).
TEST_F(AsyncRedisTest, ASubscribedConnectionHandsPushesOverAndReportsItsEnd) {
  auto sub = make();
  std::vector<std::string> pushed;
  std::vector<std::string> broken;
  sub->set_push_handler([&](Reply r) {
    ASSERT_EQ(r->type, REDIS_REPLY_ARRAY);
    ASSERT_GE(r->elements, 3u);
    pushed.emplace_back(r->element[0]->str, r->element[0]->len);
    if (pushed.back() == "message") pushed.back() += ":" + std::string(r->element[2]->str, r->element[2]->len);
  });
  sub->set_broken_handler([&](const std::string& why) { broken.push_back(why); });
  ASSERT_TRUE(call(*sub, {"CLIENT", "SETNAME", "listener"}));
  auto subscribed = call(*sub, {"SUBSCRIBE", "ch1", "ch2"});
  ASSERT_TRUE(subscribed);
  ASSERT_EQ((*subscribed)->type, REDIS_REPLY_ARRAY);
  auto pub = make();
  for (const char* m : {"one", "two"}) {
    auto n = call(*pub, {"PUBLISH", "ch2", m});
    ASSERT_TRUE(n);
    EXPECT_EQ((*n)->integer, 1);
  }
  ASSERT_TRUE(run_until(io_, [&] { return pushed.size() == 3; }));
  EXPECT_EQ(pushed, (std::vector<std::string>{"subscribe", "message:one", "message:two"}));
  EXPECT_TRUE(broken.empty());
  auto killed = call(*pub, {"CLIENT", "KILL", "TYPE", "pubsub"});
  ASSERT_TRUE(killed);
  EXPECT_EQ((*killed)->integer, 1);
  ASSERT_TRUE(run_until(io_, [&] { return broken.size() == 1; }));
  sub->close();  // asked for: not reported
  EXPECT_EQ(broken.size(), 1u);
}

// A scripted stand-in for a misbehaving server, on loopback, driven by the test's loop: each
// accepted connection reads what the client sends and, after the first read, writes `answer`
// once (then only reads). What a real redis-server never sends: a malformed stream, a reply
// to nothing.
class ScriptedServer {
 public:
  ScriptedServer(boost::asio::io_context& io, std::string answer)
      : acceptor_(io, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)),
        answer_(std::move(answer)) {
    accept();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int accepted() const { return accepted_; }

 private:
  struct Conn {
    explicit Conn(boost::asio::io_context& io) : socket(io) {}
    boost::asio::ip::tcp::socket socket;
    std::array<char, 4096> in;
    bool answered = false;
  };
  void accept() {
    auto c = std::make_shared<Conn>(static_cast<boost::asio::io_context&>(acceptor_.get_executor().context()));
    acceptor_.async_accept(c->socket, [this, c](const boost::system::error_code& ec) {
      if (ec) return;
      ++accepted_;
      read(c);
      accept();
    });
  }
  void read(const std::shared_ptr<Conn>& c) {
    c->socket.async_read_some(boost::asio::buffer(c->in), [this, c](const boost::system::error_code& ec, size_t) {
      if (ec) return;
      if (!c->answered) {
        c->answered = true;
        boost::asio::async_write(c->socket, boost::asio::buffer(answer_), [](const boost::system::error_code&, size_t) {});
      }
      read(c);
    });
  }
  boost::asio::ip::tcp::acceptor acceptor_;
  const std::string answer_;
  int accepted_ = 0;
};

// A malformed reply breaks the connection: the command answered before it keeps its reply,
// every command still waiting fails with `unavailable`, the broken handler hears why, and the
// process goes on; after the back-off the next command connects anew.
// No redis-server: the scripted one only.
class AsyncRedisStreamTest : public ::testing::Test {
 protected:
  boost::asio::io_context io_;
};

TEST_F(AsyncRedisStreamTest, AMalformedStreamBreaksTheConnectionAndFailsTheWaitingCommands) {
  ScriptedServer fake(io_, "+OK\r\n@not a reply\r\n");
  AsyncRedisOptions o;
  o.address = RedisAddress{"127.0.0.1", fake.port()};
  auto r = AsyncRedis::create(io_, o);
  std::vector<std::string> broken;
  r->set_broken_handler([&](const std::string& why) { broken.push_back(why); });
  std::vector<Result<Reply>> got;
  for (int i = 0; i < 3; ++i) r->command({"PING"}, [&](Result<Reply> reply) { got.push_back(std::move(reply)); });
  ASSERT_TRUE(run_until(io_, [&] { return got.size() == 3; }));
  ASSERT_TRUE(got[0]);
  EXPECT_EQ((*got[0])->type, REDIS_REPLY_STATUS);
  for (int i = 1; i < 3; ++i) {
    ASSERT_FALSE(got[i]);
    EXPECT_EQ(got[i].error().code, ErrorCode::kUnavailable);
    EXPECT_NE(got[i].error().message.find("protocol error"), std::string::npos) << got[i].error().message;
  }
  ASSERT_EQ(broken.size(), 1u);
  EXPECT_NE(broken[0].find("protocol error"), std::string::npos);
  EXPECT_FALSE(r->connected());
  // After the back-off (100 ms) a command connects again (bounded: 100 tries, 20 ms apart).
  std::optional<Result<Reply>> again;
  for (int i = 0; i < 100 && r->connects() < 2; ++i) {
    again.reset();
    r->command({"PING"}, [&](Result<Reply> reply) { again = std::move(reply); });
    ASSERT_TRUE(run_until(io_, [&] { return again.has_value(); }));
    boost::asio::steady_timer t(io_, 20ms);
    bool fired = false;
    t.async_wait([&](auto) { fired = true; });
    ASSERT_TRUE(run_until(io_, [&] { return fired; }));
  }
  EXPECT_EQ(r->connects(), 2u);
  EXPECT_EQ(fake.accepted(), 2);
}

// Redis answers only what was asked: a second reply to one command (no push handler) means the
// stream is out of step, so the connection breaks rather than hand it to a later command.
TEST_F(AsyncRedisStreamTest, AReplyNobodyAskedForBreaksTheConnection) {
  ScriptedServer fake(io_, "+first\r\n+extra\r\n");
  AsyncRedisOptions o;
  o.address = RedisAddress{"127.0.0.1", fake.port()};
  auto r = AsyncRedis::create(io_, o);
  std::vector<std::string> broken;
  r->set_broken_handler([&](const std::string& why) { broken.push_back(why); });
  std::optional<Result<Reply>> got;
  r->command({"PING"}, [&](Result<Reply> reply) { got = std::move(reply); });
  ASSERT_TRUE(run_until(io_, [&] { return got.has_value() && !broken.empty(); }));
  ASSERT_TRUE(*got);
  EXPECT_EQ(std::string((**got)->str, (**got)->len), "first");
  ASSERT_EQ(broken.size(), 1u);
  EXPECT_NE(broken[0].find("nobody asked"), std::string::npos) << broken[0];
  EXPECT_FALSE(r->connected());
  // The next command within the back-off is refused at once, not handed the stray reply.
  std::optional<Result<Reply>> next;
  r->command({"PING"}, [&](Result<Reply> reply) { next = std::move(reply); });
  ASSERT_TRUE(run_until(io_, [&] { return next.has_value(); }));
  ASSERT_FALSE(*next);
  EXPECT_EQ(next->error().code, ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace tern::store::redis
