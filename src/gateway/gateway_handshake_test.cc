// The WebSocket handshake byte by byte (bad requests, early frames, a token check answered
// later) and the input limits (ping floods, the byte rate).
#include "gateway/gateway_test_fixture.h"

namespace tern::gateway::gwtest {
namespace {

// --- Handshake ---------------------------------------------------------------------------------

TEST(WsCodec, AcceptKeyMatchesRfc6455Example) {
  EXPECT_EQ(ws::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  EXPECT_TRUE(ws::valid_client_key("dGhlIHNhbXBsZSBub25jZQ=="));
  EXPECT_FALSE(ws::valid_client_key("c2hvcnQ="));       // 5 bytes
  EXPECT_FALSE(ws::valid_client_key("not base64 !!"));
  EXPECT_FALSE(ws::valid_client_key(""));
}

TEST_F(GatewayTest, BadUpgradeRequestsAre400) {
  start();
  const std::string base = "GET /v1/ws?token=good HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  for (const std::string& rest : {std::string("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"),
                                  std::string("Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"),
                                  std::string("Sec-WebSocket-Version: 13\r\n\r\n")}) {
    RawClient c;
    ASSERT_TRUE(c.connect(port_));
    ASSERT_TRUE(c.write(base + rest));
    const std::string got = c.read_all();
    EXPECT_EQ(got.rfind("HTTP/1.1 400", 0), 0u) << rest << got.substr(0, 64);
  }
  {
    // Upgrade without "Connection: Upgrade".
    RawClient c;
    ASSERT_TRUE(c.connect(port_));
    ASSERT_TRUE(c.write("GET /v1/ws?token=good HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
    EXPECT_EQ(c.read_all().rfind("HTTP/1.1 400", 0), 0u);
  }
  EXPECT_EQ(service_.opens(), 0);
}

TEST_F(GatewayTest, RawHandshakeAnswersAcceptKeyAndTakesEarlyFrames) {
  start();
  RawClient c;
  ASSERT_TRUE(c.connect(port_));
  // The request and a first frame in one write: the frame arrives before the 101 is sent.
  ASSERT_TRUE(c.write("GET /v1/ws?token=good HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n" +
                      text_frame("early")));
  const std::string got = c.read_until("early");
  EXPECT_EQ(got.rfind("HTTP/1.1 101", 0), 0u) << got;
  EXPECT_NE(got.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), std::string::npos) << got;
  // The echo: an unmasked text frame, FIN set.
  const size_t end = got.find("\r\n\r\n") + 4;
  ASSERT_GE(got.size(), end + 7);
  EXPECT_EQ(static_cast<uint8_t>(got[end]), 0x81);
  EXPECT_EQ(static_cast<uint8_t>(got[end + 1]), 5);
  EXPECT_EQ(got.substr(end + 2, 5), "early");
}

// The token check answers later, from another thread (as a remote store read does): the
// session reads nothing meanwhile, then upgrades with the bytes that came after the request.
TEST_F(GatewayTest, UpgradeCompletesWhenTheTokenCheckAnswersFromAnotherThread) {
  start();
  RawClient c;
  ASSERT_TRUE(c.connect(port_));
  ASSERT_TRUE(c.write("GET /v1/ws?token=later HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n" +
                      text_frame("early")));
  ASSERT_TRUE(wait_until([&] { return service_.held() == 1; }));
  EXPECT_EQ(listener_->unauthenticated_connections(), 1u) << "not authenticated before the answer";
  EXPECT_EQ(listener_->authenticated_connections(), 0u);
  EXPECT_EQ(service_.opens(), 0);
  service_.answer_held();
  const std::string got = c.read_until("early");
  EXPECT_EQ(got.rfind("HTTP/1.1 101", 0), 0u) << got;
  EXPECT_NE(got.find("early"), std::string::npos) << got;
  EXPECT_EQ(service_.opens(), 1);
  EXPECT_EQ(listener_->authenticated_connections(), 1u);
  EXPECT_EQ(listener_->unauthenticated_connections(), 0u);
  EXPECT_EQ(service_.wrong_thread.load(), 0) << "the frame was handled on the connection's loop";
}

// The client gave up while its token was being checked: the late answer finds a dead socket;
// nothing crashes and every budget is given back (TearDown checks the counts too).
TEST_F(GatewayTest, ClientGoneBeforeTheTokenCheckAnswers) {
  start();
  {
    RawClient c;
    ASSERT_TRUE(c.connect(port_));
    ASSERT_TRUE(c.write("GET /v1/ws?token=later HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n"));
    ASSERT_TRUE(wait_until([&] { return service_.held() == 1; }));
    c.close();
  }
  // An HTTP request whose first bearer token is held the same way.
  {
    HttpClient h;
    ASSERT_TRUE(h.connect(port_));
    std::thread asker([&] { (void)h.request(http::verb::get, "/x", "", "later"); });
    ASSERT_TRUE(wait_until([&] { return service_.held() == 2; }));
    service_.answer_held();
    asker.join();
  }
  EXPECT_TRUE(wait_until([&] {
    return listener_->connections() == 0 && listener_->authenticated_connections() == 0 &&
           listener_->unauthenticated_connections() == 0;
  })) << listener_->connections();
  EXPECT_EQ(service_.opens(), service_.closes());
}

// A request's first bearer token, checked later from another thread: the request is served
// after the answer and the connection counts as authenticated.
TEST_F(GatewayTest, HttpBearerCheckedLaterAuthenticatesTheConnection) {
  start();
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  std::optional<http::response<http::string_body>> res;
  std::thread asker([&] { res = c.request(http::verb::get, "/x", "", "later"); });
  ASSERT_TRUE(wait_until([&] { return service_.held() == 1; }));
  EXPECT_EQ(listener_->authenticated_connections(), 0u);
  service_.answer_held();
  asker.join();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
  EXPECT_NE(res->body().find("bearer=later"), std::string::npos) << res->body();
  EXPECT_TRUE(wait_until([&] { return listener_->authenticated_connections() == 1; }));
  EXPECT_EQ(listener_->unauthenticated_connections(), 0u);
}

TEST_F(GatewayTest, PingGetsPongAndPeerCloseIsEchoed) {
  start();
  RawClient c;
  ASSERT_TRUE(c.connect(port_));
  ASSERT_TRUE(c.upgrade());
  ASSERT_TRUE(c.write(client_frame(0x89, "abc")));
  EXPECT_NE(c.read_until(std::string("\x8a\x03" "abc", 5)).find(std::string("\x8a\x03" "abc", 5)), std::string::npos);
  // Close with 4000: the server answers with the same code, then closes the connection.
  ASSERT_TRUE(c.write(client_frame(0x88, std::string("\x0f\xa0" "done", 6))));
  const std::string rest = c.read_all();
  EXPECT_EQ(rest, std::string("\x88\x02\x0f\xa0", 4));
  EXPECT_TRUE(c.ended());
  EXPECT_TRUE(wait_until([&] { return service_.closes() == 1; }));
}

TEST_F(GatewayTest, PeerThatNeverReadsCannotStallAClose) {
  GatewayOptions o;
  o.handshake_timeout = 1s;
  o.write_queue_bytes = 256 * 1024;
  start(o);
  RawClient c;
  ASSERT_TRUE(c.connect(port_));
  ASSERT_TRUE(c.upgrade());
  ASSERT_TRUE(c.write(text_frame("flood")));  // and never read again
  ASSERT_TRUE(wait_until([&] { return service_.flood_refused.load() == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  // The close frame sits behind a full socket: the deadline (1 s, checked every second)
  // cuts the connection.
  ASSERT_TRUE(wait_until([&] { return service_.closes() == 1; }, 10s));
  EXPECT_LE(std::chrono::steady_clock::now() - t0, 4s);  // 1 s + the sweep's second + slack
}

// --- Input limits ----------------------------------------------------------------------------------

TEST_F(GatewayTest, PingFloodIsClosedWith1008) {
  GatewayOptions o;
  o.control_frames_per_sec = 10;
  o.control_frames_burst = 20;
  start(o);
  auto& closes = counter("tern_control_frame_closes_total");
  const uint64_t before = closes.value();
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  int sent = 0;
  for (int i = 0; i < 60 && c.ping(); ++i) ++sent;
  EXPECT_GT(sent, 20);
  EXPECT_EQ(c.read_until_closed(), 1008);
  EXPECT_EQ(closes.value(), before + 1);
  // A few pings are fine.
  WsClient calm;
  ASSERT_EQ(calm.connect(port_, "/v1/ws", "good"), 101);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(calm.ping());
  ASSERT_TRUE(calm.write("ok"));
  std::string got;
  ASSERT_FALSE(calm.read(&got));
  EXPECT_EQ(got, "ok");
}

TEST_F(GatewayTest, ByteRateLimitPausesReadingWithoutClosing) {
  GatewayOptions o;
  o.max_frame_bytes = 16 * 1024;             // the burst
  o.max_input_bytes_per_sec = 128 * 1024;
  start(o);
  auto& paused = counter("tern_ws_input_paused_total");
  const uint64_t paused_before = paused.value();
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  constexpr int kFrames = 24;  // 24 × 8 KiB = 192 KiB: (192 - 16) / 128 ≈ 1.4 s at the limit
  const std::string frame(8 * 1024, 'r');
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kFrames; ++i) ASSERT_TRUE(c.write(frame));
  for (int i = 0; i < kFrames; ++i) {
    std::string got;
    ASSERT_FALSE(c.read(&got)) << i;
    ASSERT_EQ(got.size(), frame.size());
  }
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(elapsed, 1100ms) << "input was not limited";
  EXPECT_GT(paused.value(), paused_before);
  ASSERT_TRUE(c.write("still open"));
  std::string got;
  ASSERT_FALSE(c.read(&got));
  EXPECT_EQ(got, "still open");
}

}  // namespace
}  // namespace tern::gateway::gwtest
