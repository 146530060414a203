// What the gateway's tests share (gateway_*_test.cc, ws_codec_test.cc): a real Listener on
// 127.0.0.1 (port 0) with its event loops (one thread each), a small echo service under it,
// and clients driven step by step from the test thread. Every client operation and every
// wait is bounded in time (and loops in count).
// Ownership: each test owns its fixture; the service outlives the loops. Thread-safety: the
// clients are used from the test thread only; TestService from any thread (its own mutex).
#pragma once
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

#include <arpa/inet.h>
#include <malloc.h>
#include <sys/wait.h>

#include <openssl/ssl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <gtest/gtest.h>

#include "base/metrics.h"
#include "gateway/listener.h"
#include "gateway/service_interface.h"
#include "gateway/websocket_session.h"
#include "gateway/ws_codec.h"

namespace tern::gateway::gwtest {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

constexpr auto kOpTimeout = 5s;

// Polls `pred` every 10 ms until it holds or `timeout` passes.
inline bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
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
    if (request.path == "/big") return reply(HttpResponse{200, std::string(8192, 'B'), "text/plain"});
    if (request.path == "/source") {  // 300,000 bytes of a pattern, streamed from a source
      struct Pattern : BodySource {
        size_t at = 0;
        Result<size_t> read(char* out, size_t n) override {
          for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>('a' + (at + i) % 26);
          at += n;
          return n;
        }
      };
      HttpResponse r{200, "", "application/octet-stream"};
      r.headers.emplace_back("X-Test", "yes");
      r.source = std::make_shared<Pattern>();
      r.source_length = 300000;
      return reply(std::move(r));
    }
    reply(HttpResponse{200,
                       "method=" + request.method + " path=" + request.path + " query=" + request.query +
                           " bearer=" + request.bearer_token + " body_bytes=" + std::to_string(request.body.size()),
                       "text/plain"});
  }

  // Streamed bodies (issue 11): "/stream" goes to a sink that counts bytes and the largest
  // chunk; "/refuse" is answered from the headers alone.
  class CountingSink : public BodySink {
   public:
    explicit CountingSink(TestService* s) : s_(s) {}
    ~CountingSink() override {
      if (!finished_) s_->unfinished_sinks++;
    }
    Result<void> write(std::string_view chunk) override {
      bytes_ += chunk.size();
      largest_ = std::max(largest_, chunk.size());
      for (char c : chunk) sum_ += static_cast<unsigned char>(c);
      return {};
    }
    void finish(HttpReply reply) override {
      finished_ = true;
      reply(HttpResponse{200, "streamed=" + std::to_string(bytes_) + " largest=" + std::to_string(largest_) +
                                  " sum=" + std::to_string(sum_),
                         "text/plain"});
    }

   private:
    TestService* s_;
    size_t bytes_ = 0, largest_ = 0;
    uint64_t sum_ = 0;
    bool finished_ = false;
  };
  BodyDecision open_body(const HttpRequest& head) override {
    if (head.path == "/stream") return std::shared_ptr<BodySink>(std::make_shared<CountingSink>(this));
    if (head.path == "/refuse") return HttpResponse{413, R"({"error":"too_large"})"};
    return std::monostate{};
  }
  std::atomic<int> unfinished_sinks{0};
  // "/stream-later": the decision is held until answer_held_bodies(), then given from another
  // thread (a sink), as a decision that reads a remote store (an upload's token check) is.
  void decide_body(const HttpRequest& head, BodyDone done) override {
    if (head.path != "/stream-later") return done(open_body(head));
    std::lock_guard lock(mu_);
    held_bodies_.push_back(std::move(done));
  }
  size_t held_bodies() {
    std::lock_guard lock(mu_);
    return held_bodies_.size();
  }
  void answer_held_bodies() {
    std::lock_guard lock(mu_);
    repliers_.emplace_back([this, held = std::move(held_bodies_)] {
      for (const auto& done : held) done(std::shared_ptr<BodySink>(std::make_shared<CountingSink>(this)));
    });
    held_bodies_.clear();
  }

  // "good" is answered at once, on the session's loop. "later" is held until the test calls
  // answer_held(), then answered from another thread: a token check that reads a remote
  // store answers like that.
  void authenticate(const std::string& token, AuthDone done) override {
    if (token == "later") {
      std::lock_guard lock(mu_);
      held_.push_back(std::move(done));
      return;
    }
    if (token == "good") return done(DeviceRef{"alice", 1});
    done(make_error(ErrorCode::kUnauthorized, "bad token"));
  }
  size_t held() {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  // Answers every held check as valid, from a thread that is not a loop (joined with the
  // repliers).
  void answer_held() {
    std::lock_guard lock(mu_);
    repliers_.emplace_back([held = std::move(held_)] {
      for (const auto& done : held) done(DeviceRef{"alice", 1});
    });
    held_.clear();
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

  // Set by the fixture: the thread of each loop, to check where handlers run.
  void set_loop_threads(std::vector<std::thread::id> ids) {
    std::lock_guard lock(mu_);
    loop_threads_ = std::move(ids);
  }
  void check_thread(const Connection& conn) {
    std::lock_guard lock(mu_);
    if (conn.loop_index() >= loop_threads_.size() || loop_threads_[conn.loop_index()] != std::this_thread::get_id())
      ++wrong_thread;
    loop_indexes_[conn.id()] = conn.loop_index();
  }
  std::map<uint64_t, size_t> loop_indexes() {
    std::lock_guard lock(mu_);
    return loop_indexes_;
  }

  std::atomic<int> writable{0};
  std::atomic<int> flood_refused{0};
  std::atomic<int> wrong_thread{0};
  std::atomic<int> first_refused{-1};   // "fill": index of the first send() refused
  std::atomic<int> slow_handled{0};     // "slow" frames handled
  std::atomic<int> probe_seen_at{-1};   // slow_handled when "probe" arrived

 private:
  std::mutex mu_;
  std::map<uint64_t, int> opens_;
  std::map<uint64_t, int> closes_;
  std::weak_ptr<Connection> last_;
  std::vector<std::thread> repliers_;
  std::vector<AuthDone> held_;
  std::vector<BodyDone> held_bodies_;
  std::vector<std::thread::id> loop_threads_;
  std::map<uint64_t, size_t> loop_indexes_;
};

// Frames shared by every send, as the real services do.
inline std::shared_ptr<const std::string> flood_frame() {
  static const auto frame = std::make_shared<const std::string>(64 * 1024, 'f');
  return frame;
}

inline void EchoHandler::on_text(std::string_view frame) {
  if (!conn_) {
    ADD_FAILURE() << "on_text after on_close";
    return;
  }
  service_->check_thread(*conn_);
  if (frame == "flood") return flood_step(4000);
  if (frame == "slow") {
    // Simulated work: 100 µs per frame.
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
    while (std::chrono::steady_clock::now() < until) {
    }
    ++service_->slow_handled;
    return;
  }
  if (frame == "probe") {
    service_->probe_seen_at = service_->slow_handled.load();
    conn_->send(std::make_shared<const std::string>("probe"));
    return;
  }
  if (frame.rfind("fill ", 0) == 0) {
    // "fill N SIZE": N frames of SIZE bytes in this one turn (nothing is written before the
    // turn ends, so the queue holds them all).
    const std::string args(frame.substr(5));
    const int n = std::stoi(args);
    const size_t size = std::stoul(args.substr(args.find(' ') + 1));
    for (int i = 0; i < n; ++i) {
      if (!conn_->send(std::make_shared<const std::string>(size, 'q'))) {
        service_->first_refused = i;
        break;
      }
    }
    return;
  }
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
inline void EchoHandler::flood_step(int remaining) {
  if (!conn_ || remaining == 0) return;
  if (!conn_->send(flood_frame())) {
    ++service_->flood_refused;
    return;
  }
  conn_->post([self = shared_from_this(), remaining] { self->flood_step(remaining - 1); });
}

inline void EchoHandler::on_writable() { ++service_->writable; }

inline void EchoHandler::on_close() {
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

  bool ping() {
    return !run_bounded(ioc_, beast::get_lowest_layer(ws_), [&](auto handler) { ws_.async_ping({}, handler); });
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
  // Sends a valid upgrade request with a good token; true when the 101 came back.
  bool upgrade() {
    if (!write("GET /v1/ws?token=good HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n"))
      return false;
    return read_until("\r\n\r\n").rfind("HTTP/1.1 101", 0) == 0;
  }
  bool ended() const { return ended_; }
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

 private:
  net::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  bool ended_ = false;
};

// A client frame (masked, as clients must) with the given first byte (FIN, opcode).
inline std::string client_frame(uint8_t first, std::string_view payload, uint32_t mask = 0x37fa213d) {
  std::string out;
  out.push_back(static_cast<char>(first));
  const size_t n = payload.size();
  if (n < 126) {
    out.push_back(static_cast<char>(0x80 | n));
  } else if (n <= 0xFFFF) {
    out.push_back(static_cast<char>(0x80 | 126));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n & 0xFF));
  } else {
    out.push_back(static_cast<char>(0x80 | 127));
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((static_cast<uint64_t>(n) >> (8 * i)) & 0xFF));
  }
  const char m[4] = {static_cast<char>(mask >> 24), static_cast<char>(mask >> 16), static_cast<char>(mask >> 8),
                     static_cast<char>(mask)};
  out.append(m, 4);
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<char>(payload[i] ^ m[i & 3]));
  return out;
}
inline std::string text_frame(std::string_view payload) { return client_frame(0x81, payload); }

