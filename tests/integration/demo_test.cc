// deploy/local-cluster.sh, the demo of several nodes (issue 10's deploy/), run as a user runs
// it but on free loopback ports: one redis-server or a Redis Cluster of 3 masters + 3 replicas
// (`start --redis-cluster`), plain or TLS only (`--tls`: the Cluster's bus and replication
// too, the nodes on rediss:// with a client certificate), three ternd nodes on it, Debian's
// HAProxy in front. A resumable
// upload goes through the load balancer chunk by chunk, two devices connected through it land
// on different nodes, a message sent on one node reaches the device on the other live, a
// client reconnecting through HAProxy right after the idle node is SIGKILLed is not refused
// (haproxy.cfg's redispatch), and `stop` ends every process it started. The script,
// haproxy.cfg and the build's ternd are the real ones.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "store/redis/testing/redis_server.h"
#include "support/media_http.h"
#include "support/server_test.h"
#include "support/test_client.h"
#include "support/test_server.h"

namespace tern::test {
namespace {

namespace fs = std::filesystem;

// Which Redis the demo starts: one redis-server or a Cluster, plain TCP or TLS only.
struct DemoRedis {
  bool cluster;
  bool tls;
  // The instance's name ("OneServer", "Cluster", "ClusterTls"), also in GoogleTest's output.
  std::string name() const { return std::string(cluster ? "Cluster" : "OneServer") + (tls ? "Tls" : ""); }
  friend void PrintTo(const DemoRedis& r, std::ostream* os) { *os << r.name(); }
};

// The demo's processes on ports of their own, in a directory of their own; stopped (and the
// directory removed) when the test ends, passed or not.
class Demo {
 public:
  explicit Demo(DemoRedis redis) : redis_cluster_(redis.cluster), tls_(redis.tls) {
    char tmpl[] = "/tmp/tern-demo-XXXXXX";
    if (::mkdtemp(tmpl)) dir_ = tmpl;
    // Distinct free ports (each was closed again at once: a short race is possible).
    while (ports_.size() < 4) {
      const uint16_t p = store::redis::testing::free_loopback_port();
      if (p == 0) break;
      if (std::find(ports_.begin(), ports_.end(), p) == ports_.end()) ports_.push_back(p);
    }
    // Redis: one port, or six in a row for the Cluster (and its bus ports, each + 10000), as
    // deploy/redis-cluster.sh takes them; all below the kernel's ephemeral range (32768 up),
    // where the other tests' ports and outgoing connections are.
    const int count = redis_cluster_ ? 6 : 1;
    for (int base = 10000 + static_cast<int>(::getpid() % 1000) * 12; base < 22000 && redis_ports_.empty(); base += 7) {
      bool all_free = true;
      for (int k = 0; k < count && all_free; ++k) {
        const auto p = static_cast<uint16_t>(base + k);
        all_free = std::find(ports_.begin(), ports_.end(), p) == ports_.end() &&
                   store::redis::testing::port_free(p) &&
                   (!redis_cluster_ || store::redis::testing::port_free(static_cast<uint16_t>(p + 10000)));
      }
      if (all_free)
        for (int k = 0; k < count; ++k) redis_ports_.push_back(static_cast<uint16_t>(base + k));
    }
  }
  ~Demo() {
    if (started_) (void)run("stop");
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  bool ready() const { return !dir_.empty() && ports_.size() == 4 && !redis_ports_.empty() && !ternd_path().empty(); }
  uint16_t lb_port() const { return ports_[0]; }
  uint16_t node_port(size_t i) const { return ports_[1 + i]; }
  const std::vector<uint16_t>& redis_ports() const { return redis_ports_; }

  // `deploy/local-cluster.sh <verb>` with this demo's ports; its exit status (output in
  // <dir>/<verb>.log, returned by log()).
  int run(const std::string& verb) {
    if (verb == "start") started_ = true;
    const std::string bin = ternd_path();
    std::ostringstream cmd;
    cmd << "cd '" << dir_ << "' && env TERN_CLUSTER_DIR='" << dir_ << "/cluster' TERND='" << bin
        << "' REDIS_PORT=" << redis_ports_.front() << " TERN_LB_PORT=" << lb_port() << " TERN_NODE_PORTS='"
        << node_port(0) << ' ' << node_port(1) << ' ' << node_port(2) << "' '" << TERN_SOURCE_DIR
        << "/deploy/local-cluster.sh' " << verb << (verb == "start" && redis_cluster_ ? " --redis-cluster" : "")
        << (verb == "start" && tls_ ? " --tls" : "") << " >'" << dir_ << '/' << verb << ".log' 2>&1";
    const int status = std::system(cmd.str().c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  // HAProxy's `show stat` on its stats socket: one CSV line per proxy and server ("" if the
  // socket does not answer).
  std::string show_stat() const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return "";
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = dir_ + "/cluster/haproxy.sock";
    if (path.size() >= sizeof(addr.sun_path)) return ::close(fd), "";
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::write(fd, "show stat\n", 10) == 10) {
      char buf[4096];
      for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }
  // Field `index` (0-based) of each `show stat` line that starts with `prefix`.
  std::vector<std::string> stat_fields(const std::string& prefix, int index) const {
    std::vector<std::string> out;
    std::istringstream in(show_stat());
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(prefix, 0) != 0) continue;
      std::istringstream fields(line);
      std::string field;
      for (int i = 0; i <= index && std::getline(fields, field, ','); ++i) {
      }
      out.push_back(field);
    }
    return out;
  }
  // The nodes HAProxy has in rotation now (the backend's servers, their status in the 18th
  // field); -1 if the socket does not answer.
  int servers_up() const {
    const auto status = stat_fields("ternd,n", 17);
    if (status.empty()) return -1;
    return static_cast<int>(std::count(status.begin(), status.end(), "UP"));
  }
  // Connects the backend retried (wretr, 16th field) or sent to another server (wredis, 17th)
  // after a server refused them; -1 if the socket does not answer.
  long retried_connects() const {
    const auto retries = stat_fields("ternd,BACKEND,", 15), redispatches = stat_fields("ternd,BACKEND,", 16);
    if (retries.size() != 1 || redispatches.size() != 1) return -1;
    return std::atol(retries[0].c_str()) + std::atol(redispatches[0].c_str());
  }
  // A node's pid, from the script's pid file (0 if there is none).
  pid_t node_pid(size_t i) const {
    std::ifstream in(dir_ + "/cluster/n" + std::to_string(i + 1) + ".pid");
    long pid = 0;
    in >> pid;
    return static_cast<pid_t>(pid);
  }
  // Node i's log, and the output of the script's `verb` ("" if there is none).
  std::string node_log(size_t i) const { return contents(dir_ + "/cluster/n" + std::to_string(i + 1) + "/ternd.log"); }
  std::string log(const std::string& verb) const { return contents(dir_ + "/" + verb + ".log"); }

