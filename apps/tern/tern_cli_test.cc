// The `tern` binary end to end: non-interactive commands with --json, and `tern chat`
// driven through a pseudo-terminal against a real ternd that is SIGKILLed and restarted
// under it. Fails when ternd or tern is not built (both are dependencies of this test's
// target). Every wait is bounded; everything runs on loopback.
#include "tern_cli_fixture.h"

namespace tern::cli {
namespace {
using namespace tern::cli::testing;
using namespace std::chrono_literals;

TEST_F(TernCli, CommandsPrintJsonAndKeepCredentialsPrivate) {
  Proc reg = tern("a", {"register", "alice", "--json"});
  ASSERT_EQ(reg.status, 0) << reg.err;
  auto o = parse_json(reg.out);
  EXPECT_EQ(o["user"].as_string(), "alice");
  EXPECT_EQ(reg.out.find("token"), std::string::npos) << "the token is never printed";
  struct stat st{};
  ASSERT_EQ(::stat((config("a") + "/tern").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((config("a") + "/tern/credentials.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(tern("a", {"register", "alice2"}).status, 0) << "refuses to overwrite without --force";
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  ASSERT_EQ(tern("c", {"register", "carol"}).status, 0);

  Proc sent = tern("a", {"send", "bob", "hello", "bob", "--json"});
  ASSERT_EQ(sent.status, 0) << sent.err;
  auto s = parse_json(sent.out);
  EXPECT_EQ(s["seq"].to_number<int64_t>(), 1);
  const std::string conv(s["conversation_id"].as_string());

  Proc hist = tern("b", {"history", "@alice", "--json"});
  ASSERT_EQ(hist.status, 0) << hist.err;
  auto h = parse_json(hist.out);
  EXPECT_EQ(h["conversation_id"].as_string(), conv);
  ASSERT_EQ(h["messages"].as_array().size(), 1u);
  EXPECT_EQ(h["messages"].as_array()[0].as_object().at("text").as_string(), "hello bob");

  Proc g = tern("a", {"group", "create", "team", "bob", "--json"});
  ASSERT_EQ(g.status, 0) << g.err;
  const std::string gid(parse_json(g.out)["conversation_id"].as_string());
  Proc add = tern("a", {"group", "add", "team", "carol", "--json"});
  ASSERT_EQ(add.status, 0) << add.err;
  EXPECT_NE(add.out.find("carol"), std::string::npos);
  ASSERT_EQ(tern("a", {"send", gid, "hi team"}).status, 0);
  Proc rm = tern("a", {"group", "remove", gid, "carol", "--json"});
  ASSERT_EQ(rm.status, 0) << rm.err;
  EXPECT_EQ(rm.out.find("carol"), std::string::npos);
  Proc list = tern("c", {"conversations", "--json"});
  ASSERT_EQ(list.status, 0);
  Proc denied = tern("c", {"send", gid, "let me in"});
  EXPECT_NE(denied.status, 0) << "a removed member is refused";

  Proc code = tern("a", {"device", "link-code", "--json"});
  ASSERT_EQ(code.status, 0) << code.err;
  const std::string c(parse_json(code.out)["code"].as_string());
  Proc link = tern("a2", {"device", "link", "alice", c, "--json"});
  ASSERT_EQ(link.status, 0) << link.err;
  EXPECT_EQ(parse_json(link.out)["device"].to_number<int64_t>(), 2);
  Proc again = tern("a3", {"device", "link", "alice", c});
  EXPECT_NE(again.status, 0) << "a link code works once";
  Proc hist2 = tern("a2", {"history", "bob", "--json"});
  ASSERT_EQ(hist2.status, 0) << hist2.err;
  EXPECT_EQ(parse_json(hist2.out)["messages"].as_array().size(), 1u);
}

TEST_F(TernCli, InteractiveChatThroughAPseudoTerminalSurvivesAServerRestart) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  ASSERT_EQ(tern("b", {"send", "alice", "earlier message"}).status, 0);  // history on open

  // Bob is an SDK client in this process.
  std::mutex mu;
  std::vector<client::Message> bob_got;
  client::Events ev;
  ev.on_message = [&](const client::Message& m) {
    std::lock_guard l(mu);
    bob_got.push_back(m);
  };
  auto bob = sdk("b", ev);
  ASSERT_TRUE(bob);
  auto bob_has = [&](const std::string& text) {
    std::lock_guard l(mu);
    for (const auto& m : bob_got)
      if (m.body == text) return true;
    return false;
  };

  Pty chat(tern_, config("a"), {"chat", "bob", "--server", server_->url()});
  ASSERT_TRUE(chat.wait_for("chat with bob")) << chat.tail();
  ASSERT_TRUE(chat.wait_for("earlier message")) << chat.tail();
  ASSERT_TRUE(chat.wait_for("[online]")) << chat.tail();

  // Typed on alice's terminal, delivered to bob; marks move to ✓✓ (bob's SDK acked it).
  chat.type("hello from the terminal\r");
  ASSERT_TRUE(eventually([&] { return bob_has("hello from the terminal"); })) << chat.tail();
  EXPECT_TRUE(chat.wait_for("hello from the terminal  ✓✓")) << chat.tail();

  // Read receipt, typing and presence shown.
  Seq seq = 0;
  {
    std::lock_guard l(mu);
    for (const auto& m : bob_got)
      if (m.body == "hello from the terminal") seq = m.seq;
  }
  bob->mark_read(bob_got.empty() ? "" : bob_got.back().conversation_id, seq);
  EXPECT_TRUE(chat.wait_for("✓✓ read")) << chat.tail();
  const std::string conv = [&] {
    std::lock_guard l(mu);
    return bob_got.back().conversation_id;
  }();
  bob->set_typing(conv, true);
  EXPECT_TRUE(chat.wait_for("bob is typing")) << chat.tail();
  EXPECT_TRUE(chat.wait_for("bob: online")) << chat.tail();

  // Bob writes; it appears on alice's screen.
  ASSERT_TRUE(bob->send(conv, "hi alice, from the sdk").ok());
  EXPECT_TRUE(chat.wait_for("bob: hi alice, from the sdk")) << chat.tail();

  // The server dies under the chat and comes back on the same port and data.
  server_->kill9();
  ASSERT_TRUE(chat.wait_for("offline, retrying")) << chat.tail();
  // Issue 13 item 6: with our connection gone, bob's presence is unknown, not "online".
  const size_t off = chat.find("offline, retrying");
  EXPECT_TRUE(chat.wait_for("bob: unknown", off)) << chat.tail();
  const auto restarted = server_->start(server_->port());
  ASSERT_TRUE(restarted.ok()) << restarted.error().message;
  ASSERT_TRUE(chat.wait_for("[online]", off)) << chat.tail() << "\nternd's stderr:\n" << server_->stderr_tail();
  const size_t back = chat.find("[online]", off);
  EXPECT_EQ(chat.text(off).substr(0, back - off).find("bob: online"), std::string::npos)
      << "presence shown while offline:\n" << chat.text(off);
  const size_t mark = chat.size();
  EXPECT_TRUE(chat.wait_for("bob: online", back)) << "presence back after the reconnect\n" << chat.tail();
  chat.type("after the restart\r");
  EXPECT_TRUE(eventually([&] { return bob_has("after the restart"); })) << chat.tail();
  ASSERT_TRUE(bob->send(conv, "welcome back").ok());
  EXPECT_TRUE(chat.wait_for("bob: welcome back", mark)) << chat.tail();

  chat.type("/quit\r");
  EXPECT_EQ(chat.wait_exit(), 0);
  bob->stop();
  // Exactly once each, in the order typed.
  std::lock_guard l(mu);
  std::vector<std::string> from_alice;
  for (const auto& m : bob_got)
    if (m.sender == "alice") from_alice.push_back(m.body);
  EXPECT_EQ(from_alice, (std::vector<std::string>{"hello from the terminal", "after the restart"}));
}

// Issue 13, item 1: a second group of the same name needs --force, an ambiguous name lists
// the candidates with their members, an empty name is refused.
// Issue 11: a file goes as an encrypted attachment; the other side sees it in history and
// downloads it; the server's files never hold its plaintext.
TEST_F(TernCli, SendFileAndDownloadIt) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  const std::string mark = "PLAINTEXT-MARK-7Hq2";
  std::string content;
  for (int i = 0; i < 20000; ++i) content += static_cast<char>(i * 31);
  content += mark;
  const std::string path = dir_ + "/photo.jpg";
  {
    std::ofstream f(path, std::ios::binary);
    f << content;
  }
  Proc sent = tern("a", {"send", "bob", "--file", path, "holiday"});
  ASSERT_EQ(sent.status, 0) << sent.err;
  EXPECT_NE(sent.out.find("sent to bob (seq 1)"), std::string::npos) << sent.out;
  Proc hist = tern("b", {"history", "alice"});
  ASSERT_EQ(hist.status, 0) << hist.err;
  EXPECT_NE(hist.out.find("holiday [attachment photo.jpg, " + std::to_string(content.size()) + " bytes"),
            std::string::npos)
      << hist.out;
  const std::string out = dir_ + "/got.jpg";
  Proc dl = tern("b", {"download", "alice", "1", "-o", out, "--json"});
  ASSERT_EQ(dl.status, 0) << dl.err;
  EXPECT_NE(dl.out.find("\"saved\""), std::string::npos) << dl.out;
  std::ifstream in(out, std::ios::binary);
  std::stringstream got;
  got << in.rdbuf();
  EXPECT_TRUE(got.str() == content);
  Proc again = tern("b", {"download", "alice", "1", "-o", out});
  EXPECT_EQ(again.status, 1);
  EXPECT_NE(again.err.find("not overwritten"), std::string::npos) << again.err;
  Proc none = tern("b", {"download", "alice", "7", "-o", dir_ + "/x"});
  EXPECT_EQ(none.status, 1);
  EXPECT_EQ(tern("a", {"send", "bob"}).status, 2) << "neither text nor --file";
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir_ + "/data")) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    EXPECT_EQ(ss.str().find(mark), std::string::npos) << e.path();
  }
}

TEST_F(TernCli, GroupNamesStayUsable) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("v", {"register", "vic"}).status, 0);
  ASSERT_EQ(tern("u", {"register", "uma"}).status, 0);

  Proc empty = tern("a", {"group", "create", "", "vic"});
  EXPECT_EQ(empty.status, 1);
  EXPECT_NE(empty.err.find("a group needs a name"), std::string::npos) << empty.err;

  Proc first = tern("a", {"group", "create", "hikers", "vic"});
  ASSERT_EQ(first.status, 0) << first.err;
  const std::string id1 = first.out.substr(0, first.out.find('\n'));
  Proc again = tern("a", {"group", "create", "hikers", "uma"});
  EXPECT_EQ(again.status, 1);
  EXPECT_NE(again.err.find("you already have a group named hikers"), std::string::npos) << again.err;
  EXPECT_NE(again.err.find(id1), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("--force"), std::string::npos) << again.err;
  EXPECT_EQ(parse_json(tern("a", {"conversations", "--json"}).out)["conversations"].as_array().size(), 1u)
      << "the refused group was not created";

  Proc forced = tern("a", {"group", "create", "hikers", "uma", "--force"});
  ASSERT_EQ(forced.status, 0) << forced.err;
  const std::string id2 = forced.out.substr(0, forced.out.find('\n'));
  Proc ambiguous = tern("a", {"send", "hikers", "hi"});
  EXPECT_EQ(ambiguous.status, 1);
  EXPECT_NE(ambiguous.err.find("several groups are named hikers"), std::string::npos) << ambiguous.err;
  EXPECT_NE(ambiguous.err.find(id1 + "  members: alice and vic"), std::string::npos) << ambiguous.err;
  EXPECT_NE(ambiguous.err.find(id2 + "  members: alice and uma"), std::string::npos) << ambiguous.err;
  EXPECT_EQ(tern("a", {"send", id2, "hi uma"}).status, 0) << "the id still works";
}

