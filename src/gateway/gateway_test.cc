// Tests of the gateway against a real Listener on 127.0.0.1 (port 0) run by two threads,
// with a small echo service and clients driven step by step from the test thread. Every
// client operation and every wait is bounded in time (and loops in count).
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <gtest/gtest.h>

#include "base/metrics.h"
#include "gateway/listener.h"
#include "gateway/service_interface.h"

namespace tern::gateway {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

constexpr auto kOpTimeout = 5s;

// Polls `pred` every 10 ms until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// The service under the gateway: echoes frames, plus a few commands to drive the tests.

class TestService;

class EchoHandler : public FrameHandler, public std::enable_shared_from_this<EchoHandler> {
 public:
  EchoHandler(TestService* service, std::shared_ptr<Connection> conn) : service_(service), conn_(std::move(conn)) {}
  void on_text(std::string_view frame) override;
  void on_writable() override;
  void on_close() override;

 private:
  void flood_step(int remaining);

  TestService* service_;
  std::shared_ptr<Connection> conn_;
};

class TestService : public ServiceInterface {
 public:
  void handle_http(HttpRequest request, HttpReply reply) override {
    if (request.path == "/async") {
      // Reply later, from a thread that is not the session's.
      std::lock_guard lock(mu_);
      repliers_.emplace_back([reply] {
        std::this_thread::sleep_for(20ms);
        reply(HttpResponse{200, "async", "text/plain"});
      });
      return;
    }
    if (request.path == "/throw") throw std::runtime_error("boom");
    reply(HttpResponse{200,
                       "method=" + request.method + " path=" + request.path + " query=" + request.query +
                           " bearer=" + request.bearer_token + " body_bytes=" + std::to_string(request.body.size()),
                       "text/plain"});
  }

  Result<DeviceRef> authenticate(const std::string& token) override {
    if (token == "good") return DeviceRef{"alice", 1};
    return make_error(ErrorCode::kUnauthorized, "bad token");
  }

  std::shared_ptr<FrameHandler> open(std::shared_ptr<Connection> connection, DeviceRef device) override {
    EXPECT_EQ(device.user, "alice");
    std::lock_guard lock(mu_);
    ++opens_[connection->id()];
    last_ = connection;
    return std::make_shared<EchoHandler>(this, std::move(connection));
  }

  void record_close(uint64_t id) {
    std::lock_guard lock(mu_);
    ++closes_[id];
  }
  int opens() {
    std::lock_guard lock(mu_);
    return static_cast<int>(opens_.size());
  }
  int closes() {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& [id, count] : closes_) n += count;
    return n;
  }
  std::map<uint64_t, int> open_counts() {
    std::lock_guard lock(mu_);
    return opens_;
  }
  std::map<uint64_t, int> close_counts() {
    std::lock_guard lock(mu_);
    return closes_;
  }
  std::shared_ptr<Connection> last_connection() {
    std::lock_guard lock(mu_);
    return last_.lock();
  }
  void join_repliers() {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      threads.swap(repliers_);
    }
    for (auto& t : threads) t.join();
  }

  std::atomic<int> writable{0};
  std::atomic<int> flood_refused{0};

 private:
  std::mutex mu_;
  std::map<uint64_t, int> opens_;
  std::map<uint64_t, int> closes_;
  std::weak_ptr<Connection> last_;
  std::vector<std::thread> repliers_;
};

// Frames shared by every send, as the real services do.
std::shared_ptr<const std::string> flood_frame() {
  static const auto frame = std::make_shared<const std::string>(64 * 1024, 'f');
  return frame;
}

void EchoHandler::on_text(std::string_view frame) {
  if (!conn_) {
    ADD_FAILURE() << "on_text after on_close";
    return;
  }
  if (frame == "flood") return flood_step(4000);
  if (frame.rfind("burst ", 0) == 0 || frame.rfind("burst-close ", 0) == 0) {
    const int n = std::stoi(std::string(frame.substr(frame.find(' ') + 1)));
    for (int i = 0; i < n; ++i) conn_->send(std::make_shared<const std::string>("b" + std::to_string(i)));
    if (frame.rfind("burst-close ", 0) == 0) conn_->close(1000, "bye");
    return;
  }
  conn_->send(std::make_shared<const std::string>(frame));
}

