// What an idle connection costs: heap per WebSocket (plain and TLS) and the session's size.
#include "gateway/gateway_test_fixture.h"

namespace tern::gateway::gwtest {
namespace {

// --- Memory ------------------------------------------------------------------------------------------

// Built only without AddressSanitizer: mallinfo2() does not see ASan's heap, so the figure
// would be meaningless there (the release run of the suite measures it).
#if !defined(__SANITIZE_ADDRESS__)
TEST_F(GatewayTest, IdleWebSocketsCostLittleMemory) {
  start({}, /*loops=*/1);
  // Plain blocking sockets as clients: they cost no user-space memory of their own, so the
  // heap growth is the gateway's (plus the test service's small handler and maps).
  constexpr int kConnections = 400;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port_);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const std::string request =
      "GET /v1/ws?token=good HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  std::vector<int> fds;
  auto connect_all = [&](int round) {
    for (int i = 0; i < kConnections; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      ASSERT_GE(fd, 0);
      fds.push_back(fd);
      timeval tv{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << i;
      ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
      std::string got;
      char buf[512];
      while (got.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        ASSERT_GT(n, 0) << "no 101 for connection " << i;
        got.append(buf, static_cast<size_t>(n));
      }
      ASSERT_EQ(got.rfind("HTTP/1.1 101", 0), 0u);
    }
    ASSERT_TRUE(wait_until([&] { return service_.opens() == round * kConnections; }));
    ASSERT_TRUE(wait_until([&] { return listener_->unauthenticated_connections() == 0; }));
  };
  auto close_all_fds = [&](int round) {
    for (int fd : fds) ::close(fd);
    fds.clear();
    ASSERT_TRUE(wait_until([&] { return service_.closes() == round * kConnections; }));
    ASSERT_TRUE(wait_until([&] { return listener_->connections() == 0; }));
  };
  auto heap = [] { return static_cast<double>(mallinfo2().uordblks); };
  // Round 1 warms up what is allocated once (OpenSSL's tables, Asio's descriptor pool).
  ASSERT_NO_FATAL_FAILURE(connect_all(1));
  ASSERT_NO_FATAL_FAILURE(close_all_fds(1));
  const double base = heap();
  ASSERT_NO_FATAL_FAILURE(connect_all(2));
  const double idle = (heap() - base) / kConnections;
  ASSERT_NO_FATAL_FAILURE(close_all_fds(2));
  const double after = (heap() - base) / kConnections;
  std::printf("idle WebSocket: %.0f heap bytes per connection (gateway + test service); %.0f left after close\n",
              idle, after);
  EXPECT_LE(idle, 1024.0);
  // What stays is the test service's bookkeeping (two map entries per connection).
  EXPECT_LE(after, 160.0);
}

// The same measure for WebSockets over TLS. The clients run in a child process (forked
// before the listener's threads exist), so their own OpenSSL state is not in this heap.
TEST_F(GatewayTest, IdleTlsWebSocketsMemory) {
  const std::string dir = "/tmp/tern-gw-tls-" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("mkdir -p " + dir + " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                         "-nodes -days 1 -subj /CN=localhost -keyout " + dir + "/k.pem -out " + dir +
                         "/c.pem >/dev/null 2>&1").c_str()),
            0);
  constexpr int kConnections = 400;
  int down[2], up[2];  // parent → child commands, child → parent answers
  ASSERT_EQ(::pipe(down), 0);
  ASSERT_EQ(::pipe(up), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Commands: 'c' connect kConnections WebSockets over TLS, 'x' close them, 'q' quit.
    uint16_t port = 0;
    if (::read(down[0], &port, sizeof port) != sizeof port) ::_exit(1);
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    const std::string request =
        "GET /v1/ws?token=good HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    std::vector<std::pair<int, SSL*>> conns;
    char cmd = 0;
    while (::read(down[0], &cmd, 1) == 1 && cmd != 'q') {
      char answer = 'k';
      if (cmd == 'c') {
        for (int i = 0; i < kConnections && answer == 'k'; ++i) {
          const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
          sockaddr_in a{};
          a.sin_family = AF_INET;
          a.sin_port = htons(port);
          a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          timeval tv{5, 0};
          ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
          SSL* ssl = SSL_new(ctx);
          conns.emplace_back(fd, ssl);
          std::string got;
          char buf[512];
          if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || SSL_set_fd(ssl, fd) != 1 ||
              SSL_connect(ssl) != 1 || SSL_write(ssl, request.data(), static_cast<int>(request.size())) <= 0) {
            answer = 'f';
            break;
          }
          while (got.find("\r\n\r\n") == std::string::npos) {
            const int n = SSL_read(ssl, buf, sizeof buf);
            if (n <= 0) break;
            got.append(buf, static_cast<size_t>(n));
          }
          if (got.rfind("HTTP/1.1 101", 0) != 0) answer = 'f';
        }
      } else if (cmd == 'x') {
        for (auto& [fd, ssl] : conns) {
          SSL_free(ssl);
          ::close(fd);
        }
        conns.clear();
      }
      if (::write(up[1], &answer, 1) != 1) break;
    }
    ::_exit(0);
  }
  ::close(down[0]);
  ::close(up[1]);
  struct Reap {
    pid_t pid;
    int fd;
    ~Reap() {
      const char q = 'q';
      (void)::write(fd, &q, 1);
      ::close(fd);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{child, down[1]};
  GatewayOptions o;
  o.tls_cert_file = dir + "/c.pem";
  o.tls_key_file = dir + "/k.pem";
  start(o, /*loops=*/1);
  ASSERT_EQ(::write(down[1], &port_, sizeof port_), static_cast<ssize_t>(sizeof port_));
  auto command = [&](char c) {
    char answer = 0;
    return ::write(down[1], &c, 1) == 1 && ::read(up[0], &answer, 1) == 1 && answer == 'k';
  };
  auto connect_all = [&](int round) {
    ASSERT_TRUE(command('c'));
    ASSERT_TRUE(wait_until([&] { return service_.opens() == round * kConnections; }));
    ASSERT_TRUE(wait_until([&] { return listener_->unauthenticated_connections() == 0; }));
  };
  auto close_all = [&](int round) {
    ASSERT_TRUE(command('x'));
    ASSERT_TRUE(wait_until([&] { return service_.closes() == round * kConnections; }));
    ASSERT_TRUE(wait_until([&] { return listener_->connections() == 0; }));
  };
  auto heap = [] { return static_cast<double>(mallinfo2().uordblks); };
  ASSERT_NO_FATAL_FAILURE(connect_all(1));
  ASSERT_NO_FATAL_FAILURE(close_all(1));
  const double base = heap();
  ASSERT_NO_FATAL_FAILURE(connect_all(2));
  const double idle = (heap() - base) / kConnections;
  ASSERT_NO_FATAL_FAILURE(close_all(2));
  const double after = (heap() - base) / kConnections;
  ::close(up[0]);
  std::system(("rm -rf " + dir).c_str());
  std::printf("idle TLS WebSocket: %.0f heap bytes per connection (gateway + OpenSSL + test service); %.0f left "
              "after close\n",
              idle, after);
  // Measured about 15 KB: OpenSSL's SSL object (its session, the record layer's cipher
  // contexts) on top of the plain session, with SSL_MODE_RELEASE_BUFFERS set (about 48 KB
  // without it: the bound also catches the record buffers staying allocated).
  EXPECT_LE(idle, 20000.0);
  EXPECT_LE(after, 400.0);
}
#endif  // !defined(__SANITIZE_ADDRESS__)

TEST(WebSocketSessionMemory, IdleStateIsSmall) {
  // The socket, the counters and flags, empty vectors: no buffer is allocated while idle
  // (the control block of make_shared and the kernel's socket come on top).
  EXPECT_LE(sizeof(WebSocketSession), 448u);
}

}  // namespace
}  // namespace tern::gateway::gwtest
