// ServerTest: a GoogleTest fixture owning one TestServer and an Api bound to it, plus frame
// checks shared by the integration tests. On failure the server's log tail is printed.
// Thread affinity: the test thread; helper threads in tests use their own Device objects.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/test_client.h"
#include "support/test_server.h"

namespace tern::test {

// The value of an unlabelled metric in GET /metrics of the server on `port`, read with `who`'s
// token; -1 (and a recorded failure) if the request fails or the metric is absent.
inline double metric_at(uint16_t port, const Account& who, std::string_view name) {
  auto r = http_request(port, "GET", "/metrics", std::nullopt, who.token);
  EXPECT_EQ(r.status, 200);
  const std::string needle = std::string("\n") + std::string(name) + " ";
  auto at = r.body.find(needle);
  EXPECT_NE(at, std::string::npos) << name;
  if (at == std::string::npos) return -1;
  return std::stod(r.body.substr(at + needle.size()));
}

class ServerTest : public ::testing::Test {
 protected:
  // Use as ASSERT_NO_FATAL_FAILURE(start_server({...})).
  // With TERN_TEST_NODES=2 (the redis2 test backend, support/redis_backend.cc) a second ternd
  // with the same flags joins the first on the test's Redis, and port() and api() hand out the
  // two nodes in turn: every connection and request goes to the node after the last one's.
  void start_server(std::vector<std::string> args = {}) {
    if (two_nodes()) args.insert(args.end(), {"--metrics-token", kMetricsToken});
    server_ = std::make_unique<TestServer>(args);
    ASSERT_TRUE(server_->start()) << server_->error();
    if (two_nodes()) {
      second_ = std::make_unique<TestServer>(std::move(args));
      ASSERT_TRUE(second_->start()) << second_->error();
      api_ = std::make_unique<Api>(std::vector<uint16_t>{server_->port(), second_->port()});
      // Steady state: each node lists the other (send routing agrees), as a deployment is
      // between restarts. A node starting alone sequences what it gets itself until then.
      for (const TestServer* n : {server_.get(), second_.get()})
        ASSERT_TRUE(lists_two_nodes(n->port())) << "the nodes did not see each other within 10 s";
    } else {
      api_ = std::make_unique<Api>(server_->port());
    }
    for (int i = 0; i < (second_ ? 2 : 1); ++i) {
      auto h = api_->healthz();
      ASSERT_EQ(h.status, 200) << h.body;
    }
  }
  // Whether the node on `port` lists two nodes on the bus (tern_bus_live_nodes), within 10 s.
  static bool lists_two_nodes(uint16_t port) {
    for (int i = 0; i < 200; ++i) {
      auto r = http_request(port, "GET", "/metrics", std::nullopt, kMetricsToken);
      if (r.status == 200 && r.body.find("\ntern_bus_live_nodes 2\n") != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  static constexpr const char* kMetricsToken = "two-nodes-test-metrics-token";
  static bool two_nodes() {
    const char* n = std::getenv("TERN_TEST_NODES");
    return n && std::string_view(n) == "2";
  }
  // SIGKILL (or SIGTERM) and start again on the same data dir.
  void restart_server(bool graceful = false) {
    if (graceful) {
      EXPECT_EQ(server_->terminate(), 0);
    } else {
      server_->kill();
    }
    ASSERT_TRUE(server_->restart()) << server_->error();
    api_->set_port(server_->port());
  }
  void TearDown() override {
    if (HasFailure() && server_) std::cerr << server_->log_tail(6000) << "\n";
    if (HasFailure() && second_) std::cerr << "second node:\n" << second_->log_tail(6000) << "\n";
  }
  // The last `bytes` of each node's log, the nodes' one after the other.
  std::string logs(size_t bytes) const { return server_->log_tail(bytes) + (second_ ? second_->log_tail(bytes) : ""); }
  // The node to connect or send to: the only one, or the two in turn.
  uint16_t port() const { return second_ && turn_++ % 2 ? second_->port() : server_->port(); }
  Api& api() { return *api_; }
  // The value of an unlabelled metric in GET /metrics, read with `who`'s token (-1 if absent).
  double metric(const Account& who, std::string_view name) { return metric_at(port(), who, name); }

  std::unique_ptr<TestServer> server_;
  std::unique_ptr<TestServer> second_;  // two nodes only; restart_server() restarts the first
  mutable size_t turn_ = 0;
  std::unique_ptr<Api> api_;
};

inline Seq seq_of(const json::object& o) { return static_cast<Seq>(jint(o, "seq", 0)); }

inline std::vector<json::object> only_type(const std::vector<json::object>& frames, std::string_view type,
                                           std::string_view conv = {}) {
  std::vector<json::object> out;
  for (const auto& f : frames)
    if (type_of(f) == type && (conv.empty() || jstr(f, "conversation_id") == conv)) out.push_back(f);
  return out;
}

// Seqs of `message` frames of `conv`, in arrival order.
inline std::vector<Seq> message_seqs(const std::vector<json::object>& frames, std::string_view conv) {
  std::vector<Seq> out;
  for (const auto& f : frames)
    if (type_of(f) == "message" && jstr(f, "conversation_id") == conv) out.push_back(seq_of(f));
  return out;
}

// Expects `seqs` to be exactly first, first+1, …, last.
inline ::testing::AssertionResult dense_range(const std::vector<Seq>& seqs, Seq first, Seq last) {
  if (last + 1 < first) return ::testing::AssertionFailure() << "bad range " << first << ".." << last;
  std::string got;
  for (size_t i = 0; i < seqs.size() && i < 60; ++i) got += std::to_string(seqs[i]) + " ";
  if (seqs.size() != last + 1 - first)
    return ::testing::AssertionFailure() << "expected seqs " << first << ".." << last << " (" << (last + 1 - first)
                                         << "), got " << seqs.size() << ": " << got;
  for (size_t i = 0; i < seqs.size(); ++i)
    if (seqs[i] != first + i)
      return ::testing::AssertionFailure() << "expected seqs " << first << ".." << last << ", position " << i
                                           << " is " << seqs[i] << ": " << got;
  return ::testing::AssertionSuccess();
}

// Strictly increasing with no gaps (any start).
inline ::testing::AssertionResult contiguous(const std::vector<Seq>& seqs) {
  for (size_t i = 1; i < seqs.size(); ++i)
    if (seqs[i] != seqs[i - 1] + 1) {
      std::string got;
      for (size_t j = (i > 5 ? i - 5 : 0); j < seqs.size() && j < i + 5; ++j) got += std::to_string(seqs[j]) + " ";
      return ::testing::AssertionFailure() << "seq " << seqs[i] << " follows " << seqs[i - 1] << " (around: " << got
                                           << ")";
    }
  return ::testing::AssertionSuccess();
}

// Whether a frame is a `message` written by `who` (device) itself.
inline bool own_message(const json::object& f, const Account& who) {
  return type_of(f) == "message" && jstr(f, "sender") == who.user &&
         static_cast<uint32_t>(jint(f, "sender_device", 0)) == who.device;
}

}  // namespace tern::test
