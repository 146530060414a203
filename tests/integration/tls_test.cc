// TLS on ternd's listening port (--tls-cert/--tls-key) with the SDK over https:// and wss://:
// a test CA and server certificates made by the openssl CLI for 127.0.0.1 and localhost;
// verification failing with a wrong CA; plain TCP to the TLS port; certificate reload on
// SIGHUP (new connections see the new serial, old ones stay up; a bad file keeps the old).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "client/api.h"
#include "client/blocking.h"
#include "client/client.h"
#include "client/io_thread.h"
#include "client/server_url.h"
#include "client/testing/test_pki.h"
#include "support/test_server.h"

namespace tern {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

using client::testing::TestPki;

// A blocking TLS client connection made with OpenSSL directly, to look at the certificate the
// server presents. Reads and writes time out after 10 s.
class RawTls {
 public:
  RawTls(uint16_t port, const std::string& ca_file) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr) != 1) return;
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    ssl_ = SSL_new(ctx_);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), "127.0.0.1");
    SSL_set_fd(ssl_, fd_);
    connected_ = SSL_connect(ssl_) == 1;
  }
  ~RawTls() {
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    SSL_CTX_free(ctx_);
  }
  bool connected() const { return connected_; }
  // The serial number of the server's certificate (-1 if not connected).
  long serial() const {
    if (!connected_) return -1;
    X509* cert = SSL_get1_peer_certificate(ssl_);
    if (!cert) return -1;
    const long s = ASN1_INTEGER_get(X509_get_serialNumber(cert));
    X509_free(cert);
    return s;
  }
  // One GET on this connection (keep-alive); the status line of the answer, or "".
  std::string status_line(const std::string& path) {
    if (!connected_) return {};
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (SSL_write(ssl_, req.data(), static_cast<int>(req.size())) <= 0) return {};
    std::string got;
    char buf[4096];
    while (got.find("\r\n") == std::string::npos && got.size() < 65536) {
      const int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) return {};
      got.append(buf, static_cast<size_t>(n));
    }
    return got.substr(0, got.find("\r\n"));
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool connected_ = false;
};

struct Inbox {
  std::mutex mu;
  std::vector<client::Message> messages;
  std::atomic<client::ConnectionState> state{client::ConnectionState::kDisconnected};
  std::optional<Error> last_error;
  client::Events events() {
    client::Events e;
    e.on_message = [this](const client::Message& m) {
      std::lock_guard l(mu);
      if (!m.system_json) messages.push_back(m);
    };
    e.on_state = [this](client::ConnectionState s, const Error* err) {
      if (err) {
        std::lock_guard l(mu);
        last_error = *err;
      }
      state = s;
    };
    return e;
  }
  size_t count() {
    std::lock_guard l(mu);
    return messages.size();
  }
  std::string last_body() {
    std::lock_guard l(mu);
    return messages.empty() ? std::string() : messages.back().body;
  }
  std::optional<Error> error() {
    std::lock_guard l(mu);
    return last_error;
  }
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("tern-tls-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    pki_.emplace(dir_);
    ASSERT_TRUE(pki_->make_ca("test")) << "openssl CLI failed";
    ASSERT_TRUE(pki_->make_ca("other"));
    ASSERT_TRUE(pki_->make_server("test", "server1", 1001));
    ASSERT_TRUE(pki_->make_server("test", "server2", 1002));
    ASSERT_TRUE(pki_->make_server("test", "wronghost", 1003, "DNS:example.invalid"));
    // The files ternd reads; replaced in place by the reload tests.
    fs::copy_file(pki_->path("server1.pem"), cert(), fs::copy_options::overwrite_existing);
    fs::copy_file(pki_->path("server1.key"), key(), fs::copy_options::overwrite_existing);
    server_ = std::make_unique<test::TestServer>(std::vector<std::string>{"--tls-cert", cert(), "--tls-key", key()});
    ASSERT_TRUE(server_->start()) << server_->error();
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }

  std::string cert() const { return dir_ + "/live.pem"; }
  std::string key() const { return dir_ + "/live.key"; }
  std::string ca() const { return pki_->path("test-ca.pem"); }
  std::string https(const std::string& host = "127.0.0.1") const {
    return "https://" + host + ":" + std::to_string(server_->port());
  }
  client::ServerUrl url(const std::string& ca_file, const std::string& host = "127.0.0.1") {
    auto u = client::parse_server_url(https(host), ca_file);
    EXPECT_TRUE(u.ok()) << (u.ok() ? "" : u.error().message);
    return u.ok() ? *u : client::ServerUrl{};
  }
  client::Credentials register_user(const std::string& user) {
    client::Api api(io_.context(), url(ca()));
    auto c = client::wait_for<client::Credentials>([&](auto cb) { api.register_user(user, std::move(cb)); });
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message) << "\n" << server_->log_tail();
    return c.ok() ? *c : client::Credentials{};
  }
  std::unique_ptr<client::Client> started(const client::Credentials& c, Inbox& inbox, const std::string& ca_file,
                                          const std::string& host = "127.0.0.1") {
    client::Options o;
    o.server = https(host);
    o.ca_file = ca_file;
    o.credentials = c;
    o.reconnect = {50, 500, 0};
    auto client = client::Client::create(o, inbox.events());
    EXPECT_TRUE(client.ok()) << (client.ok() ? "" : client.error().message);
    if (!client.ok()) return nullptr;
    (*client)->start();
    return std::move(*client);
  }
  // Replaces the live certificate and key files with dir/<name>.pem/.key (atomically each).
  void install(const std::string& name) {
    fs::copy_file(pki_->path(name + ".pem"), cert() + ".new", fs::copy_options::overwrite_existing);
    fs::copy_file(pki_->path(name + ".key"), key() + ".new", fs::copy_options::overwrite_existing);
    fs::rename(cert() + ".new", cert());
    fs::rename(key() + ".new", key());
  }
  // A message from `from` to `to` over a direct conversation, checked at the receiver.
  void converse(client::Client& from, const client::Credentials& from_creds, const std::string& to, Inbox& to_inbox,
                const std::string& body) {
    client::Api api(io_.context(), url(ca()), from_creds.token);
    auto conv = client::wait_for<std::string>([&](auto cb) { api.create_direct(to, std::move(cb)); });
    ASSERT_TRUE(conv.ok()) << conv.error().message;
    const size_t before = to_inbox.count();
    auto sent = client::wait_for<client::SendResult>([&](auto cb) { (void)from.send(*conv, body, {}, std::move(cb)); });
    ASSERT_TRUE(sent.ok()) << sent.error().message << "\n" << server_->log_tail();
    ASSERT_TRUE(eventually([&] { return to_inbox.count() > before; }));
    EXPECT_EQ(to_inbox.last_body(), body);
  }

  // alice and bob registered and connected (Synced), bob to `bob_host`.
  struct Pair {
    client::Credentials alice, bob;
    Inbox ai, bi;
    std::unique_ptr<client::Client> a, b;
  };
  std::unique_ptr<Pair> connected_pair(const std::string& bob_host = "127.0.0.1") {
    auto p = std::make_unique<Pair>();
    p->alice = register_user("alice");
    p->bob = register_user("bob");
    p->a = started(p->alice, p->ai, ca());
    p->b = started(p->bob, p->bi, ca(), bob_host);
    const bool synced = p->a && p->b && eventually([&] {
      return p->ai.state == client::ConnectionState::kSynced && p->bi.state == client::ConnectionState::kSynced;
    });
    EXPECT_TRUE(synced) << server_->log_tail();
    return synced ? std::move(p) : nullptr;
  }

  std::string dir_;
  std::optional<TestPki> pki_;
  std::unique_ptr<test::TestServer> server_;
  client::IoThread io_;
};