// One frame per strand turn, so writes progress between sends until the peer's buffers
// are full and the queue overflows. Bounded: 4000 frames of 64 KiB.
void EchoHandler::flood_step(int remaining) {
  if (!conn_ || remaining == 0) return;
  if (!conn_->send(flood_frame())) {
    ++service_->flood_refused;
    return;
  }
  conn_->post([self = shared_from_this(), remaining] { self->flood_step(remaining - 1); });
}

void EchoHandler::on_writable() { ++service_->writable; }

void EchoHandler::on_close() {
  EXPECT_TRUE(conn_) << "on_close twice";
  if (conn_) service_->record_close(conn_->id());
  conn_.reset();
}

// ---------------------------------------------------------------------------------------
// Clients. Each has its own io_context; every operation runs it for a bounded time and,
// past that, cuts the socket so the operation completes with an error.

template <typename Start>
beast::error_code run_bounded(net::io_context& ioc, beast::tcp_stream& lowest, Start&& start,
                              std::chrono::steady_clock::duration timeout = kOpTimeout) {
  auto result = std::make_shared<std::optional<beast::error_code>>();
  start([result](beast::error_code ec, auto&&...) { *result = ec; });
  ioc.restart();
  ioc.run_for(timeout);
  if (!*result) {
    lowest.close();
    ioc.restart();
    ioc.run_for(2s);
  }
  return result->value_or(net::error::timed_out);
}

class WsClient {
 public:
  // Connects and asks for the upgrade; returns the HTTP status of the answer (101 when
  // upgraded, 0 when the connection itself failed).
  int connect(uint16_t port, const std::string& target, const std::string& bearer = "") {
    auto& lowest = beast::get_lowest_layer(ws_);
    auto ec = run_bounded(ioc_, lowest, [&](auto handler) {
      lowest.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), handler);
    });
    if (ec) return 0;
    ws_.set_option(websocket::stream_base::decorator([bearer](websocket::request_type& req) {
      if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
    }));
    ec = run_bounded(ioc_, lowest, [&](auto handler) { ws_.async_handshake(res_, "127.0.0.1", target, handler); });
    if (ec && ec != websocket::error::upgrade_declined) return 0;
    return res_.result_int();
  }
  const std::string& handshake_body() const { return res_.body(); }

  bool write(const std::string& text, bool binary = false) {
    ws_.binary(binary);
    return !run_bounded(ioc_, beast::get_lowest_layer(ws_),
                        [&](auto handler) { ws_.async_write(net::buffer(text), handler); });
  }

  beast::error_code read(std::string* out, std::chrono::steady_clock::duration timeout = kOpTimeout) {
    buf_.clear();
    auto ec = run_bounded(
        ioc_, beast::get_lowest_layer(ws_), [&](auto handler) { ws_.async_read(buf_, handler); }, timeout);
    if (!ec && out) *out = beast::buffers_to_string(buf_.data());
    return ec;
  }

  // Reads (and discards) until the server closes; returns its close code, 0 if the
  // connection ended without a close frame or nothing ended within the bounds. A close frame
  // followed by a reset still counts: Beast 1.81's server teardown drains at most ~2 KiB of
  // unread input before closing, so a peer cut off mid-message (1009) gets the close frame,
  // then a reset when it answers.
  uint16_t read_until_closed(size_t max_messages = 1000, std::chrono::seconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (size_t i = 0; i < max_messages && std::chrono::steady_clock::now() < deadline; ++i) {
      auto ec = read(nullptr);
      if (ec == websocket::error::closed) return ws_.reason().code;
      if (ec) {
        last_error_ = ec;
        return ws_.reason().code;
      }
    }
    return 0;
  }

  beast::error_code last_error() const { return last_error_; }

  bool close(uint16_t code = 1000) {
    return !run_bounded(ioc_, beast::get_lowest_layer(ws_),
                        [&](auto handler) { ws_.async_close(websocket::close_reason(code), handler); });
  }

 private:
  net::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_{ioc_};
  beast::flat_buffer buf_;
  websocket::response_type res_;
  beast::error_code last_error_;
};

