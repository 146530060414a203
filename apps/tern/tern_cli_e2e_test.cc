// The `tern` binary end to end, encryption: no plaintext reaches the server, safety numbers and
// identity warnings, keyrings under a passphrase, a private CA, history for a linked device.
// Same fixture as tern_cli_test.cc.
#include "tern_cli_fixture.h"

namespace tern::cli {
namespace {
using namespace tern::cli::testing;
using namespace std::chrono_literals;

TEST_F(TernCli, PlaintextCanaryNeverReachesTheServer) {
  server_->stop();
  server_->set_log_level("debug");
  const auto restarted = server_->start(server_->port());
  ASSERT_TRUE(restarted.ok()) << restarted.error().message;
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  const std::string canary = "CANARY-e2e-5fQ9x", group_canary = "CANARY-group-Zr81k";
  Proc sent = tern("a", {"send", "bob", canary, "--json"});
  ASSERT_EQ(sent.status, 0) << sent.err;
  const std::string conv(parse_json(sent.out)["conversation_id"].as_string());
  ASSERT_EQ(tern("a", {"group", "create", "crew", "bob"}).status, 0);
  Proc gsent = tern("a", {"send", "crew", group_canary});
  ASSERT_EQ(gsent.status, 0) << gsent.err;

  for (const auto& [target, text] : {std::pair{"alice", canary}, std::pair{"crew", group_canary}}) {
    Proc hist = tern("b", {"history", target, "--json"});
    ASSERT_EQ(hist.status, 0) << hist.err;
    std::vector<std::string> texts;
    const json::object h = parse_json(hist.out);
    for (const auto& m : h.at("messages").as_array())
      if (!m.as_object().contains("system")) texts.emplace_back(m.as_object().at("text").as_string());
    EXPECT_EQ(texts, std::vector<std::string>{text});
  }
  auto contains_canary = [&](const std::filesystem::path& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str().find("CANARY-") != std::string::npos;
  };
  size_t files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir_ + "/data")) {
    if (!e.is_regular_file()) continue;
    ++files;
    EXPECT_FALSE(contains_canary(e.path())) << e.path();
  }
  EXPECT_GT(files, 0u);
  EXPECT_FALSE(contains_canary(server_->stdout_path()));
  EXPECT_FALSE(contains_canary(server_->stderr_path()));
  EXPECT_GT(std::filesystem::file_size(server_->stdout_path()) + std::filesystem::file_size(server_->stderr_path()), 0u);
  EXPECT_TRUE(contains_canary(config("b") + "/tern/state.sqlite")) << "bob's own history holds the text";
  client::IoThread io;
  auto url = client::parse_server_url(server_->url());
  ASSERT_TRUE(url.ok());
  client::Api api(io.context(), *url, saved("b").token);
  auto page = client::wait_for<client::HistoryPage>([&](auto cb) { api.history(conv, 0, 100, std::move(cb)); });
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->messages.size(), 1u);
  EXPECT_FALSE(page->messages[0].body.empty());
  EXPECT_EQ(page->messages[0].body.find("CANARY-"), std::string::npos);
}

// `tern verify` shows both sides the same safety number; a re-installed contact makes
// `tern history` warn until it is verified.
TEST_F(TernCli, VerifyAndIdentityChangeWarnings) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  Proc va = tern("a", {"verify", "bob", "--json"}), vb = tern("b", {"verify", "alice", "--json"});
  ASSERT_EQ(va.status, 0) << va.err;
  ASSERT_EQ(vb.status, 0) << vb.err;
  const json::object oa = parse_json(va.out), ob = parse_json(vb.out);
  const std::string number(oa.at("devices").as_array().at(0).as_object().at("safety_number").as_string());
  EXPECT_EQ(number.size(), 60u);
  EXPECT_EQ(number, ob.at("devices").as_array().at(0).as_object().at("safety_number").as_string());
  ASSERT_EQ(tern("a", {"send", "bob", "first"}).status, 0);
  // bob re-installs: new keys, published by his next send.
  std::filesystem::remove_all(config("b") + "/tern/keys");
  ASSERT_EQ(tern("b", {"send", "alice", "new keys"}).status, 0);
  ASSERT_EQ(tern("a", {"send", "bob", "second"}).status, 0);
  Proc hist = tern("a", {"history", "bob"});
  ASSERT_EQ(hist.status, 0) << hist.err;
  EXPECT_NE(hist.err.find("bob's identity key changed"), std::string::npos) << hist.err;
  EXPECT_NE(hist.out.find("bob: new keys"), std::string::npos) << hist.out;
  Proc chat = tern("a", {"chat", "bob"});  // stdin is /dev/null: the line mode
  EXPECT_EQ(chat.status, 0) << chat.err;
  EXPECT_NE((chat.out + chat.err).find("bob's identity key changed"), std::string::npos) << chat.out << chat.err;
  Proc again = tern("a", {"verify", "bob"});
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_NE(again.out.find("bob device 1:"), std::string::npos) << again.out;
  EXPECT_EQ(tern("a", {"history", "bob"}).err.find("identity key changed"), std::string::npos) << "verified";
  Proc bh = tern("b", {"history", "alice"});
  EXPECT_NE(bh.out.find("alice: second"), std::string::npos) << bh.out;
}