// Item 2: errors in the user's terms, and the exit codes.
TEST_F(TernCli, ErrorsSayWhatFailed) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  Proc g = tern("a", {"group", "create", "team", "bob"});
  ASSERT_EQ(g.status, 0) << g.err;
  const std::string gid = g.out.substr(0, g.out.find('\n'));
  ASSERT_EQ(tern("a", {"group", "remove", gid, "bob"}).status, 0);

  Proc removed = tern("b", {"send", gid, "let me in"});
  EXPECT_EQ(removed.status, 1);
  EXPECT_NE(removed.err.find("you are not a member of conversation " + gid), std::string::npos) << removed.err;
  EXPECT_EQ(removed.err.find("no such user"), std::string::npos) << removed.err;

  Proc missing = tern("b", {"history", "g-0123456789abcdef01234567"});
  EXPECT_EQ(missing.status, 1);
  // An id that does not exist reads like one we are not in: the server does not tell them
  // apart (ids reveal nothing to outsiders), and the message says both.
  EXPECT_NE(missing.err.find("you are not a member of conversation g-0123456789abcdef01234567"), std::string::npos)
      << missing.err;
  EXPECT_NE(missing.err.find("or it does not exist"), std::string::npos) << missing.err;

  Proc nobody = tern("b", {"send", "@nobody", "hi"});
  EXPECT_EQ(nobody.status, 1);
  EXPECT_NE(nobody.err.find("no such user: nobody"), std::string::npos) << nobody.err;

  DeadPort dead;
  ASSERT_TRUE(dead.ok());
  Proc refused = run_tern(tern_, config("b"), {"conversations", "--server", dead.url()});
  EXPECT_EQ(refused.status, 4);
  EXPECT_NE(refused.err.find("cannot reach the server at " + dead.url()), std::string::npos) << refused.err;
  EXPECT_EQ(refused.err.find("overloaded"), std::string::npos) << refused.err;
  Proc refused_json = run_tern(tern_, config("b"), {"conversations", "--json", "--server", dead.url()});
  EXPECT_EQ(refused_json.status, 4);
  EXPECT_EQ(parse_json(refused_json.out)["error"].as_string(), "unreachable");

  Proc path = run_tern(tern_, config("c"), {"register", "carol", "--server", server_->url() + "/v1"});
  EXPECT_EQ(path.status, 1);
  EXPECT_NE(path.err.find("has a path (/v1)"), std::string::npos) << path.err;
  EXPECT_NE(path.err.find("try " + server_->url()), std::string::npos) << path.err;
  EXPECT_EQ(path.err.find("token"), std::string::npos) << path.err;

  // The chat fails fast against a dead server instead of showing a blank screen.
  const auto t0 = std::chrono::steady_clock::now();
  Pty chat(tern_, config("b"), {"chat", "alice", "--server", dead.url()});
  EXPECT_EQ(chat.wait_exit(8s), 4) << chat.tail();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 8s);
  EXPECT_TRUE(chat.wait_for("connecting to " + dead.url())) << chat.tail();
  EXPECT_TRUE(chat.wait_for("cannot reach the server at " + dead.url())) << chat.tail();

  Proc help = run_tern(tern_, config("b"), {"--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("Exit codes: 0 done; 1 failed"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("4 cannot reach the server"), std::string::npos) << help.out;
  EXPECT_EQ(run_tern(tern_, config("b"), {"send"}).status, 2) << "a bad command line";
}

// Item 3: `tern send` with the server down keeps the message and says so; the next send
// delivers it first.
TEST_F(TernCli, SendWhileTheServerIsDownIsQueuedAndSentByTheNextSend) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  ASSERT_EQ(tern("a", {"send", "bob", "before"}).status, 0);

  server_->kill9();
  Proc down = tern("a", {"send", "bob", "while", "down"});
  EXPECT_EQ(down.status, 3) << down.err;
  EXPECT_NE(down.err.find("cannot reach the server at " + server_->url()), std::string::npos) << down.err;
  EXPECT_NE(down.err.find("queued, will be sent by the next `tern send` or `tern chat`"), std::string::npos) << down.err;
  Proc unknown = tern("a", {"send", "@carol", "hello?"});
  EXPECT_EQ(unknown.status, 4) << unknown.err;
  EXPECT_NE(unknown.err.find("not sent"), std::string::npos) << unknown.err;

  const auto restarted = server_->start(server_->port());

  ASSERT_TRUE(restarted.ok()) << restarted.error().message;
  Proc after = tern("a", {"send", "bob", "after"});
  ASSERT_EQ(after.status, 0) << after.err;
  EXPECT_NE(after.out.find("also sent 1 message(s) queued earlier"), std::string::npos) << after.out;

  Proc hist = tern("b", {"history", "alice", "--json"});
  ASSERT_EQ(hist.status, 0) << hist.err;
  std::vector<std::string> texts;
  const json::object h = parse_json(hist.out);
  for (const auto& m : h.at("messages").as_array()) texts.emplace_back(m.as_object().at("text").as_string());
  EXPECT_EQ(texts, (std::vector<std::string>{"before", "while down", "after"}));
}

