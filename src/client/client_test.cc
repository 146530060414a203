// Client against a scripted fake server (Beast, in this process): the outbox's resend with
// the same client_msg_id after a reconnect, rate-limit pauses, permanent refusals, acks
// after hand-over and dedup of replays. Every wait is bounded.
#include "client/client.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <filesystem>
#include <future>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "client/blocking.h"

namespace tern::client {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// One WebSocket peer at a time on 127.0.0.1:0; frames it receives are queued for the test.
class FakeServer {
 public:
  FakeServer() : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    accept();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~FakeServer() {
    asio::post(ioc_, [this] {
      acceptor_.close();
      if (conn_) beast::get_lowest_layer(conn_->ws).close();
      conn_.reset();
    });
    ioc_.stop();
    thread_.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port()); }

  // The next frame the client sent, parsed; nullopt after `timeout`.
  std::optional<json::object> next(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock l(mu_);
    if (!cv_.wait_for(l, timeout, [&] { return !frames_.empty(); })) return std::nullopt;
    std::string f = std::move(frames_.front());
    frames_.pop_front();
    return json::parse(f).as_object();
  }
  // Next frame of a type (others skipped).
  std::optional<json::object> next_of(const std::string& type, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto f = next(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
      if (f && (*f)["type"].as_string() == type) return f;
    }
    return std::nullopt;
  }
  void send(std::string text) {
    asio::post(ioc_, [this, text = std::move(text)]() mutable {
      if (!conn_) return;
      conn_->out.push_back(std::move(text));
      write(conn_);
    });
  }
  void drop() {
    asio::post(ioc_, [this] {
      if (conn_) beast::get_lowest_layer(conn_->ws).close();
      conn_.reset();
    });
  }
  int connections() const { return connections_; }

 private:
  struct Conn {
    explicit Conn(tcp::socket s) : ws(std::move(s)) {}
    websocket::stream<tcp::socket> ws;
    beast::flat_buffer buf;
    std::deque<std::string> out;
    bool writing = false;
  };

  void accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket s) {
      if (ec) return;
      auto c = std::make_shared<Conn>(std::move(s));
      c->ws.async_accept([this, c](beast::error_code ec2) {
        if (ec2) return;
        if (conn_) beast::get_lowest_layer(conn_->ws).close();
        conn_ = c;
        ++connections_;
        read(c);
      });
      accept();
    });
  }
  void read(std::shared_ptr<Conn> c) {
    c->ws.async_read(c->buf, [this, c](beast::error_code ec, size_t) {
      if (ec) return;
      {
        std::lock_guard l(mu_);
        frames_.push_back(beast::buffers_to_string(c->buf.data()));
      }
      cv_.notify_all();
      c->buf.consume(c->buf.size());
      read(c);
    });
  }
  void write(std::shared_ptr<Conn> c) {
    if (c->writing || c->out.empty()) return;
    c->writing = true;
    c->ws.async_write(asio::buffer(c->out.front()), [this, c](beast::error_code ec, size_t) {
      c->writing = false;
      if (ec) return;
      c->out.pop_front();
      write(c);
    });
  }

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::shared_ptr<Conn> conn_;
  std::atomic<int> connections_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> frames_;
  std::thread thread_;
};

std::string sent_frame(const std::string& id, Seq seq) {
  return json::serialize(json::object{{"type", "sent"}, {"client_msg_id", id}, {"conversation_id", "c1"}, {"seq", seq}, {"ts", 1000 + seq}});
}
std::string message_frame(Seq seq, const std::string& body_b64 = "aGk=") {
  return json::serialize(json::object{{"type", "message"}, {"conversation_id", "c1"}, {"seq", seq}, {"sender", "bob"},
                                      {"sender_device", 1}, {"ts", 5}, {"body", body_b64}});
}

struct Fixture {
  FakeServer server;
  std::mutex mu;
  std::vector<Message> got;
  std::vector<ConnectionState> states;
  std::unique_ptr<Client> client;

  explicit Fixture(std::string store = {}) {
    Options o;
    o.server = server.url();
    o.credentials = {"alice", 1, "token"};
    o.store_path = std::move(store);
    o.reconnect = {10, 50, 0};
    o.send_retry = {10, 50, 0};
    o.ack_delay_ms = 5;
    Events e;
    e.on_message = [this](const Message& m) {
      std::lock_guard l(mu);
      got.push_back(m);
    };
    auto c = Client::create(o, e);
    EXPECT_TRUE(c.ok());
    client = std::move(*c);
    client->start();
  }
};