// The keys protected by a passphrase instead of the key file: register and send with it, a
// wrong one is a clear error that changes nothing, and `tern keys` switches both ways.
TEST_F(TernCli, KeysProtectedByAPassphrase) {
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text << "\n";
    return path;
  };
  const std::string right = write("right", "correct horse"), wrong = write("wrong", "battery staple");
  ASSERT_EQ(tern("a", {"register", "alice", "--passphrase-file", right}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  const std::string keys = config("a") + "/tern/keys";
  EXPECT_FALSE(std::filesystem::exists(keys + "/keyring.key")) << "no key file in passphrase mode";
  EXPECT_TRUE(std::filesystem::exists(keys + "/keyring.state"));
  Proc sent = tern("a", {"send", "bob", "hello", "--passphrase-file", right});
  ASSERT_EQ(sent.status, 0) << sent.err;
  Proc bad = tern("a", {"send", "bob", "again", "--passphrase-file", wrong});
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("wrong passphrase"), std::string::npos) << bad.err;
  Proc missing = tern("a", {"send", "bob", "again", "--passphrase-file", dir_ + "/no-such-file"});
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.err.find("cannot read the passphrase file"), std::string::npos) << missing.err;
  Proc empty = tern("a", {"send", "bob", "again", "--passphrase-file", write("empty", "")});
  EXPECT_NE(empty.status, 0);
  EXPECT_NE(empty.err.find("is empty"), std::string::npos) << empty.err;
  Proc none = tern("a", {"send", "bob", "again"});  // no passphrase given: refused, not replaced
  EXPECT_NE(none.status, 0);
  EXPECT_NE(none.err.find("passphrase"), std::string::npos) << none.err;
  // Back to a key file, then a new passphrase.
  Proc un = tern("a", {"keys", "unprotect", "--passphrase-file", right});
  ASSERT_EQ(un.status, 0) << un.err;
  EXPECT_TRUE(std::filesystem::exists(keys + "/keyring.key"));
  ASSERT_EQ(tern("a", {"send", "bob", "key file"}).status, 0);
  Proc pro = tern("a", {"keys", "protect", "--new-passphrase-file", wrong, "--json"});
  ASSERT_EQ(pro.status, 0) << pro.err;
  EXPECT_EQ(parse_json(pro.out).at("protected_by").as_string(), "passphrase");
  EXPECT_FALSE(std::filesystem::exists(keys + "/keyring.key"));
  ASSERT_EQ(tern("a", {"send", "bob", "new passphrase", "--passphrase-file", wrong}).status, 0);
  // bob reads all three sessions' messages: the keys survived every switch.
  Proc hist = tern("b", {"history", "alice"});
  ASSERT_EQ(hist.status, 0) << hist.err;
  for (const char* text : {"alice: hello", "alice: key file", "alice: new passphrase"})
    EXPECT_NE(hist.out.find(text), std::string::npos) << text << "\n" << hist.out;
}