// Item 4: the chat shows its own conversation only, system messages as sentences, and
// has commands (which are never sent).
TEST_F(TernCli, ChatShowsOneConversationWithSentencesAndCommands) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  ASSERT_EQ(tern("c", {"register", "carol"}).status, 0);
  ASSERT_EQ(tern("a", {"group", "create", "hikers", "bob"}).status, 0);
  ASSERT_EQ(tern("a", {"group", "add", "hikers", "carol"}).status, 0);
  ASSERT_EQ(tern("b", {"send", "hikers", "who brings the map?"}).status, 0);  // seq 4 (seq 3: bob:1's sender-key distribution)

  Proc hist = tern("b", {"history", "hikers"});
  ASSERT_EQ(hist.status, 0) << hist.err;
  EXPECT_NE(hist.out.find("* alice created the group hikers with bob"), std::string::npos) << hist.out;
  EXPECT_NE(hist.out.find("* alice added carol"), std::string::npos) << hist.out;
  EXPECT_EQ(hist.out.find("\"action\""), std::string::npos) << hist.out;

  Inbox bob_in;
  auto bob = sdk("b", bob_in.events());
  ASSERT_TRUE(bob);
  {
    // Alice's device takes seq 1-4 and acks them (bob's receipt says so), so that the chat
    // below has no replay and shows only its --history.
    Inbox alice_in;
    auto alice = sdk("a", alice_in.events());
    ASSERT_TRUE(alice);
    ASSERT_TRUE(eventually([&] { return bob_in.delivered_to("alice", 4); }));
    alice->stop();
  }

  Pty chat(tern_, config("a"), {"chat", "hikers", "--history", "1", "--server", server_->url()});
  ASSERT_TRUE(chat.wait_for("[online]")) << chat.tail();
  EXPECT_TRUE(chat.wait_for("bob: who brings the map?")) << chat.tail();
  EXPECT_EQ(chat.find("alice added carol"), std::string::npos) << "only --history 1\n" << chat.tail();

  // A direct message to alice is counted, not shown.
  auto direct = client::wait_for<std::string>([&](auto cb) { bob->api().create_direct("alice", std::move(cb)); });
  ASSERT_TRUE(direct.ok());
  ASSERT_TRUE(bob->send(*direct, "psst, only for alice").ok());
  EXPECT_TRUE(chat.wait_for("1 new elsewhere")) << chat.tail();
  EXPECT_EQ(chat.find("psst, only for alice"), std::string::npos) << chat.tail();

  size_t mark = chat.size();
  chat.type("/help\r");
  EXPECT_TRUE(chat.wait_for("/history N", mark)) << chat.tail();
  EXPECT_TRUE(chat.wait_for("/members", mark)) << chat.tail();
  mark = chat.size();
  chat.type("/history 5\r");
  EXPECT_TRUE(chat.wait_for("messages 1–3:", mark)) << chat.tail();
  EXPECT_TRUE(chat.wait_for("alice created the group hikers with bob", mark)) << chat.tail();
  EXPECT_TRUE(chat.wait_for("alice added carol", mark)) << chat.tail();
  EXPECT_EQ(chat.find("\"action\""), std::string::npos) << chat.tail();
  mark = chat.size();
  chat.type("/members\r");
  EXPECT_TRUE(chat.wait_for("members: you, bob and carol", mark)) << chat.tail();
  mark = chat.size();
  chat.type("/frobnicate\r");
  EXPECT_TRUE(chat.wait_for("unknown command /frobnicate (not sent)", mark)) << chat.tail();
  chat.type("//slash at the start\r");
  chat.type("an ordinary line\r");
  ASSERT_TRUE(eventually([&] { return bob_in.has("an ordinary line"); })) << chat.tail();
  EXPECT_EQ(bob_in.bodies(), (std::vector<std::string>{"/slash at the start", "an ordinary line"}))
      << "no command was sent";
  chat.type("/quit\r");
  EXPECT_EQ(chat.wait_exit(), 0);
  bob->stop();
}

