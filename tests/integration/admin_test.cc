// Integration (issue 12): the admin endpoint and ternctl against the real ternd. Every
// action, the token always required, actions taking effect at once (devices disconnected,
// tokens refused), every action logged without message content.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "support/admin_tool.h"
#include "support/server_test.h"

namespace tern::test {
namespace {

constexpr const char* kToken = kAdminToken;

class Admin : public ServerTest {
 protected:
  void start() {
    ASSERT_NO_FATAL_FAILURE(start_server(token_file_.ternd_args()));
    admin_port_ = admin_port_in_log(server_->log_tail(100000));
    ASSERT_NE(admin_port_, 0);
  }
  HttpResult admin(std::string_view method, std::string_view target, std::string_view token = kToken) {
    return http_request(admin_port_, method, target, std::nullopt, token);
  }
  // Runs ternctl with `args`; returns its exit code and stdout.
  std::pair<int, std::string> ternctl(const std::string& args, const std::string& token_file = {}) {
    return run_ternctl(admin_port_, token_file.empty() ? token_file_.path().string() : token_file, args);
  }
  AdminTokenFile token_file_;
  uint16_t admin_port_ = 0;
};

TEST_F(Admin, RefusedWithoutTheTokenAndNotServedOnThePublicPort) {
  ASSERT_NO_FATAL_FAILURE(start());
  Account alice = api().must_register("alice");
  for (const char* path : {"/admin/v1/users", "/admin/v1/stats", "/admin/v1/nodes", "/admin/v1/reports",
                           "/admin/v1/users/alice"}) {
    EXPECT_EQ(admin("GET", path, "").status, 401) << path;
    EXPECT_EQ(admin("GET", path, "wrong-token-wrong-token-wrong").status, 401) << path;
    EXPECT_EQ(admin("GET", path, alice.token).status, 401) << path << ": a device token is no admin token";
    // On the public port the admin token means nothing, and no device reaches these routes.
    auto pub = http_request(port(), "GET", path, std::nullopt, kToken);
    EXPECT_EQ(pub.status, 401) << path << " on the public port: " << pub.body;
    auto dev = http_request(port(), "GET", path, std::nullopt, alice.token);
    EXPECT_EQ(dev.status, 404) << path << " on the public port: " << dev.body;
  }
  EXPECT_EQ(admin("POST", "/admin/v1/users/alice/suspend", "").status, 401);
  EXPECT_EQ(admin("DELETE", "/admin/v1/users/alice", "").status, 401);
  EXPECT_EQ(admin("DELETE", "/admin/v1/users/alice/devices/1", "").status, 401);
  // Nothing happened to alice.
  Device da(alice);
  EXPECT_TRUE(da.connect_synced(port()));
  // ternctl with a wrong token fails.
  const auto wrong = std::filesystem::temp_directory_path() / ("tern-admin-wrong-" + std::to_string(::getpid()));
  std::ofstream(wrong) << "not-the-admin-token-at-all\n";
  EXPECT_EQ(ternctl("users", wrong.string()).first, 1);
  std::filesystem::remove(wrong);
  EXPECT_NE(server_->log_tail(100000).find("event=admin_refused"), std::string::npos);
  // Refused at start-up: an admin listener without a token file.
  TestServer bare({"--admin-listen", "127.0.0.1:0"});
  EXPECT_FALSE(bare.start(std::chrono::seconds(10)));
}

TEST_F(Admin, ListsUsersShowsOneAndReadsReports) {
  ASSERT_NO_FATAL_FAILURE(start());
  Account alice = api().must_register("alice");
  Account bob = api().must_register("bob");
  api().must_link(bob);
  api().must_register("carol");
  const std::string conv = api().must_direct(alice.token, "bob");
  ASSERT_EQ(http_request(port(), "PUT", "/v1/blocks/bob", std::nullopt, alice.token).status, 204);

  auto page = admin("GET", "/admin/v1/users?limit=2");
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_EQ(dump(page.obj().at("users")), R"(["alice","bob"])");
  EXPECT_EQ(jstr(page.obj(), "next"), "bob");
  auto rest = admin("GET", "/admin/v1/users?after=bob");
  EXPECT_EQ(dump(rest.obj().at("users")), R"(["carol"])");

  auto b = admin("GET", "/admin/v1/users/bob");
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(b.obj().at("devices").as_array().size(), 2u) << b.body;
  auto a = admin("GET", "/admin/v1/users/alice");
  EXPECT_EQ(jint(a.obj(), "blocked_users"), 1) << a.body;
  EXPECT_EQ(admin("GET", "/admin/v1/users/nobody").status, 404);

  const std::string secret = b64("the attached, encrypted evidence");
  auto filed = http_request(port(), "POST", "/v1/reports",
                            json::serialize(json::object{{"conversation_id", conv}, {"reason", "harassment"},
                                                         {"attachment", secret}}),
                            alice.token);
  ASSERT_EQ(filed.status, 201) << filed.body;
  auto reports = admin("GET", "/admin/v1/reports");
  ASSERT_EQ(reports.status, 200) << reports.body;
  const auto& list = reports.obj().at("reports").as_array();
  ASSERT_EQ(list.size(), 1u) << reports.body;
  const auto& r = list[0].as_object();
  EXPECT_EQ(jint(r, "id"), jint(filed.obj(), "report_id"));
  EXPECT_EQ(jstr(r, "reporter"), "alice");
  EXPECT_EQ(jstr(r, "conversation_id"), conv);
  EXPECT_EQ(jstr(r, "reason"), "harassment");
  EXPECT_EQ(jstr(r, "attachment"), secret) << "the attachment is kept opaque, byte for byte";
  EXPECT_EQ(dump(r.at("members")), R"(["alice","bob"])");
  EXPECT_TRUE(admin("GET", "/admin/v1/reports?after=" + std::to_string(jint(r, "id"))).obj().at("reports").as_array().empty());

  // The same through ternctl.
  auto [rc, out] = ternctl("users --limit 10");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find(R"("carol")"), std::string::npos) << out;
  auto [rc2, out2] = ternctl("reports");
  EXPECT_EQ(rc2, 0);
  EXPECT_NE(out2.find("harassment"), std::string::npos) << out2;
  auto [rc3, out3] = ternctl("user nobody");
  EXPECT_EQ(rc3, 1) << out3;
}

TEST_F(Admin, SuspendDisconnectsAtOnceAndRefusesTokensUntilLifted) {
  ASSERT_NO_FATAL_FAILURE(start());
  Account alice = api().must_register("alice");
  Account bob = api().must_register("bob");
  const std::string conv = api().must_direct(alice.token, "bob");
  Device db(bob);
  ASSERT_TRUE(db.connect_synced(port()));
  ASSERT_GT(db.must_send(conv, "b-1", "private words"), 0u);

  auto [rc, out] = ternctl("suspend bob");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(db.wait_closed(ms(5000))) << "bob's connection outlived his suspension";
  Device again(bob);
  EXPECT_EQ(again.connect(port()), 401);
  EXPECT_EQ(http_request(port(), "GET", "/v1/conversations", std::nullopt, bob.token).status, 401);
  EXPECT_TRUE(jbool(admin("GET", "/admin/v1/users/bob").obj(), "suspended"));

  ASSERT_EQ(admin("POST", "/admin/v1/users/bob/unsuspend").status, 204);
  Device back(bob);
  EXPECT_TRUE(back.connect_synced(port()));
  EXPECT_EQ(http_request(port(), "GET", "/v1/conversations", std::nullopt, bob.token).status, 200);

  // Logged: who, what; never the message.
  const std::string log = server_->log_tail(200000);
  EXPECT_NE(log.find("event=admin_action who=admin:"), std::string::npos) << log;
  EXPECT_NE(log.find("action=suspend user=bob"), std::string::npos) << log;
  EXPECT_NE(log.find("action=unsuspend user=bob"), std::string::npos) << log;
  EXPECT_EQ(log.find(b64("private words")), std::string::npos);
  EXPECT_EQ(log.find(kToken), std::string::npos) << "the admin token is in the log";
}

TEST_F(Admin, RevokeOneDeviceAndDeleteAUser) {
  ASSERT_NO_FATAL_FAILURE(start());
  Account carol = api().must_register("carol");
  Account carol2 = api().must_link(carol);
  Account dave = api().must_register("dave");
  Device c1(carol), c2(carol2), dd(dave);
  ASSERT_TRUE(c1.connect_synced(port()));
  ASSERT_TRUE(c2.connect_synced(port()));
  ASSERT_TRUE(dd.connect_synced(port()));

  auto [rc, out] = ternctl("revoke carol 2");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(c2.wait_closed(ms(5000)));
  Device c2again(carol2);
  EXPECT_EQ(c2again.connect(port()), 401);
  EXPECT_TRUE(c1.is_open()) << "revoking device 2 closed device 1";
  EXPECT_EQ(http_request(port(), "GET", "/v1/conversations", std::nullopt, carol.token).status, 200);
  EXPECT_EQ(admin("DELETE", "/admin/v1/users/carol/devices/9").status, 404);
  EXPECT_EQ(admin("DELETE", "/admin/v1/users/carol/devices/x").status, 400);

  ASSERT_EQ(admin("DELETE", "/admin/v1/users/dave").status, 204);
  EXPECT_TRUE(dd.wait_closed(ms(5000)));
  EXPECT_EQ(http_request(port(), "GET", "/v1/conversations", std::nullopt, dave.token).status, 401);
  auto d = admin("GET", "/admin/v1/users/dave");
  EXPECT_TRUE(jbool(d.obj(), "deleted")) << d.body;
  EXPECT_EQ(admin("POST", "/admin/v1/users/dave/unsuspend").status, 403) << "a deleted account stays closed";
  EXPECT_EQ(api().register_user("dave").status, 409) << "the name of a closed account is not reused";
  // Survives a restart.
  ASSERT_NO_FATAL_FAILURE(restart_server());
  EXPECT_EQ(http_request(port(), "GET", "/v1/conversations", std::nullopt, dave.token).status, 401);
  EXPECT_EQ(http_request(port(), "GET", "/v1/conversations", std::nullopt, carol2.token).status, 401);
  EXPECT_EQ(http_request(port(), "GET", "/v1/conversations", std::nullopt, carol.token).status, 200);
  const std::string log = server_->log_tail(200000);
  EXPECT_NE(log.find("action=revoke_device user=carol device=2"), std::string::npos);
  EXPECT_NE(log.find("action=delete user=dave"), std::string::npos);
}

TEST_F(Admin, StatsShowLiveFigures) {
  ASSERT_NO_FATAL_FAILURE(start());
  Account alice = api().must_register("alice");
  api().must_register("bob");
  const std::string conv = api().must_direct(alice.token, "bob");
  Device da(alice);
  ASSERT_TRUE(da.connect_synced(port()));
  ASSERT_EQ(admin("GET", "/admin/v1/stats").status, 200);  // starts an interval
  for (int i = 0; i < 20; ++i) ASSERT_GT(da.must_send(conv, "m-" + std::to_string(i), "x"), 0u);
  auto [rc, out] = ternctl("stats");
  ASSERT_EQ(rc, 0) << out;
  auto s = json::parse(out).as_object();
  EXPECT_EQ(jint(s, "connections"), 1) << out;
  EXPECT_GE(jint(s, "messages_stored_total"), 20) << out;
  EXPECT_GT(s.at("messages_per_sec").to_number<double>(), 0.0) << out;
  EXPECT_GT(s.at("commit_latency_ms").to_number<double>(), 0.0) << out;
  EXPECT_TRUE(s.at("queues").as_object().contains("commit")) << out;
}

// GET /admin/v1/nodes on one node: on the embedded store it shares with none; on Redis it is
// the one node connected to the bus (the multi-node listing: RedisNodes.* in redis_test.cc).
TEST_F(Admin, NodesShowsTheNodesSharingTheStore) {
  ASSERT_NO_FATAL_FAILURE(start());
  auto [rc, out] = ternctl("nodes");
  ASSERT_EQ(rc, 0) << out;
  auto v = json::parse(out).as_object();
  if (!on_redis_backend()) {
    EXPECT_FALSE(v.at("shared").as_bool()) << out;
    EXPECT_TRUE(v.at("nodes").as_array().empty()) << out;
    EXPECT_TRUE(v.at("subscribed").as_bool()) << out;
    EXPECT_EQ(jint(v, "clock_offset_ms"), 0) << out;
    return;
  }
  EXPECT_TRUE(v.at("shared").as_bool()) << out;
  const std::string self = jstr(v, "node");
  EXPECT_FALSE(self.empty()) << out;
  // The bus lists the live nodes every 500 ms, the first time as it starts, maybe before its
  // own subscription is made: await a list that holds this node (at most 10 s).
  for (int i = 0; i < 100 && v.at("nodes").as_array().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    v = admin("GET", "/admin/v1/nodes").obj();
  }
  EXPECT_TRUE(v.at("subscribed").as_bool()) << out;
  ASSERT_GE(jint(v, "listed_ms_ago"), 0) << dump(v);
  EXPECT_LT(std::llabs(jint(v, "clock_offset_ms")), 1000) << "Redis runs on this machine's clock: " << dump(v);
  EXPECT_EQ(dump(v.at("nodes")), R"([{"node":")" + self + R"(","self":true,"leaving":false,"suspected_ms":0}])");
}

}  // namespace
}  // namespace tern::test
