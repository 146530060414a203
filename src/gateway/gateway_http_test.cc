// The gateway over HTTP: keep-alive, streamed bodies (and their decision from another
// thread), replies from other threads, the limits on heads and bodies.
#include "gateway/gateway_test_fixture.h"

namespace tern::gateway::gwtest {
namespace {

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

TEST_F(GatewayTest, StreamedBodiesPassTheBodyLimitInBoundedChunks) {
  GatewayOptions o;
  o.max_http_body_bytes = 1024;
  start(o);
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  std::string body(1 << 20, '\0');
  uint64_t sum = 0;
  for (size_t i = 0; i < body.size(); ++i) {
    body[i] = static_cast<char>(i * 13);
    sum += static_cast<unsigned char>(body[i]);
  }
  auto res = c.request(http::verb::post, "/stream", body, "good");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
  EXPECT_EQ(res->body(), "streamed=1048576 largest=65536 sum=" + std::to_string(sum));
  // The connection stays usable; a buffered route still has the small limit.
  res = c.request(http::verb::post, "/other", std::string(2048, 'x'), "good");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 413);
}

TEST_F(GatewayTest, BodyRefusedFromItsHeadersAndDroppedStreamsAreUnfinished) {
  start();
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  auto res = c.request(http::verb::post, "/refuse", std::string(100000, 'x'), "good");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 413);
  EXPECT_FALSE(res->keep_alive());
  // A streamed body cut off: the sink is dropped without finish().
  {
    RawClient raw;
    ASSERT_TRUE(raw.connect(port_));
    ASSERT_TRUE(raw.write("POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + std::string(30000, 'y')));
  }  // the connection drops here
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (service_.unfinished_sinks.load() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(service_.unfinished_sinks.load(), 1);
}

// The body decision (e.g. an upload's token check on a remote store) answers later from
// another thread: nothing of the body is read before, and the upload then completes.
TEST_F(GatewayTest, BodyDecidedLaterFromAnotherThreadStreamsTheUpload) {
  start();
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  std::optional<http::response<http::string_body>> res;
  std::thread asker([&] { res = c.request(http::verb::post, "/stream-later", std::string(200000, 'z'), "good"); });
  const bool held = wait_until([&] { return service_.held_bodies() == 1; });
  EXPECT_EQ(service_.unfinished_sinks.load(), 0);
  service_.answer_held_bodies();
  asker.join();
  ASSERT_TRUE(held) << "the decision was not asked for";
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
  EXPECT_EQ(res->body(), "streamed=200000 largest=65536 sum=" + std::to_string(200000u * 'z')) << res->body();
  // The connection stays usable.
  res = c.request(http::verb::get, "/x", "", "good");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
  EXPECT_EQ(service_.unfinished_sinks.load(), 0);
}

// The client went away while the body decision was pending: the late sink finds a dead
// socket and is dropped unfinished; nothing crashes, every budget is given back (TearDown).
TEST_F(GatewayTest, ClientGoneBeforeTheBodyDecisionAnswers) {
  start();
  {
    RawClient raw;
    ASSERT_TRUE(raw.connect(port_));
    ASSERT_TRUE(raw.write("POST /stream-later HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                          std::string(30000, 'y')));
    ASSERT_TRUE(wait_until([&] { return service_.held_bodies() == 1; }));
    raw.close();
  }
  service_.answer_held_bodies();
  EXPECT_TRUE(wait_until([&] { return service_.unfinished_sinks.load() == 1; })) << service_.unfinished_sinks.load();
  EXPECT_TRUE(wait_until([&] { return listener_->connections() == 0; })) << listener_->connections();
}

TEST_F(GatewayTest, StreamedResponsesComeFromTheirSource) {
  start();
  HttpClient c;
  ASSERT_TRUE(c.connect(port_));
  for (int round = 0; round < 2; ++round) {  // keep-alive across streamed responses
    auto res = c.request(http::verb::get, "/source", "", "good");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result_int(), 200);
    EXPECT_EQ((*res)["X-Test"], "yes");
    EXPECT_EQ((*res)[http::field::content_length], "300000");
    ASSERT_EQ(res->body().size(), 300000u);
    bool pattern = true;
    for (size_t i = 0; i < res->body().size(); ++i) pattern = pattern && res->body()[i] == static_cast<char>('a' + i % 26);
    EXPECT_TRUE(pattern);
  }
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

}  // namespace
}  // namespace tern::gateway::gwtest