// Item 5: in a group ✓✓ means every other member has the message; /seen tells who.
TEST_F(TernCli, GroupTicksWaitForEveryMember) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  ASSERT_EQ(tern("c", {"register", "carol"}).status, 0);
  ASSERT_EQ(tern("a", {"group", "create", "trio", "bob", "carol"}).status, 0);

  Inbox bob_in;
  auto bob = sdk("b", bob_in.events());
  ASSERT_TRUE(bob);
  Pty chat(tern_, config("a"), {"chat", "trio", "--server", server_->url()});
  ASSERT_TRUE(chat.wait_for("[online]")) << chat.tail();
  chat.type("hello trio\r");
  ASSERT_TRUE(eventually([&] { return bob_in.has("hello trio"); })) << chat.tail();
  // Bob's receipt has reached the chat once /seen reports it.
  size_t mark = 0;
  ASSERT_TRUE(eventually([&] {
    mark = chat.size();
    chat.type("/seen\r");
    return chat.wait_for("delivered to bob (not read yet)", mark, 1s);
  })) << chat.tail();
  EXPECT_TRUE(chat.wait_for("not delivered yet: carol", mark)) << chat.tail();
  EXPECT_EQ(chat.find("hello trio  ✓✓"), std::string::npos) << "one member of two is not everyone\n" << chat.tail();
  EXPECT_NE(chat.find("hello trio  ✓"), std::string::npos) << chat.tail();

  Inbox carol_in;
  auto carol = sdk("c", carol_in.events());
  ASSERT_TRUE(carol);
  EXPECT_TRUE(chat.wait_for("hello trio  ✓✓")) << chat.tail();

  Seq seq = 0;
  std::string conv;
  {
    std::lock_guard l(bob_in.mu);
    for (const auto& m : bob_in.got)
      if (m.body == "hello trio") seq = m.seq, conv = m.conversation_id;
  }
  bob->mark_read(conv, seq);
  ASSERT_TRUE(eventually([&] {
    mark = chat.size();
    chat.type("/seen\r");
    return chat.wait_for("read by bob", mark, 1s);
  })) << chat.tail();
  EXPECT_EQ(chat.find("✓✓ read"), std::string::npos) << chat.tail();
  carol->mark_read(conv, seq);
  EXPECT_TRUE(chat.wait_for("hello trio  ✓✓ read")) << chat.tail();
  chat.type("/quit\r");
  EXPECT_EQ(chat.wait_exit(), 0);
  bob->stop();
  carol->stop();
}