TEST(ClientOutbox, ResendsWithTheSameIdAfterAReconnect) {
  Fixture f;
  std::promise<Result<SendResult>> done;
  auto id = f.client->send("c1", "hello", {}, [&](Result<SendResult> r) { done.set_value(std::move(r)); });
  ASSERT_TRUE(id.ok());
  auto first = f.server.next_of("send");
  ASSERT_TRUE(first);
  EXPECT_EQ((*first)["client_msg_id"].as_string(), *id);
  EXPECT_EQ((*first)["body"].as_string(), "aGVsbG8=");
  f.server.drop();  // lost before `sent`
  auto again = f.server.next_of("send");
  ASSERT_TRUE(again) << "resent after the reconnect";
  EXPECT_EQ((*again)["client_msg_id"].as_string(), *id);
  EXPECT_GE(f.server.connections(), 2);
  EXPECT_EQ(f.client->outbox_size(), 1u);
  f.server.send(sent_frame(*id, 7));
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  auto r = fut.get();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->seq, 7u);
  EXPECT_EQ(r->ts, 1007);
  EXPECT_EQ(f.client->outbox_size(), 0u);
  EXPECT_GE(f.client->stats().resends, 1u);
}

TEST(ClientOutbox, RateLimitedSendIsRetriedAfterAPause) {
  Fixture f;
  std::promise<Result<SendResult>> done;
  auto id = f.client->send("c1", "x", {}, [&](Result<SendResult> r) { done.set_value(std::move(r)); });
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(f.server.next_of("send"));
  f.server.send(json::serialize(json::object{{"type", "error"}, {"code", "rate_limited"}, {"message", "slow"}, {"ref", *id}}));
  auto again = f.server.next_of("send");
  ASSERT_TRUE(again) << "retried on the same connection";
  EXPECT_EQ((*again)["client_msg_id"].as_string(), *id);
  EXPECT_EQ(f.server.connections(), 1);
  f.server.send(sent_frame(*id, 1));
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(fut.get().ok());
}

TEST(ClientOutbox, PermanentRefusalFailsTheSend) {
  Fixture f;
  std::promise<Result<SendResult>> done;
  auto id = f.client->send("c1", "x", {}, [&](Result<SendResult> r) { done.set_value(std::move(r)); });
  ASSERT_TRUE(f.server.next_of("send"));
  f.server.send(json::serialize(json::object{{"type", "error"}, {"code", "forbidden"}, {"message", "no"}, {"ref", *id}}));
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  auto r = fut.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kForbidden);
  EXPECT_EQ(f.client->outbox_size(), 0u);
}

TEST(ClientOutbox, SendsStayInOrderAndBoundedInFlight) {
  Fixture f;
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(*f.client->send("c1", "m" + std::to_string(i)));
  for (int i = 0; i < 5; ++i) {
    auto s = f.server.next_of("send");
    ASSERT_TRUE(s);
    EXPECT_EQ((*s)["client_msg_id"].as_string(), ids[i]);
  }
}

TEST(ClientOutbox, SqliteOutboxIsResentByTheNextClient) {
  char tmpl[] = "/tmp/tern-client-outbox-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string store = std::string(tmpl) + "/o.sqlite";
  std::string id;
  {
    Fixture f(store);
    id = *f.client->send("c1", "survives");
    ASSERT_TRUE(f.server.next_of("send"));
    f.client->stop();  // "crash" before `sent`
  }
  Fixture g(store);
  auto s = g.server.next_of("send");
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["client_msg_id"].as_string(), id);
  g.server.send(sent_frame(id, 3));
  ASSERT_TRUE(std::async(std::launch::async, [&] {
    for (int i = 0; i < 500 && g.client->outbox_size() != 0; ++i) std::this_thread::sleep_for(10ms);
    return g.client->outbox_size() == 0;
  }).get());
  std::filesystem::remove_all(tmpl);
}

TEST(ClientReceive, AcksAfterHandOverAndDropsReplays) {
  Fixture f;
  // Wait for the connection before talking.
  for (int i = 0; i < 500 && f.server.connections() == 0; ++i) std::this_thread::sleep_for(10ms);
  f.server.send(message_frame(1));
  f.server.send(message_frame(2));
  f.server.send(message_frame(1));  // a replay
  auto ack = f.server.next_of("ack");
  ASSERT_TRUE(ack);
  // Cumulative: eventually an ack for 2 (the first may already cover both).
  Seq acked = (*ack)["seq"].to_number<Seq>();
  while (acked < 2) {
    auto more = f.server.next_of("ack");
    ASSERT_TRUE(more);
    acked = (*more)["seq"].to_number<Seq>();
  }
  EXPECT_EQ(acked, 2u);
  std::lock_guard l(f.mu);
  ASSERT_EQ(f.got.size(), 2u);
  EXPECT_EQ(f.got[0].seq, 1u);
  EXPECT_EQ(f.got[1].seq, 2u);
  EXPECT_EQ(f.got[0].body, "hi");
}

}  // namespace
}  // namespace tern::client
