// Linked into the integration binaries that run on both backends (tests/CMakeLists.txt:
// tern_test_redis_backend): when the process was started with --tern-backend=redis (ctest's
// `redis.` registration of the binary), its tests run on `ternd --store redis`. A gtest
// environment then starts one redis-server (AOF, appendfsync always) for the process and sets
// TERN_TEST_REDIS_URL, which TestServer turns into `--store redis --redis URL`, and
// TERN_TEST_REDIS_DIR (TestServer::disk_dirs); every test starts from an empty Redis
// (FLUSHALL), as it would from an empty data directory. Two TestServers of one test share the
// Redis: two nodes. With --tern-backend=redis2 (ctest's `redis2.` registration) it also sets
// TERN_TEST_NODES=2, on which ServerTest starts two ternd on that Redis and sends each request
// and connection to the next node in turn (support/server_test.h): the suite's guarantees,
// checked across nodes. With --tern-backend=cluster2 (ctest's `cluster2.` registration) the
// two nodes share a Redis Cluster of 3 masters + 3 replicas instead (every master emptied
// before each test); --tern-backend=cluster runs one node on such a Cluster (by hand).
// Without a flag it does nothing (RocksDB).
// Thread affinity: gtest's main thread.
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "store/redis/redis_connection.h"
#include "store/redis/testing/redis_cluster_server.h"
#include "store/redis/testing/redis_server.h"

namespace tern::test {
namespace {

using store::redis::testing::RedisClusterServer;
using store::redis::testing::RedisServer;

// Whether this process was started with --tern-backend=`backend`. gtest_main hands argv to
// InitGoogleTest only, which leaves flags it does not know alone: read them where the kernel
// keeps them.
bool backend_requested(std::string_view backend) {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string args((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return args.find("--tern-backend=" + std::string(backend) + '\0') != std::string::npos;
}

class RedisBackend final : public ::testing::Environment {
 public:
  void SetUp() override {
    const bool on_cluster = backend_requested("cluster2") || backend_requested("cluster");
    const bool two_nodes = backend_requested("cluster2") || backend_requested("redis2");
    if (!two_nodes && !on_cluster && !backend_requested("redis")) return;
    if (two_nodes) ::setenv("TERN_TEST_NODES", "2", 1);
    if (on_cluster) {
      cluster_ = std::make_unique<RedisClusterServer>();
      auto r = cluster_->start();
      ASSERT_TRUE(r.ok()) << "cannot start a Redis Cluster (scripts/setup.sh installs redis-server): "
                          << r.error().message;
      ::setenv("TERN_TEST_REDIS_URL", cluster_->seeds3().c_str(), 1);
      ::setenv("TERN_TEST_REDIS_DIR", cluster_->dir().c_str(), 1);
      return;
    }
    server_ = std::make_unique<RedisServer>();
    auto r = server_->start();
    ASSERT_TRUE(r.ok()) << "cannot start redis-server (scripts/setup.sh installs it): " << r.error().message;
    ::setenv("TERN_TEST_REDIS_URL", server_->url().c_str(), 1);
    ::setenv("TERN_TEST_REDIS_DIR", server_->dir().c_str(), 1);  // TestServer::disk_dirs()
  }
  void TearDown() override {
    ::unsetenv("TERN_TEST_REDIS_URL");
    ::unsetenv("TERN_TEST_REDIS_DIR");
    ::unsetenv("TERN_TEST_NODES");
    server_.reset();
    cluster_.reset();
  }
  void flush() {
    if (cluster_) {
      if (auto r = cluster_->flush_masters(); !r) ADD_FAILURE() << r.error().message;
      return;
    }
    if (!server_ || !server_->running()) return;
    auto c = store::redis::RedisConnection::connect(store::redis::RedisAddress{"127.0.0.1", server_->port()},
                                                    std::chrono::seconds(1), std::chrono::seconds(5));
    if (!c || !(*c)->command({"FLUSHALL"}).ok()) ADD_FAILURE() << "FLUSHALL before the test failed";
  }

 private:
  std::unique_ptr<RedisServer> server_;
  std::unique_ptr<RedisClusterServer> cluster_;
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
