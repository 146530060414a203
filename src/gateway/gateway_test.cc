// The gateway over WebSocket: the upgrade and its token, echo, the bounded write queue and
// the byte budgets, liveness and shutdown, the event loops connections are placed on.
#include "gateway/gateway_test_fixture.h"

namespace tern::gateway::gwtest {
namespace {

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
  EXPECT_EQ(conn->queue_limit_bytes(), GatewayOptions{}.write_queue_bytes);
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
  o.write_queue_bytes = 256 * 1024;  // four 64 KiB frames
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

TEST_F(GatewayTest, QueueBoundedInBytesOverflowCloses1008) {
  GatewayOptions o;
  o.write_queue_bytes = 1000;
  start(o);
  auto& slow_closes = counter("tern_slow_consumer_closes_total");
  const uint64_t slow_before = slow_closes.value();
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  // 400 + 400 fit in 1000 bytes; the third frame would make 1200.
  ASSERT_TRUE(c.write("fill 3 400"));
  EXPECT_EQ(c.read_until_closed(), 1008);
  EXPECT_EQ(service_.first_refused.load(), 2);
  EXPECT_EQ(slow_closes.value(), slow_before + 1);
  // The same bytes in frames that fit are fine.
  WsClient d;
  ASSERT_EQ(d.connect(port_, "/v1/ws", "good"), 101);
  service_.first_refused = -1;
  ASSERT_TRUE(d.write("fill 2 500"));
  for (int i = 0; i < 2; ++i) {
    std::string got;
    ASSERT_FALSE(d.read(&got));
    EXPECT_EQ(got, std::string(500, 'q'));
  }
  EXPECT_EQ(service_.first_refused.load(), -1);
  // A single frame larger than the whole limit still goes to an empty queue.
  ASSERT_TRUE(d.write("fill 1 5000"));
  std::string got;
  ASSERT_FALSE(d.read(&got));
  EXPECT_EQ(got.size(), 5000u);
}

TEST_F(GatewayTest, GlobalBudgetShedsOnlyLargeQueues) {
  GatewayOptions o;
  o.global_queue_bytes = 100 * 1024;
  o.write_queue_bytes = 1024 * 1024;
  start(o);
  WsClient small, hog;
  ASSERT_EQ(small.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_EQ(hog.connect(port_, "/v1/ws", "good"), 101);
  // 3 × 40 KiB in one turn: the third exceeds the 100 KiB budget while this queue holds
  // 80 KiB (> 64 KiB): shed.
  ASSERT_TRUE(hog.write("fill 3 40960"));
  EXPECT_EQ(hog.read_until_closed(), 1008);
  EXPECT_EQ(service_.first_refused.load(), 2);
  // A small queue is still served.
  ASSERT_TRUE(small.write("fill 2 1000"));
  for (int i = 0; i < 2; ++i) ASSERT_FALSE(small.read(nullptr));
}

TEST_F(GatewayTest, OnWritableAfterWritesAtMostOncePerWrite) {
  GatewayOptions o;
  o.write_queue_bytes = 64;
  start(o);
  auto& writes = counter("tern_ws_writes_total");
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(wait_until([&] { return service_.opens() == 1; }));
  const uint64_t writes_before = writes.value();
  ASSERT_TRUE(c.write("burst 6"));  // 12 bytes: at or below half of 64 once written
  for (int i = 0; i < 6; ++i) {
    std::string got;
    ASSERT_FALSE(c.read(&got));
    EXPECT_EQ(got, "b" + std::to_string(i));
  }
  EXPECT_TRUE(wait_until([&] { return service_.writable.load() >= 1; }));
  EXPECT_LE(static_cast<uint64_t>(service_.writable.load()), writes.value() - writes_before)
      << "writes before " << writes_before << " after " << writes.value();
}

TEST_F(GatewayTest, FramesQueuedInOneTurnLeaveInGatheredWrites) {
  start();
  auto& writes = counter("tern_ws_writes_total");
  auto& frames_out = counter("tern_ws_frames_out_total");
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(wait_until([&] { return service_.opens() == 1; }));
  const uint64_t writes_before = writes.value();
  const uint64_t frames_before = frames_out.value();
  constexpr int kFrames = 200;
  ASSERT_TRUE(c.write("burst " + std::to_string(kFrames)));
  for (int i = 0; i < kFrames; ++i) {
    std::string got;
    ASSERT_FALSE(c.read(&got));
    ASSERT_EQ(got, "b" + std::to_string(i));  // in order
  }
  // The counters are bumped right after the write that the client may already have read.
  EXPECT_TRUE(wait_until([&] { return frames_out.value() - frames_before == static_cast<uint64_t>(kFrames); }))
      << frames_out.value() - frames_before;
  const uint64_t n = writes.value() - writes_before;
  EXPECT_GE(n, 1u);
  // 64 frames per gathered write at most: 4 writes, a few more if the socket pushed back.
  EXPECT_LE(n, 10u) << "frames were not gathered";
}

TEST_F(GatewayTest, FloodingConnectionDoesNotStarveItsLoop) {
  GatewayOptions o;
  o.frames_per_turn = 8;
  o.max_input_bytes_per_sec = 0;
  start(o, /*loops=*/1);  // both connections on the same loop
  RawClient flooder;
  ASSERT_TRUE(flooder.connect(port_));
  ASSERT_TRUE(flooder.upgrade());
  WsClient other;
  ASSERT_EQ(other.connect(port_, "/v1/ws", "good"), 101);
  constexpr int kFlood = 5000;  // 100 µs each: half a second of work
  std::string flood;
  for (int i = 0; i < kFlood; ++i) flood += text_frame("slow");
  ASSERT_TRUE(flooder.write(flood));
  ASSERT_TRUE(wait_until([&] { return service_.slow_handled.load() > 0; }));
  ASSERT_TRUE(other.write("probe"));
  std::string got;
  ASSERT_FALSE(other.read(&got));
  EXPECT_EQ(got, "probe");
  EXPECT_GE(service_.probe_seen_at.load(), 0);
  EXPECT_LT(service_.probe_seen_at.load(), kFlood) << "the other connection waited for the whole flood";
  EXPECT_TRUE(wait_until([&] { return service_.slow_handled.load() == kFlood; }));
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

TEST_F(GatewayTest, AuthenticatedConnectionsOverTheLimitAreRefused) {
  GatewayOptions o;
  o.max_connections = 2;
  start(o);
  WsClient a, b;
  ASSERT_EQ(a.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_EQ(b.connect(port_, "/v1/ws", "good"), 101);
  ASSERT_TRUE(wait_until([&] { return listener_->connections() == 2; }));
  EXPECT_EQ(listener_->authenticated_connections(), 2u);
  {
    // The third one is accepted (unauthenticated) but cannot authenticate.
    WsClient c;
    EXPECT_EQ(c.connect(port_, "/v1/ws", "good"), 503);
    EXPECT_NE(c.handshake_body().find(R"("error":"overloaded")"), std::string::npos);
  }
  // Unauthenticated requests still get through: they have their own budget.
  EXPECT_NE(http_get_body("/healthz").find("path=/healthz"), std::string::npos);
  EXPECT_TRUE(a.close());
  ASSERT_TRUE(wait_until([&] { return listener_->authenticated_connections() == 1; }));
  WsClient d;
  EXPECT_EQ(d.connect(port_, "/v1/ws", "good"), 101);
}

TEST_F(GatewayTest, UnauthenticatedConnectionsHaveTheirOwnBudgetAndDeadline) {
  GatewayOptions o;
  o.max_unauthenticated_connections = 2;
  o.unauthenticated_timeout = 1s;
  start(o);
  WsClient authed;
  ASSERT_EQ(authed.connect(port_, "/v1/ws", "good"), 101);
  RawClient idle1, idle2;
  ASSERT_TRUE(idle1.connect(port_));
  ASSERT_TRUE(idle2.connect(port_));
  ASSERT_TRUE(wait_until([&] { return listener_->unauthenticated_connections() == 2; }));
  EXPECT_EQ(listener_->authenticated_connections(), 1u);
  {
    RawClient third;
    ASSERT_TRUE(third.connect(port_));
    const std::string got = third.read_all();
    EXPECT_TRUE(third.ended());
    EXPECT_TRUE(got.empty() || got.rfind("HTTP/1.1 503", 0) == 0) << got.substr(0, 64);
  }
  // Idle sockets that never authenticate are closed after the deadline (1 s, not 30 s).
  const auto t0 = std::chrono::steady_clock::now();
  idle1.read_all(5s);
  idle2.read_all(5s);
  EXPECT_TRUE(idle1.ended());
  EXPECT_TRUE(idle2.ended());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
  ASSERT_TRUE(wait_until([&] { return listener_->unauthenticated_connections() == 0; }));
  // The authenticated WebSocket was never affected; new clients get in again.
  ASSERT_TRUE(authed.write("still here"));
  std::string got;
  ASSERT_FALSE(authed.read(&got));
  EXPECT_EQ(got, "still here");
  WsClient next;
  EXPECT_EQ(next.connect(port_, "/v1/ws", "good"), 101);
}

TEST_F(GatewayTest, HttpConnectionWithValidTokenLeavesTheUnauthenticatedBudget) {
  GatewayOptions o;
  o.unauthenticated_timeout = 1s;
  start(o);
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  auto res = c.request(http::verb::get, "/x", "", "good");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
  ASSERT_TRUE(wait_until([&] { return listener_->authenticated_connections() == 1; }));
  EXPECT_EQ(listener_->unauthenticated_connections(), 0u);
  // Past the unauthenticated deadline, the connection still serves requests.
  HttpClient anon;
  ASSERT_TRUE(anon.connect(port_));
  ASSERT_TRUE(anon.request(http::verb::get, "/y", "", "bad-token"));
  EXPECT_TRUE(anon.closed_by_server());  // closed at its 1 s deadline
  res = c.request(http::verb::get, "/x", "", "good");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
}

TEST_F(GatewayTest, HttpResponseOverTheGlobalBudgetIs503) {
  GatewayOptions o;
  o.global_queue_bytes = 4096;
  start(o);
  auto& overloaded = counter("tern_http_overloaded_total");
  const uint64_t before = overloaded.value();
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  auto res = c.request(http::verb::get, "/x");  // small: fits
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
  res = c.request(http::verb::get, "/big");  // 8 KiB: does not
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 503);
  EXPECT_NE(res->body().find(R"("error":"overloaded")"), std::string::npos);
  EXPECT_FALSE(res->keep_alive());
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_EQ(overloaded.value(), before + 1);
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
  Listener clash(*iocs_[0], o, other);
  EXPECT_FALSE(clash.start().ok());
  o.port = 0;
  o.write_queue_bytes = 0;
  Listener bad(std::vector<net::io_context*>{iocs_[0].get()}, o, other);
  EXPECT_FALSE(bad.start().ok());
}

// --- Event loops ------------------------------------------------------------------------------

TEST_F(GatewayTest, ConnectionsArePlacedRoundRobinAndRunOnTheirLoopThread) {
  start({}, /*loops=*/2);
  std::vector<std::unique_ptr<WsClient>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<WsClient>());
    ASSERT_EQ(clients.back()->connect(port_, "/v1/ws", "good"), 101);
    ASSERT_TRUE(clients.back()->write("hello"));
    ASSERT_FALSE(clients.back()->read(nullptr));
  }
  const auto indexes = service_.loop_indexes();
  ASSERT_EQ(indexes.size(), 4u);
  int on_loop[2] = {0, 0};
  for (const auto& [id, index] : indexes) {
    ASSERT_LT(index, 2u);
    ++on_loop[index];
  }
  EXPECT_EQ(on_loop[0], 2);
  EXPECT_EQ(on_loop[1], 2);
  EXPECT_EQ(service_.wrong_thread.load(), 0) << "a handler ran off its loop's thread";
}

TEST_F(GatewayTest, SingleIoContextConstructorStillServesFromManyThreads) {
  start_shared({}, 2);
  WsClient c;
  ASSERT_EQ(c.connect(port_, "/v1/ws", "good"), 101);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(c.write("m" + std::to_string(i)));
    std::string got;
    ASSERT_FALSE(c.read(&got));
    EXPECT_EQ(got, "m" + std::to_string(i));
  }
  ASSERT_TRUE(wait_until([&] { return service_.last_connection() != nullptr; }));
  EXPECT_EQ(service_.last_connection()->loop_index(), 0u);
}

}  // namespace
}  // namespace tern::gateway::gwtest