// Item 7: link codes as people type them; malformed ones cost no attempt.
TEST_F(TernCli, LinkCodesAcceptLowercaseAndNoDash) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  Proc code = tern("a", {"device", "link-code", "--json"});
  ASSERT_EQ(code.status, 0) << code.err;
  std::string c(parse_json(code.out)["code"].as_string());
  ASSERT_EQ(c.size(), 9u);
  for (int i = 0; i < 6; ++i) {  // more than the server's 5 wrong attempts
    Proc typo = tern("a2", {"device", "link", "alice", "abcd-ef0o"});
    EXPECT_EQ(typo.status, 1);
    EXPECT_NE(typo.err.find("a link code is 8 letters and digits"), std::string::npos) << typo.err;
  }
  std::string typed;
  for (char ch : c)
    if (ch != '-') typed.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(ch))));
  Proc link = tern("a2", {"device", "link", "alice", typed, "--json"});
  ASSERT_EQ(link.status, 0) << link.err;
  EXPECT_EQ(parse_json(link.out)["device"].to_number<int64_t>(), 2);
}

// Item 8: `not signed in` names the directory it looked in.
TEST_F(TernCli, NotSignedInNamesTheDirectory) {
  Proc who = tern("nobody", {"whoami"});
  EXPECT_EQ(who.status, 1);
  EXPECT_NE(who.err.find("not signed in: no credentials in " + config("nobody") + "/tern"), std::string::npos) << who.err;
}