class HttpClient {
 public:
  bool connect(uint16_t port) {
    return !run_bounded(ioc_, stream_, [&](auto handler) {
      stream_.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), handler);
    });
  }

  // One request/response exchange; nullopt if the connection failed or closed.
  std::optional<http::response<http::string_body>> request(http::verb verb, const std::string& target,
                                                           std::string body = "", const std::string& bearer = "",
                                                           bool keep_alive = true) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
    req.keep_alive(keep_alive);
    req.body() = std::move(body);
    req.prepare_payload();
    if (run_bounded(ioc_, stream_, [&](auto handler) { http::async_write(stream_, req, handler); })) return std::nullopt;
    http::response<http::string_body> res;
    if (run_bounded(ioc_, stream_, [&](auto handler) { http::async_read(stream_, buf_, res, handler); }))
      return std::nullopt;
    return res;
  }

  // True if the server closed the connection (EOF or reset) within the bound.
  bool closed_by_server() {
    char byte;
    auto ec = run_bounded(ioc_, stream_, [&](auto handler) { stream_.async_read_some(net::buffer(&byte, 1), handler); });
    return ec && ec != net::error::timed_out && ec != net::error::operation_aborted;
  }

 private:
  net::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  beast::flat_buffer buf_;
};

// Raw bytes over TCP, for malformed requests and a WebSocket peer that never answers.
class RawClient {
 public:
  bool connect(uint16_t port) {
    return !run_bounded(ioc_, stream_, [&](auto handler) {
      stream_.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), handler);
    });
  }
  bool write(const std::string& bytes) {
    return !run_bounded(ioc_, stream_, [&](auto handler) { net::async_write(stream_, net::buffer(bytes), handler); });
  }
  // Reads until `needle` appears (never, if empty) or the connection ends; bounded in time
  // and size.
  std::string read_until(const std::string& needle, std::chrono::seconds timeout = 5s) {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while ((needle.empty() || got.find(needle) == std::string::npos) && got.size() < (1 << 20) &&
           std::chrono::steady_clock::now() < deadline) {
      char chunk[4096];
      size_t n = 0;
      auto ec = run_bounded(ioc_, stream_, [&](auto handler) {
        stream_.async_read_some(net::buffer(chunk), [&n, handler](beast::error_code e, size_t bytes) {
          n = bytes;
          handler(e);
        });
      });
      got.append(chunk, n);
      if (ec) {
        ended_ = true;
        break;
      }
    }
    return got;
  }
  // Reads until the connection ends (or the bounds are hit).
  std::string read_all(std::chrono::seconds timeout = 5s) { return read_until({}, timeout); }
  bool ended() const { return ended_; }

 private:
  net::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  bool ended_ = false;
};

// ---------------------------------------------------------------------------------------

class GatewayTest : public ::testing::Test {
 protected:
  void start(GatewayOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    listener_ = std::make_unique<Listener>(ioc_, options, service_);
    auto port = listener_->start();
    ASSERT_TRUE(port.ok()) << port.error().message;
    port_ = *port;
    ASSERT_NE(port_, 0);
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
  }

  void TearDown() override {
    service_.join_repliers();
    if (listener_) {
      listener_->stop_accepting();
      listener_->close_all(1001);
      EXPECT_TRUE(wait_until([&] { return listener_->connections() == 0; })) << listener_->connections();
    }
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
    listener_.reset();

    // on_close exactly once per opened connection, and only for opened ones.
    const auto opens = service_.open_counts();
    const auto closes = service_.close_counts();
    EXPECT_EQ(opens.size(), closes.size());
    for (const auto& [id, n] : opens) {
      EXPECT_EQ(n, 1) << "open twice: " << id;
      auto it = closes.find(id);
      EXPECT_TRUE(it != closes.end() && it->second == 1) << "on_close count wrong for " << id;
    }
    EXPECT_EQ(connections_gauge().value(), gauge_at_start_);
  }

  static Gauge& connections_gauge() { return MetricsRegistry::global().gauge("tern_connections", ""); }

  std::string http_get_body(const std::string& target) {
    HttpClient c;
    if (!c.connect(port_)) return "connect failed";
    auto res = c.request(http::verb::get, target);
    return res ? res->body() : "no response";
  }

  const int64_t gauge_at_start_ = connections_gauge().value();
  TestService service_;  // declared first: outlives the io_context and its handlers
  net::io_context ioc_{2};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_{ioc_.get_executor()};
  std::unique_ptr<Listener> listener_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
};

// --- HTTP ---------------------------------------------------------------------------------