// ---------------------------------------------------------------------------------------

class GatewayTest : public ::testing::Test {
 protected:
  // A Listener over `loops` event loops, each io_context run by one thread.
  void start(GatewayOptions options = {}, size_t loops = 2) {
    options.host = "127.0.0.1";
    options.port = 0;
    std::vector<net::io_context*> contexts;
    for (size_t i = 0; i < loops; ++i) {
      iocs_.push_back(std::make_unique<net::io_context>(1));
      works_.emplace_back(iocs_.back()->get_executor());
      contexts.push_back(iocs_.back().get());
    }
    listener_ = std::make_unique<Listener>(contexts, options, service_);
    auto port = listener_->start();
    ASSERT_TRUE(port.ok()) << port.error().message;
    port_ = *port;
    ASSERT_NE(port_, 0);
    std::vector<std::thread::id> ids;
    for (auto& ioc : iocs_) {
      threads_.emplace_back([ioc = ioc.get()] { ioc->run(); });
      ids.push_back(threads_.back().get_id());
    }
    service_.set_loop_threads(std::move(ids));
  }

  // The old single-io_context constructor, that io_context run by `threads` threads.
  void start_shared(GatewayOptions options, int threads) {
    options.host = "127.0.0.1";
    options.port = 0;
    iocs_.push_back(std::make_unique<net::io_context>(threads));
    works_.emplace_back(iocs_.back()->get_executor());
    listener_ = std::make_unique<Listener>(*iocs_.back(), options, service_);
    auto port = listener_->start();
    ASSERT_TRUE(port.ok()) << port.error().message;
    port_ = *port;
    for (int i = 0; i < threads; ++i) threads_.emplace_back([ioc = iocs_.back().get()] { ioc->run(); });
  }