TEST_F(TlsTest, HttpsCallsAndWssMessagesThroughTheSdk) {
  auto p = connected_pair("localhost");  // bob by the certificate's DNS name, checked too
  ASSERT_TRUE(p);
  converse(*p->a, p->alice, "bob", p->bi, "hello over wss");
  converse(*p->b, p->bob, "alice", p->ai, std::string(60'000, 'x'));  // several TLS records (80 KB of base64)
  EXPECT_EQ(p->a->stats().connects, 1u);
  EXPECT_EQ(p->b->stats().connects, 1u);
}

TEST_F(TlsTest, AWrongCaFailsVerificationWithAClearErrorAndNoRetryLoop) {
  const auto alice = register_user("alice");
  ASSERT_FALSE(alice.token.empty());
  // HTTP call: refused by the client, not retried as a network error.
  client::Api api(io_.context(), url(pki_->path("other-ca.pem")));
  auto r = client::wait_for<client::Credentials>([&](auto cb) { api.register_user("carol", std::move(cb)); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << r.error().message;
  EXPECT_NE(r.error().message.find("tls: the server's certificate did not verify"), std::string::npos)
      << r.error().message;
  // The socket: the Client stops with the same error and never connects.
  Inbox inbox;
  auto c = started(alice, inbox, pki_->path("other-ca.pem"));
  ASSERT_TRUE(c);
  ASSERT_TRUE(eventually([&] { return inbox.state == client::ConnectionState::kStopped; }));
  ASSERT_TRUE(inbox.error().has_value());
  EXPECT_NE(inbox.error()->message.find("tls: the server's certificate did not verify"), std::string::npos)
      << inbox.error()->message;
  EXPECT_EQ(c->stats().connects, 0u);
  // The right CA but a certificate for another host name fails the same way.
  install("wronghost");
  ASSERT_EQ(::kill(server_->pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] { return server_->log_tail(100'000).find("event=tls_reloaded") != std::string::npos; }))
      << server_->log_tail();
  client::Api wrong_host(io_.context(), url(ca()));
  auto h = client::wait_for<void>([&](auto cb) { wrong_host.healthz(std::move(cb)); });
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.error().message.find("tls: the server's certificate did not verify"), std::string::npos)
      << h.error().message;
}

TEST_F(TlsTest, PlainTcpToTheTlsPortIsClosedWithoutHurtingOtherClients) {
  auto p = connected_pair();
  ASSERT_TRUE(p);
  // A plain HTTP request: no HTTP answer, the connection is closed (bounded wait).
  for (int i = 0; i < 3; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server_->port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string req = "GET /v1/healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    std::string got;
    char buf[1024];
    const auto start = std::chrono::steady_clock::now();
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) got.append(buf, static_cast<size_t>(n));
    const int err = n < 0 ? errno : 0;
    ::close(fd);
    EXPECT_TRUE(n == 0 || err == ECONNRESET) << "recv: " << n << " errno " << err;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
    EXPECT_EQ(got.find("HTTP/"), std::string::npos) << "no plaintext HTTP answer on a TLS port";
  }
  // The TLS clients carry on.
  converse(*p->a, p->alice, "bob", p->bi, "still here");
  EXPECT_EQ(p->a->stats().connects, 1u);
  EXPECT_EQ(p->b->stats().connects, 1u);
  RawTls fresh(server_->port(), ca());
  EXPECT_TRUE(fresh.connected());
}

TEST_F(TlsTest, SighupReloadsTheCertificateForNewConnectionsAndKeepsOldOnes) {
  auto p = connected_pair();
  ASSERT_TRUE(p);
  RawTls old_conn(server_->port(), ca());
  ASSERT_TRUE(old_conn.connected());
  ASSERT_EQ(old_conn.serial(), 1001);

  install("server2");
  ASSERT_EQ(::kill(server_->pid(), SIGHUP), 0);
  // New connections get the new certificate once the signal is handled.
  ASSERT_TRUE(eventually([&] { return RawTls(server_->port(), ca()).serial() == 1002; })) << server_->log_tail();
  // The old connections are still up, on the old certificate.
  EXPECT_EQ(old_conn.serial(), 1001);
  EXPECT_EQ(old_conn.status_line("/healthz").rfind("HTTP/1.1 ", 0), 0u);
  converse(*p->a, p->alice, "bob", p->bi, "after the reload");
  converse(*p->b, p->bob, "alice", p->ai, "and back");
  EXPECT_EQ(p->a->stats().connects, 1u) << "the WebSocket was not dropped";
  EXPECT_EQ(p->b->stats().connects, 1u);
  EXPECT_TRUE(server_->running());
}

TEST_F(TlsTest, ABadFileOnSighupIsLoggedAndTheOldCertificateStays) {
  write_file(cert(), "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n");
  ASSERT_EQ(::kill(server_->pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] { return server_->log_tail(100'000).find("event=tls_reload_failed") != std::string::npos; }))
      << server_->log_tail();
  EXPECT_TRUE(server_->running());
  RawTls conn(server_->port(), ca());
  ASSERT_TRUE(conn.connected());
  EXPECT_EQ(conn.serial(), 1001);
  // A key that does not match the certificate is refused too.
  fs::copy_file(pki_->path("server2.pem"), cert(), fs::copy_options::overwrite_existing);  // key stays server1's
  ASSERT_EQ(::kill(server_->pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] {
    const std::string log = server_->log_tail(100'000);
    return log.find("TLS key " + key() + ": error:05800074:x509 certificate routines::key values mismatch") !=
           std::string::npos;
  })) << server_->log_tail();
  EXPECT_EQ(RawTls(server_->port(), ca()).serial(), 1001);
}

TEST_F(TlsTest, BadCertificateAtStartIsAClearErrorAndExitCodeNotZero) {
  write_file(dir_ + "/garbage.pem", "garbage\n");
  test::TestServer bad({"--tls-cert", dir_ + "/garbage.pem", "--tls-key", key()});
  EXPECT_FALSE(bad.start(10s));
  EXPECT_NE(bad.error().find("TLS certificate " + dir_ + "/garbage.pem"), std::string::npos) << bad.error();
  EXPECT_EQ(bad.error().find("(status 0)"), std::string::npos) << bad.error();
  test::TestServer half({"--tls-cert", cert()});
  EXPECT_FALSE(half.start(10s));
  EXPECT_NE(half.error().find("TLS needs both a certificate and a key file"), std::string::npos) << half.error();
  EXPECT_EQ(half.error().find("(status 0)"), std::string::npos) << half.error();
}

}  // namespace
}  // namespace tern