TEST_F(GatewayTest, HttpRequestsAnsweredWithKeepAlive) {
  start();
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  auto res = c.request(http::verb::get, "/v1/conversations/x/messages?after_seq=3&limit=5", "", "tok123");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
  EXPECT_EQ(res->body(),
            "method=GET path=/v1/conversations/x/messages query=after_seq=3&limit=5 bearer=tok123 body_bytes=0");
  EXPECT_TRUE(res->keep_alive());
  // Same connection, second request with a body.
  res = c.request(http::verb::post, "/v1/users", R"({"user":"alice"})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
  EXPECT_EQ(res->body(), "method=POST path=/v1/users query= bearer= body_bytes=16");
}

TEST_F(GatewayTest, HttpReplyFromAnotherThread) {
  start();
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  for (int i = 0; i < 3; ++i) {
    auto res = c.request(http::verb::get, "/async");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result_int(), 200);
    EXPECT_EQ(res->body(), "async");
  }
}

TEST_F(GatewayTest, HttpServiceExceptionIs500) {
  start();
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  auto res = c.request(http::verb::get, "/throw");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 500);
  EXPECT_NE(res->body().find(R"("error":"internal")"), std::string::npos);
}

TEST_F(GatewayTest, HttpBodyOverLimitIs413AndClosed) {
  GatewayOptions o;
  o.max_http_body_bytes = 1024;
  start(o);
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  auto res = c.request(http::verb::post, "/v1/users", std::string(4096, 'x'));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 413);
  EXPECT_NE(res->body().find(R"("error":"too_large")"), std::string::npos);
  EXPECT_FALSE(res->keep_alive());
  EXPECT_TRUE(c.closed_by_server());
  // At the limit is fine.
  HttpClient ok;
  ASSERT_TRUE(ok.connect(port_));
  res = ok.request(http::verb::post, "/v1/users", std::string(1024, 'x'));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
}