// Issue 9: channels from the command line: create, join, post (admins only), info, leave,
// and the way into a private channel (an admin's add).
TEST_F(TernCli, ChannelCommands) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  ASSERT_EQ(tern("c", {"register", "carol"}).status, 0);

  Proc made = tern("a", {"channel", "create", "news", "--json"});
  ASSERT_EQ(made.status, 0) << made.err;
  auto m = parse_json(made.out);
  const std::string id(m["conversation_id"].as_string());
  EXPECT_EQ(id.rfind("ch-", 0), 0u) << id;
  EXPECT_TRUE(m["public"].as_bool());

  Proc joined = tern("b", {"channel", "join", id, "--json"});
  ASSERT_EQ(joined.status, 0) << joined.err;
  auto j = parse_json(joined.out);
  EXPECT_EQ(j["conversation_id"].as_string(), id);
  EXPECT_EQ(j["joined_seq"].to_number<int64_t>(), 1) << "the head (0: no posts yet) + 1";
  EXPECT_EQ(j["subscribers"].to_number<int64_t>(), 2);

  Proc refused = tern("b", {"channel", "post", id, "may", "I?", "--json"});
  EXPECT_EQ(refused.status, 1) << refused.out << refused.err;
  EXPECT_EQ(parse_json(refused.out)["error"].as_string(), "forbidden") << refused.out;

  Proc posted = tern("a", {"channel", "post", "news", "first", "post", "--json"});  // by name
  ASSERT_EQ(posted.status, 0) << posted.err;
  EXPECT_EQ(parse_json(posted.out)["seq"].to_number<int64_t>(), 1);
  EXPECT_EQ(parse_json(posted.out)["conversation_id"].as_string(), id);

  Proc hist = tern("b", {"history", id, "--json"});
  ASSERT_EQ(hist.status, 0) << hist.err;
  auto h = parse_json(hist.out);
  ASSERT_EQ(h["messages"].as_array().size(), 1u) << hist.out;
  EXPECT_EQ(h["messages"].as_array()[0].at("text").as_string(), "first post");

  Proc list = tern("b", {"conversations", "--json"});
  ASSERT_EQ(list.status, 0) << list.err;
  bool listed = false;
  auto convs = parse_json(list.out);  // kept: the loop below walks into it
  for (const auto& c : convs["conversations"].as_array())
    if (c.at("conversation_id").as_string() == id) {
      listed = true;
      EXPECT_EQ(c.at("type").as_string(), "channel");
      EXPECT_EQ(c.at("subscribers").to_number<int64_t>(), 2);
    }
  EXPECT_TRUE(listed) << list.out;
  Proc list_text = tern("b", {"conversations"});
  EXPECT_NE(list_text.out.find(id + "\tchannel\tnews\thead=1\t2 subscribers"), std::string::npos) << list_text.out;

  Proc info = tern("a", {"channel", "info", id, "--json"});
  ASSERT_EQ(info.status, 0) << info.err;
  auto i = parse_json(info.out);
  EXPECT_EQ(i["type"].as_string(), "channel");
  EXPECT_EQ(i["owner"].as_string(), "alice");
  EXPECT_EQ(i["subscribers"].to_number<int64_t>(), 2);
  EXPECT_EQ(i["head"].to_number<int64_t>(), 1);
  EXPECT_EQ(i["admins"].as_array().size(), 1u);
  Proc info_text = tern("b", {"channel", "info", "news"});
  ASSERT_EQ(info_text.status, 0) << info_text.err;
  EXPECT_NE(info_text.out.find("subscriber (read-only)"), std::string::npos) << info_text.out;
  EXPECT_NE(info_text.out.find("owner       alice"), std::string::npos) << info_text.out;

  EXPECT_EQ(tern("a", {"channel", "leave", id}).status, 1) << "the owner cannot leave";
  Proc left = tern("b", {"channel", "leave", id, "--json"});
  ASSERT_EQ(left.status, 0) << left.err;
  EXPECT_TRUE(parse_json(left.out)["left"].as_bool());
  EXPECT_NE(tern("b", {"history", id}).status, 0) << "no longer a subscriber";

  // Private: joining by id fails as if it did not exist; an admin's add lets carol in, and an
  // admin she becomes can post.
  Proc priv = tern("a", {"channel", "create", "board", "--private", "--json"});
  ASSERT_EQ(priv.status, 0) << priv.err;
  const std::string pid(parse_json(priv.out)["conversation_id"].as_string());
  Proc nope = tern("c", {"channel", "join", pid, "--json"});
  EXPECT_EQ(nope.status, 1) << nope.out;
  EXPECT_EQ(parse_json(nope.out)["error"].as_string(), "not_found") << nope.out;
  Proc added = tern("a", {"channel", "add", pid, "carol", "--json"});
  ASSERT_EQ(added.status, 0) << added.err;
  EXPECT_EQ(parse_json(added.out)["subscribers"].to_number<int64_t>(), 2);
  EXPECT_EQ(tern("c", {"channel", "post", pid, "hello"}).status, 1);
  Proc admins = tern("a", {"channel", "admin", pid, "carol", "--json"});
  ASSERT_EQ(admins.status, 0) << admins.err;
  EXPECT_EQ(admins.out.find("carol") != std::string::npos, true) << admins.out;
  EXPECT_EQ(tern("c", {"channel", "post", pid, "hello"}).status, 0);
  EXPECT_EQ(tern("a", {"channel", "join", "not-a-channel"}).status, 1);
  EXPECT_EQ(tern("a", {"group", "add", "news", "carol"}).status, 1) << "a channel is not a group";
}