  void TearDown() override {
    service_.answer_held();  // a test that failed early may leave a check unanswered
    service_.answer_held_bodies();
    service_.join_repliers();
    if (listener_) {
      listener_->stop_accepting();
      listener_->close_all(1001);
      // The counters below are given back as each session's last handler finishes, a moment
      // after the connection count drops: wait for all of them.
      EXPECT_TRUE(wait_until([&] {
        return listener_->connections() == 0 && listener_->queued_bytes() == 0 &&
               listener_->authenticated_connections() == 0 && listener_->unauthenticated_connections() == 0;
      })) << listener_->connections();
      EXPECT_EQ(listener_->queued_bytes(), 0u) << "the byte budget must be given back";
      EXPECT_EQ(listener_->authenticated_connections(), 0u);
      EXPECT_EQ(listener_->unauthenticated_connections(), 0u);
    }
    works_.clear();
    for (auto& ioc : iocs_) ioc->stop();
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
  static Counter& counter(const char* name) { return MetricsRegistry::global().counter(name, ""); }

  std::string http_get_body(const std::string& target) {
    HttpClient c;
    if (!c.connect(port_)) return "connect failed";
    auto res = c.request(http::verb::get, target);
    return res ? res->body() : "no response";
  }

  const int64_t gauge_at_start_ = connections_gauge().value();
  TestService service_;  // declared first: outlives the io_contexts and their handlers
  std::vector<std::unique_ptr<net::io_context>> iocs_;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> works_;
  std::unique_ptr<Listener> listener_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
};

}  // namespace tern::gateway::gwtest
