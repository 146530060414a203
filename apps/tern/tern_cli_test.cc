// The `tern` binary end to end: non-interactive commands with --json, and `tern chat`
// driven through a pseudo-terminal against a real ternd that is SIGKILLed and restarted
// under it. Skipped with a message when ternd or tern is not built. Every wait is bounded.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <sstream>
#include <thread>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "client/blocking.h"
#include "client/client.h"
#include "client/testing/ternd_process.h"
#include "terminal.h"

namespace tern::cli {
namespace {
using namespace std::chrono_literals;
namespace json = boost::json;
using client::testing::TerndProcess;

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

struct Proc {
  int status = -1;
  std::string out, err;
};

// Runs tern with XDG_CONFIG_HOME=config; at most 30 s.
Proc run_tern(const std::string& tern, const std::string& config, const std::vector<std::string>& args) {
  int out_pipe[2], err_pipe[2];
  if (::pipe(out_pipe) != 0 || ::pipe(err_pipe) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::setenv("XDG_CONFIG_HOME", config.c_str(), 1);
    std::vector<char*> argv{const_cast<char*>(tern.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(tern.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  Proc r;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0 && std::chrono::steady_clock::now() < deadline) {
    if (::poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  if (open_fds > 0) ::kill(pid, SIGKILL);
  ::waitpid(pid, &r.status, 0);
  r.status = WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1;
  return r;
}

json::object parse_json(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  EXPECT_FALSE(ec) << text;
  return !ec && v.is_object() ? v.as_object() : json::object{};
}

// `tern chat` on a pseudo-terminal: everything it prints is collected by a reader thread.
class Pty {
 public:
  Pty(const std::string& tern, const std::string& config, const std::vector<std::string>& args) {
    winsize ws{};
    ws.ws_row = 30;
    ws.ws_col = 120;
    pid_ = ::forkpty(&master_, nullptr, nullptr, &ws);
    if (pid_ == 0) {
      ::setenv("XDG_CONFIG_HOME", config.c_str(), 1);
      ::setenv("TERM", "xterm", 1);
      std::vector<char*> argv{const_cast<char*>(tern.c_str())};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(tern.c_str(), argv.data());
      ::_exit(127);
    }
    reader_ = std::thread([this] {
      char buf[4096];
      while (!stop_) {
        pollfd p{master_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        ssize_t n = ::read(master_, buf, sizeof buf);
        if (n <= 0) break;  // the child closed the terminal
        std::lock_guard l(mu_);
        out_.append(buf, static_cast<size_t>(n));
      }
    });
  }
  ~Pty() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
    stop_ = true;
    reader_.join();
    ::close(master_);
  }
  void type(const std::string& s) { (void)!::write(master_, s.data(), s.size()); }
  // Output since `from` (a mark taken with size()) contains `needle`.
  bool wait_for(const std::string& needle, size_t from = 0, std::chrono::milliseconds timeout = 20s) {
    return eventually(
        [&] {
          std::lock_guard l(mu_);
          return out_.find(needle, std::min(from, out_.size())) != std::string::npos;
        },
        timeout);
  }
  size_t size() {
    std::lock_guard l(mu_);
    return out_.size();
  }
  std::string tail(size_t n = 2000) {
    std::lock_guard l(mu_);
    return out_.size() > n ? out_.substr(out_.size() - n) : out_;
  }
  // Exit status, or -1 if it did not exit in time.
  int wait_exit(std::chrono::milliseconds timeout = 10s) {
    int status = 0;
    const bool done = eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
    if (!done) return -1;
    exited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  int master_ = -1;
  pid_t pid_ = -1;
  bool exited_ = false;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string out_;
  std::thread reader_;
};

class TernCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ternd_ = client::testing::find_ternd();
    tern_ = client::testing::find_binary("tern");
    if (ternd_.empty() || tern_.empty()) GTEST_SKIP() << "ternd or tern not built (TERN_BIN_DIR or build/bin)";
    dir_ = client::testing::make_temp_dir("tern-cli-test");
    server_ = std::make_unique<TerndProcess>(ternd_, dir_ + "/data");
    auto r = server_->start();
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  void TearDown() override {
    server_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string config(const std::string& who) { return dir_ + "/" + who; }
  Proc tern(const std::string& who, std::vector<std::string> args) {
    args.push_back("--server");
    args.push_back(server_->url());
    return run_tern(tern_, config(who), args);
  }
  // Credentials saved by `tern register`, to drive the other side with the SDK.
  client::Credentials saved(const std::string& who) {
    std::ifstream in(config(who) + "/tern/credentials.json");
    std::stringstream ss;
    ss << in.rdbuf();
    auto o = parse_json(ss.str());
    return client::Credentials{std::string(o["user"].as_string()), static_cast<uint32_t>(o["device"].to_number<int64_t>()),
                               std::string(o["token"].as_string())};
  }

  std::string ternd_, tern_, dir_;
  std::unique_ptr<TerndProcess> server_;
};

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
  client::Options o;
  o.server = server_->url();
  o.credentials = saved("b");
  o.reconnect = {50, 500, 0};
  auto bob = client::Client::create(o, ev);
  ASSERT_TRUE(bob.ok());
  (*bob)->start();
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
  (*bob)->mark_read(bob_got.empty() ? "" : bob_got.back().conversation_id, seq);
  EXPECT_TRUE(chat.wait_for("✓✓ read")) << chat.tail();
  const std::string conv = [&] {
    std::lock_guard l(mu);
    return bob_got.back().conversation_id;
  }();
  (*bob)->set_typing(conv, true);
  EXPECT_TRUE(chat.wait_for("bob is typing")) << chat.tail();
  EXPECT_TRUE(chat.wait_for("bob: online")) << chat.tail();

  // Bob writes; it appears on alice's screen.
  ASSERT_TRUE((*bob)->send(conv, "hi alice, from the sdk").ok());
  EXPECT_TRUE(chat.wait_for("bob: hi alice, from the sdk")) << chat.tail();

  // The server dies under the chat and comes back on the same port and data.
  server_->kill9();
  ASSERT_TRUE(chat.wait_for("offline, retrying")) << chat.tail();
  ASSERT_TRUE(server_->start(server_->port()).ok());
  const size_t mark = chat.size();
  ASSERT_TRUE(chat.wait_for("[online]", mark)) << chat.tail();
  chat.type("after the restart\r");
  EXPECT_TRUE(eventually([&] { return bob_has("after the restart"); })) << chat.tail();
  ASSERT_TRUE((*bob)->send(conv, "welcome back").ok());
  EXPECT_TRUE(chat.wait_for("bob: welcome back", mark)) << chat.tail();

  chat.type("/quit\r");
  EXPECT_EQ(chat.wait_exit(), 0);
  (*bob)->stop();
  // Exactly once each, in the order typed.
  std::lock_guard l(mu);
  std::vector<std::string> from_alice;
  for (const auto& m : bob_got)
    if (m.sender == "alice") from_alice.push_back(m.body);
  EXPECT_EQ(from_alice, (std::vector<std::string>{"hello from the terminal", "after the restart"}));
}

TEST(Terminal, UntrustedTextIsMadePrintable) {
  EXPECT_EQ(printable("hi\x1b[2Jthere"), "hi?[2Jthere");
  EXPECT_EQ(printable("tab\tnl\n"), "tab nl?");
  EXPECT_EQ(printable("ok ✓"), "ok ✓");
  EXPECT_EQ(printable("\xc2\x9b" "x"), "?x");       // C1 CSI
  EXPECT_EQ(printable("\xff"), "\xEF\xBF\xBD");      // invalid UTF-8
  EXPECT_EQ(clip("héllo", 2), "hé");
  EXPECT_EQ(width("✓✓ read"), 7u);
  std::string s = "añ✓";
  pop_code_point(s);
  EXPECT_EQ(s, "añ");
  pop_code_point(s);
  EXPECT_EQ(s, "a");
  EXPECT_TRUE(valid_utf8("✓"));
  EXPECT_FALSE(valid_utf8("\xe2\x9c"));
}

}  // namespace
}  // namespace tern::cli