// `tern chat` on a channel: a subscriber reads posts as they come and cannot type; an admin
// posts from the input line.
TEST_F(TernCli, ChatOnAChannelIsReadOnlyForSubscribers) {
  ASSERT_EQ(tern("a", {"register", "alice"}).status, 0);
  ASSERT_EQ(tern("b", {"register", "bob"}).status, 0);
  Proc made = tern("a", {"channel", "create", "news", "--json"});
  ASSERT_EQ(made.status, 0) << made.err;
  const std::string id(parse_json(made.out)["conversation_id"].as_string());
  ASSERT_EQ(tern("b", {"channel", "join", id}).status, 0);
  ASSERT_EQ(tern("a", {"channel", "post", id, "before", "the", "chat"}).status, 0);

  Pty reader(tern_, config("b"), {"chat", id, "--server", server_->url()});
  ASSERT_TRUE(reader.wait_for("[online]")) << reader.tail();
  EXPECT_TRUE(reader.wait_for("channel (read-only) news")) << reader.tail();
  EXPECT_TRUE(reader.wait_for("only the channel's admins post here")) << reader.tail();
  EXPECT_TRUE(reader.wait_for("alice: before the chat")) << reader.tail();
  reader.type("hello there\r");  // ignored: nothing is typed into a read-only channel

  Pty admin(tern_, config("a"), {"chat", "news", "--server", server_->url()});
  ASSERT_TRUE(admin.wait_for("[online]")) << admin.tail();
  EXPECT_TRUE(admin.wait_for("you are an admin")) << admin.tail();
  admin.type("live from the chat\r");
  EXPECT_TRUE(reader.wait_for("alice: live from the chat")) << reader.tail();
  size_t mark = reader.size();
  reader.type("/members\r");
  EXPECT_TRUE(reader.wait_for("2 subscribers; admins: alice", mark)) << reader.tail();
  reader.type("/quit\r");
  EXPECT_EQ(reader.wait_exit(), 0);
  admin.type("/quit\r");
  EXPECT_EQ(admin.wait_exit(), 0);

  // Only alice's two posts are in the channel: bob's typing went nowhere.
  Proc info = tern("a", {"channel", "info", id, "--json"});
  ASSERT_EQ(info.status, 0) << info.err;
  EXPECT_EQ(parse_json(info.out)["head"].to_number<int64_t>(), 2) << info.out;
  Proc piped = tern("b", {"chat", id});  // stdin is /dev/null: the line mode
  EXPECT_EQ(piped.status, 0) << piped.err;
  EXPECT_NE(piped.out.find("read-only: only the channel's admins post here"), std::string::npos) << piped.out;
}

// Issue 7: `tern` encrypts by default. A canary sent through the CLI (direct and group)
// reaches bob's `tern history --json` as text, and is nowhere in the server's data directory,
// its log output (at debug level) or what HTTP backfill returns; the receiving device's own
// store does hold it (so the search below can find it).

}  // namespace
}  // namespace tern::cli