 private:
  static std::string contents(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  const bool redis_cluster_;
  const bool tls_;
  std::string dir_;
  std::vector<uint16_t> ports_;        // HAProxy's, then the three nodes'
  std::vector<uint16_t> redis_ports_;  // one, or the Cluster's six
  bool started_ = false;
};

// Parameter: one redis-server, a Redis Cluster (`start --redis-cluster`), or a Cluster that
// speaks TLS only (`--redis-cluster --tls`).
class DeployDemo : public ::testing::TestWithParam<DemoRedis> {};

INSTANTIATE_TEST_SUITE_P(Redis, DeployDemo,
                         ::testing::Values(DemoRedis{false, false}, DemoRedis{true, false}, DemoRedis{true, true}),
                         [](const ::testing::TestParamInfo<DemoRedis>& info) { return info.param.name(); });

TEST_P(DeployDemo, ThreeNodesBehindHAProxyDeliverAcrossNodesAndStopEndsThem) {
  Demo demo(GetParam());
  ASSERT_TRUE(demo.ready()) << "a temp dir, free ports and TERN_BIN_DIR are needed";
  ASSERT_EQ(demo.run("start"), 0) << demo.log("start");
  EXPECT_NE(demo.log("start").find("up: http://127.0.0.1:" + std::to_string(demo.lb_port())), std::string::npos)
      << demo.log("start");
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(Api(demo.node_port(i)).healthz().status, 200) << "node " << i + 1;
  // Every node logged in with the demo's password, over TLS when asked for.
  const std::string login = GetParam().tls ? "auth=password tls=on" : "auth=password tls=off";
  for (size_t i = 0; i < 3; ++i) EXPECT_NE(demo.node_log(i).find(login), std::string::npos) << demo.node_log(i);
  // HAProxy puts a node in rotation after two passed checks (`rise 2`, `inter 1s`): the
  // load balancer answers once at least one has.
  Api lb(demo.lb_port());
  ASSERT_TRUE(eventually([&] { return lb.healthz().status == 200; }, std::chrono::milliseconds(15000)));
  // leastconn spreads connections over the nodes in rotation: wait for all three to be.
  ASSERT_TRUE(eventually([&] { return demo.servers_up() == 3; }, std::chrono::milliseconds(15000)))
      << demo.servers_up() << " nodes in rotation";

  Account a = lb.must_register("alice");
  Account b = lb.must_register("bob");
  ASSERT_FALSE(a.token.empty());
  ASSERT_FALSE(b.token.empty());
  const std::string conv = lb.must_direct(a.token, "bob");
  ASSERT_FALSE(conv.empty());

  // A resumable upload through the load balancer, a request per connection: with no
  // WebSocket connected yet, leastconn rotates them over the nodes, which share the demo's
  // media directory (and so the upload).
  {
    const std::map<std::string, std::string> auth{{"Authorization", "Bearer " + a.token}};
    const std::string blob = random_bytes(200000);
    auto created = raw_http(demo.lb_port(), "POST", "/v1/media/uploads", auth, R"({"size":200000})");
    ASSERT_EQ(created.status, 201) << created.body;
    const std::string target = "/v1/media/uploads/" + jstr(created.obj(), "upload_id");
    RawHttp put;
    for (size_t at = 0; at < blob.size(); at += 50000) {
      auto h = auth;
      h["Content-Range"] = "bytes " + std::to_string(at) + "-" + std::to_string(at + 49999) + "/200000";
      put = raw_http(demo.lb_port(), "PUT", target, h, std::string_view(blob).substr(at, 50000));
      ASSERT_EQ(put.status, at + 50000 < blob.size() ? 200 : 201) << "chunk at " << at << ": " << put.body;
    }
    ASSERT_EQ(jstr(put.obj(), "media_id"), sha256_hex(blob));
    auto back = download(demo.lb_port(), a.token, sha256_hex(blob));
    ASSERT_EQ(back.status, 200) << back.body;
    EXPECT_EQ(back.body, blob);
  }

  // leastconn sends bob's connection to a node without one: not alice's.
  Device da(a), db(b);
  ASSERT_TRUE(da.connect_synced(demo.lb_port()));
  ASSERT_TRUE(db.connect_synced(demo.lb_port()));
  std::vector<long> per_node;
  for (size_t i = 0; i < 3; ++i) per_node.push_back(static_cast<long>(metric_at(demo.node_port(i), a, "tern_connections")));
  std::sort(per_node.begin(), per_node.end());
  EXPECT_EQ(per_node, (std::vector<long>{0, 1, 1})) << "alice and bob on two different nodes";

  const Seq seq = da.must_send(conv, "demo-1", "across the nodes");
  ASSERT_GT(seq, 0u);
  auto got = db.collect_messages(conv, seq);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(seq_of(got.back()), seq);
  EXPECT_EQ(unb64(jstr(got.back(), "body")), "across the nodes") << dump(got.back());

  // The node without a connection dies. Until HAProxy's checks take it out of rotation (two
  // failed checks 1 s apart), leastconn picks it first for every new connection (it has the
  // fewest): HAProxy retries each refused connect on another node (`option redispatch 1`), so
  // a client that reconnects through the load balancer at once is not refused.
  size_t dead = 3;
  for (size_t i = 0; i < 3; ++i)
    if (metric_at(demo.node_port(i), a, "tern_connections") == 0) dead = i;
  ASSERT_LT(dead, 3u) << "every node holds a connection";
  const pid_t pid = demo.node_pid(dead);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return Api(demo.node_port(dead)).healthz().status == 0; }, std::chrono::milliseconds(5000)));
  const long retried_before = demo.retried_connects();
  ASSERT_GE(retried_before, 0);
  for (int i = 0; i < 3; ++i) {
    Device again(a);
    EXPECT_TRUE(again.connect_synced(demo.lb_port())) << "reconnect " << i << " through the load balancer";
  }
  // At least one reconnect met the dead node and was sent on (else HAProxy's checks took the
  // node out first, and they tested nothing). Counted by HAProxy, not by the time it took:
  // under ASan the three reconnects may outlast the checks' two seconds.
  EXPECT_GT(demo.retried_connects(), retried_before)
      << "no reconnect met the dead node (" << demo.servers_up() << " nodes in rotation): they tested nothing";

  da.close();
  db.close();
  ASSERT_EQ(demo.run("stop"), 0) << demo.log("stop");
  EXPECT_TRUE(eventually([&] { return lb.healthz().status == 0; }, std::chrono::milliseconds(10000))) << "HAProxy still answers";
  for (size_t i = 0; i < 3; ++i)
    EXPECT_TRUE(eventually([&] { return Api(demo.node_port(i)).healthz().status == 0; }, std::chrono::milliseconds(10000)))
        << "node " << i + 1 << " still answers";
  for (uint16_t p : demo.redis_ports())
    EXPECT_TRUE(eventually([&] { return store::redis::testing::port_free(p); }, std::chrono::milliseconds(10000)))
        << "redis-server still listens on " << p;
}

}  // namespace
}  // namespace tern::test
