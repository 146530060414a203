// Linked into an integration test binary (not a library): its tests run on
// `ternd --store redis`. A gtest environment starts one redis-server (AOF, appendfsync
// always) for the process and sets TERN_TEST_REDIS_URL, which TestServer turns into
// `--store redis --redis URL`; every test starts from an empty Redis (FLUSHALL), as it would
// from an empty data directory. Two TestServers of one test share the Redis: two nodes.
// Thread affinity: gtest's main thread.
#include <cstdlib>
#include <memory>

#include <gtest/gtest.h>

#include "store/redis/redis_connection.h"
#include "store/redis/testing/redis_server.h"

namespace tern::test {
namespace {

using store::redis::testing::RedisServer;

class RedisBackend final : public ::testing::Environment {
 public:
  void SetUp() override {
    server_ = std::make_unique<RedisServer>();
    auto r = server_->start();
    ASSERT_TRUE(r.ok()) << "cannot start redis-server (scripts/setup.sh installs it): " << r.error().message;
    ::setenv("TERN_TEST_REDIS_URL", server_->url().c_str(), 1);
    ::setenv("TERN_TEST_REDIS_DIR", server_->dir().c_str(), 1);  // TestServer::disk_dirs()
  }
  void TearDown() override {
    ::unsetenv("TERN_TEST_REDIS_URL");
    ::unsetenv("TERN_TEST_REDIS_DIR");
    server_.reset();
  }
  void flush() {
    if (!server_ || !server_->running()) return;
    auto c = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", server_->port()},
                                                    std::chrono::seconds(1), std::chrono::seconds(5));
    if (!c || !(*c)->command({"FLUSHALL"}).ok()) ADD_FAILURE() << "FLUSHALL before the test failed";
  }

 private:
  std::unique_ptr<RedisServer> server_;
};

RedisBackend* const g_backend = [] {
  auto* b = new RedisBackend;  // gtest owns it
  ::testing::AddGlobalTestEnvironment(b);
  return b;
}();

// Before each test: an empty Redis (gtest owns the listener).
struct Registrar {
  Registrar() {
    ::testing::UnitTest::GetInstance()->listeners().Append(new Forwarder);
  }
  struct Forwarder final : ::testing::EmptyTestEventListener {
    void OnTestStart(const ::testing::TestInfo&) override { g_backend->flush(); }
  };
} const g_registrar;

}  // namespace
}  // namespace tern::test