TEST_F(GatewayTest, HttpHeadersOverLimitIs413) {
  start();
  RawClient c;
  ASSERT_TRUE(c.connect(port_));
  ASSERT_TRUE(c.write("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(16 * 1024, 'a') + "\r\n\r\n"));
  const std::string got = c.read_until("}");
  EXPECT_EQ(got.rfind("HTTP/1.1 413", 0), 0u) << got.substr(0, 64);
}

TEST_F(GatewayTest, MalformedHttpIs400AndClosed) {
  start();
  RawClient c;
  ASSERT_TRUE(c.connect(port_));
  ASSERT_TRUE(c.write("G@RBAGE / HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string got = c.read_all();
  EXPECT_EQ(got.rfind("HTTP/1.1 400", 0), 0u) << got.substr(0, 64);
  EXPECT_NE(got.find(R"("error":"malformed")"), std::string::npos);
  EXPECT_TRUE(c.ended());
}

TEST_F(GatewayTest, ExpectContinueIsHonoured) {
  start();
  RawClient c;
  ASSERT_TRUE(c.connect(port_));
  ASSERT_TRUE(c.write("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  EXPECT_NE(c.read_until("\r\n\r\n").find("100 Continue"), std::string::npos);
  ASSERT_TRUE(c.write("hello"));
  EXPECT_NE(c.read_until("body_bytes=5").find("body_bytes=5"), std::string::npos);
}

// --- WebSocket upgrade and echo --------------------------------------------------------------

TEST_F(GatewayTest, UpgradeRefusedWith401OnBadOrMissingToken) {
  start();
  {
    WsClient c;
    EXPECT_EQ(c.connect(port_, "/v1/ws"), 401);
    EXPECT_NE(c.handshake_body().find(R"("error":"unauthorized")"), std::string::npos);
  }
  {
    WsClient c;
    EXPECT_EQ(c.connect(port_, "/v1/ws", "bad"), 401);
  }
  {
    WsClient c;
    EXPECT_EQ(c.connect(port_, "/v1/ws?token=bad"), 401);
  }
  {
    WsClient c;
    EXPECT_EQ(c.connect(port_, "/v1/ws?other=good"), 401);
  }
  EXPECT_EQ(service_.opens(), 0);
}

TEST_F(GatewayTest, EchoWithBearerHeader) {
  start();
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  for (int i = 0; i < 5; ++i) {
    const std::string msg = R"({"type":"typing","n":)" + std::to_string(i) + "}";
    ASSERT_TRUE(c.write(msg));
    std::string got;
    ASSERT_FALSE(c.read(&got));
    EXPECT_EQ(got, msg);
  }
  EXPECT_TRUE(wait_until([&] { return connections_gauge().value() == gauge_at_start_ + 1; }));
  EXPECT_TRUE(c.close());
  EXPECT_TRUE(wait_until([&] { return service_.closes() == 1; }));
}

TEST_F(GatewayTest, EchoWithQueryToken) {
  start();
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws?x=1&token=good"), 101);
  ASSERT_TRUE(c.write("hello"));
  std::string got;
  ASSERT_FALSE(c.read(&got));
  EXPECT_EQ(got, "hello");
}

TEST_F(GatewayTest, PostFromAnotherThreadSends) {
  start();
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(wait_until([&] { return service_.last_connection() != nullptr; }));
  auto conn = service_.last_connection();
  EXPECT_EQ(conn->queue_limit(), GatewayOptions{}.write_queue_frames);
  conn->post([conn] { conn->send(std::make_shared<const std::string>("posted")); });
  conn.reset();
  std::string got;
  ASSERT_FALSE(c.read(&got));
  EXPECT_EQ(got, "posted");
}

TEST_F(GatewayTest, OversizeFrameClosesOnlyThatConnection) {
  GatewayOptions o;
  o.max_frame_bytes = 1024;
  start(o);
  WsClient big, other;
  ASSERT_EQ(big.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_EQ(other.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(big.write(std::string(1024, 'a')));  // at the limit: fine
  std::string got;
  ASSERT_FALSE(big.read(&got));
  EXPECT_EQ(got.size(), 1024u);
  ASSERT_TRUE(big.write(std::string(2000, 'a')));
  EXPECT_EQ(big.read_until_closed(), 1009);
  ASSERT_TRUE(other.write("still here"));
  ASSERT_FALSE(other.read(&got));
  EXPECT_EQ(got, "still here");
  EXPECT_TRUE(wait_until([&] { return service_.closes() == 1; }));
}

TEST_F(GatewayTest, BinaryFrameClosesWith1003) {
  start();
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(c.write("\x01\x02", true));
  EXPECT_EQ(c.read_until_closed(), 1003);
}

TEST_F(GatewayTest, ServiceCloseFlushesQueuedFramesFirst) {
  start();
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(c.write("burst-close 3"));
  for (int i = 0; i < 3; ++i) {
    std::string got;
    ASSERT_FALSE(c.read(&got));
    EXPECT_EQ(got, "b" + std::to_string(i));
  }
  EXPECT_EQ(c.read_until_closed(), 1000);
}

// --- Write queue --------------------------------------------------------------------------

TEST_F(GatewayTest, SlowConsumerIsClosedWith1008) {
  GatewayOptions o;
  o.write_queue_frames = 16;
  start(o);
  auto& slow_closes = MetricsRegistry::global().counter("tern_slow_consumer_closes_total", "");
  const uint64_t slow_before = slow_closes.value();

  WsClient slow, healthy;
  ASSERT_EQ(slow.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_EQ(healthy.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(slow.write("flood"));
  // The slow client reads nothing until the service has been refused.
  ASSERT_TRUE(wait_until([&] { return service_.flood_refused.load() == 1; }));
  EXPECT_EQ(slow_closes.value(), slow_before + 1);
  EXPECT_EQ(slow.read_until_closed(/*max_messages=*/5000), 1008);

  std::string got;
  ASSERT_TRUE(healthy.write("ok?"));
  ASSERT_FALSE(healthy.read(&got));
  EXPECT_EQ(got, "ok?");
  EXPECT_TRUE(wait_until([&] { return service_.closes() == 1; }));
}

TEST_F(GatewayTest, OnWritableAfterQueueFallsToHalf) {
  GatewayOptions o;
  o.write_queue_frames = 8;
  start(o);
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(c.write("burst 6"));  // 6 > 8/2 queued in one strand turn
  for (int i = 0; i < 6; ++i) {
    std::string got;
    ASSERT_FALSE(c.read(&got));
    EXPECT_EQ(got, "b" + std::to_string(i));
  }
  EXPECT_TRUE(wait_until([&] { return service_.writable.load() == 1; }));
  // Below half: no call.
  ASSERT_TRUE(c.write("burst 3"));
  for (int i = 0; i < 3; ++i) ASSERT_FALSE(c.read(nullptr));
  ASSERT_TRUE(c.write("sync"));
  ASSERT_FALSE(c.read(nullptr));
  EXPECT_EQ(service_.writable.load(), 1);
}

TEST_F(GatewayTest, OnWritableWhenLargeQueueDrains) {
  start();  // limit 4096: half is never crossed by 100 frames
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(c.write("burst 100"));
  for (int i = 0; i < 100; ++i) ASSERT_FALSE(c.read(nullptr));
  EXPECT_TRUE(wait_until([&] { return service_.writable.load() == 1; }));
}

// --- Liveness and shutdown ------------------------------------------------------------------

TEST_F(GatewayTest, SilentPeerIsClosedByPingTimeout) {
  GatewayOptions o;
  o.ping_interval = 1s;
  start(o);
  RawClient c;
  ASSERT_TRUE(c.connect(port_));
  ASSERT_TRUE(c.write("GET /v1/ws?token=good HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n"));
  EXPECT_EQ(c.read_until("\r\n\r\n").rfind("HTTP/1.1 101", 0), 0u);
  ASSERT_TRUE(wait_until([&] { return service_.opens() == 1; }));
  // Never answer the pings: the server must give up within 2 * ping_interval (+ slack).
  EXPECT_TRUE(wait_until([&] { return service_.closes() == 1; }, 10s));
  c.read_all();
  EXPECT_TRUE(c.ended());
}

TEST_F(GatewayTest, CloseAllSends1001) {
  start();
  WsClient a, b;
  ASSERT_EQ(a.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_EQ(b.connect(port_, "/v1/ws", "good"), 101);
  HttpClient idle;
  ASSERT_TRUE(idle.connect(port_));
  // The client sees the 101 before the server calls open(): wait for both.
  ASSERT_TRUE(wait_until([&] { return listener_->connections() == 3 && service_.opens() == 2; }));
  listener_->stop_accepting();
  listener_->close_all(1001);
  EXPECT_EQ(a.read_until_closed(), 1001);
  EXPECT_EQ(b.read_until_closed(), 1001);
  EXPECT_TRUE(idle.closed_by_server());
  EXPECT_TRUE(wait_until([&] { return listener_->connections() == 0; }));
  EXPECT_EQ(service_.closes(), 2);
}

TEST_F(GatewayTest, ConnectionsOverTheLimitAreRefused) {
  GatewayOptions o;
  o.max_connections = 2;
  start(o);
  WsClient a, b;
  ASSERT_EQ(a.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_EQ(b.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(wait_until([&] { return listener_->connections() == 2; }));
  {
    RawClient c;
    ASSERT_TRUE(c.connect(port_));
    const std::string got = c.read_all();
    EXPECT_TRUE(c.ended());
    EXPECT_TRUE(got.empty() || got.rfind("HTTP/1.1 503", 0) == 0) << got.substr(0, 64);
  }
  EXPECT_TRUE(a.close());
  ASSERT_TRUE(wait_until([&] { return listener_->connections() == 1; }));
  EXPECT_NE(http_get_body("/healthz").find("path=/healthz"), std::string::npos);
}

TEST_F(GatewayTest, OnCloseOncePerConnectionWhateverEndsIt) {
  GatewayOptions o;
  o.max_frame_bytes = 1024;
  start(o);
  {
    WsClient clean, dropped, too_big, binary, by_service;
    ASSERT_EQ(clean.connect(port_, "/v1/ws", "good"), 101);
    ASSERT_EQ(dropped.connect(port_, "/v1/ws", "good"), 101);
    ASSERT_EQ(too_big.connect(port_, "/v1/ws", "good"), 101);
    ASSERT_EQ(binary.connect(port_, "/v1/ws", "good"), 101);
    ASSERT_EQ(by_service.connect(port_, "/v1/ws", "good"), 101);
    EXPECT_TRUE(clean.close());
    ASSERT_TRUE(too_big.write(std::string(4096, 'x')));
    EXPECT_EQ(too_big.read_until_closed(), 1009) << too_big.last_error().message();
    ASSERT_TRUE(binary.write("b", true));
    EXPECT_EQ(binary.read_until_closed(), 1003);
    ASSERT_TRUE(by_service.write("burst-close 0"));
    EXPECT_EQ(by_service.read_until_closed(), 1000);
    // `dropped` goes away without a close frame when this scope ends.
  }
  EXPECT_TRUE(wait_until([&] { return service_.closes() == 5; }));
  EXPECT_EQ(service_.opens(), 5);
  // The counts per connection are checked once more in TearDown.
}

TEST_F(GatewayTest, StartRejectsBadOptionsAndBusyPort) {
  start();
  GatewayOptions o;
  o.host = "127.0.0.1";
  o.port = port_;
  TestService other;
  Listener clash(ioc_, o, other);
  EXPECT_FALSE(clash.start().ok());
  o.port = 0;
  o.write_queue_frames = 0;
  Listener bad(ioc_, o, other);
  EXPECT_FALSE(bad.start().ok());
}

}  // namespace
}  // namespace tern::gateway