// An https:// server with a private CA: --ca on register is saved with the credentials and
// used by later commands; without it the certificate does not verify and tern says so.
TEST_F(TernCli, CaFlagTrustsAPrivateCaForAnHttpsServer) {
  auto sh = [](const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; };
  const std::string pki = dir_ + "/pki";
  std::filesystem::create_directories(pki);
  std::ofstream(pki + "/ext.cnf") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  ASSERT_TRUE(sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=cli-ca"
                 " -keyout " + pki + "/ca.key -out " + pki + "/ca.pem"));
  ASSERT_TRUE(sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost -keyout " +
                 pki + "/srv.key -out " + pki + "/srv.csr"));
  ASSERT_TRUE(sh("openssl x509 -req -days 2 -in " + pki + "/srv.csr -CA " + pki + "/ca.pem -CAkey " + pki +
                 "/ca.key -set_serial 7 -extfile " + pki + "/ext.cnf -out " + pki + "/srv.pem"));
  TerndProcess tls(ternd_, dir_ + "/tls-data", {"--tls-cert", pki + "/srv.pem", "--tls-key", pki + "/srv.key"});
  auto started = tls.start();
  ASSERT_TRUE(started.ok()) << started.error().message;
  const std::string url = "https://127.0.0.1:" + std::to_string(tls.port());

  Proc t = run_tern(tern_, config("t"), {"register", "tina", "--json", "--server", url, "--ca", pki + "/ca.pem"});
  ASSERT_EQ(t.status, 0) << t.err;
  std::ifstream in(config("t") + "/tern/credentials.json");
  std::stringstream creds;
  creds << in.rdbuf();
  EXPECT_EQ(parse_json(creds.str())["ca"].as_string(), pki + "/ca.pem");
  Proc u = run_tern(tern_, config("u"), {"register", "uma", "--server", url, "--ca", pki + "/ca.pem"});
  ASSERT_EQ(u.status, 0) << u.err;
  // Later commands use the saved server and CA (no flags).
  Proc sent = run_tern(tern_, config("t"), {"send", "uma", "hello over tls", "--json"});
  ASSERT_EQ(sent.status, 0) << sent.err;
  Proc hist = run_tern(tern_, config("u"), {"history", "@tina", "--json"});
  ASSERT_EQ(hist.status, 0) << hist.err;
  EXPECT_NE(hist.out.find("hello over tls"), std::string::npos) << hist.out;

  // Without the CA: a clear error, not "unreachable".
  Proc v = run_tern(tern_, config("v"), {"register", "vera", "--server", url});
  EXPECT_NE(v.status, 0);
  EXPECT_NE(v.err.find("tls: the server's certificate did not verify"), std::string::npos) << v.err;
}

// Issue 7: a device linked later shows recent history, decrypted, in `tern history` (sent by
// alice:1 over their pairwise session: docs/crypto.md, "History for a newly linked device").
TEST_F(TernCli, ALinkedDeviceShowsRecentHistoryDecrypted) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  Proc first = tern("a", {"send", "bob", "history canary 1", "--json"});
  ASSERT_EQ(first.status, 0) << first.err;
  const std::string conv(parse_json(first.out)["conversation_id"].as_string());
  ASSERT_EQ(tern("b", {"send", "alice", "history canary 2"}).status, 0);
  Proc code = tern("a", {"device", "link-code", "--json"});
  ASSERT_EQ(code.status, 0) << code.err;
  Proc link = tern("a2", {"device", "link", "alice", std::string(parse_json(code.out)["code"].as_string()), "--json"});
  ASSERT_EQ(link.status, 0) << link.err;
  {
    auto a1 = sdk("a");  // receives bob's message, then answers alice:2's request
    ASSERT_TRUE(a1);
    ASSERT_TRUE(eventually([&] {
      auto h = a1->local_history(conv, 0, 10);
      return h.ok() && h->size() == 2;
    }));
    std::atomic<size_t> entries{0};
    client::Events ev;
    ev.on_history_received = [&entries](size_t n) { entries += n; };
    auto a2 = sdk("a2", std::move(ev));
    ASSERT_TRUE(a2);
    EXPECT_TRUE(eventually([&] { return entries == 2; }));
    a2->stop();
    a1->stop();
  }
  Proc hist = tern("a2", {"history", "bob", "--json"});
  ASSERT_EQ(hist.status, 0) << hist.err;
  auto messages = parse_json(hist.out)["messages"].as_array();
  ASSERT_EQ(messages.size(), 2u) << hist.out;
  EXPECT_EQ(messages[0].as_object().at("text").as_string(), "history canary 1");
  EXPECT_EQ(messages[1].as_object().at("text").as_string(), "history canary 2");
  EXPECT_FALSE(messages[0].as_object().contains("undecryptable"));
}


}  // namespace
}  // namespace tern::cli
