// The `tern` binary end to end: non-interactive commands with --json, and `tern chat`
// driven through a pseudo-terminal against a real ternd that is SIGKILLed and restarted
// under it. Fails when ternd or tern is not built (both are dependencies of this test's
// target). Every wait is bounded; everything runs on loopback.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
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

#include "client/api.h"
#include "client/blocking.h"
#include "client/io_thread.h"
#include "client/client.h"
#include "client/testing/ternd_process.h"
#include "client/attachments.h"
#include "format.h"
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

// A loopback port where nothing listens: bound (so nobody else gets it) but not listening,
// so connecting to it is refused at once. Closed on destruction.
class DeadPort {
 public:
  DeadPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port_ = ntohs(a.sin_port);
  }
  ~DeadPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  bool ok() const { return port_ != 0; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

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
  // Output from `from` on.
  std::string text(size_t from = 0) {
    std::lock_guard l(mu_);
    return from < out_.size() ? out_.substr(from) : std::string();
  }
  // Position of `needle` at or after `from`, or npos.
  size_t find(const std::string& needle, size_t from = 0) {
    std::lock_guard l(mu_);
    return out_.find(needle, from);
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
    ASSERT_FALSE(ternd_.empty() || tern_.empty()) << "ternd or tern not built (TERN_BIN_DIR or build/bin)";
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

  // An SDK client of `who` (registered by the CLI), started: end-to-end like `tern` itself,
  // with that config's store and keys (so `tern` cannot run for `who` meanwhile).
  std::unique_ptr<client::Client> sdk(const std::string& who, client::Events ev = {}) {
    client::Options o;
    o.server = server_->url();
    o.credentials = saved(who);
    o.reconnect = {50, 500, 0};
    o.store_path = config(who) + "/tern/state.sqlite";
    o.keyring_dir = config(who) + "/tern/keys";
    auto c = client::Client::create(o, std::move(ev));
    EXPECT_TRUE(c.ok());
    if (!c.ok()) return nullptr;
    (*c)->start();
    return std::move(*c);
  }

  std::string ternd_, tern_, dir_;
  std::unique_ptr<TerndProcess> server_;
};

// Messages an SDK client received, for the tests to wait on.
struct Inbox {
  std::mutex mu;
  std::vector<client::Message> got;
  std::vector<client::Receipt> receipts;
  client::Events events() {
    client::Events ev;
    ev.on_message = [this](const client::Message& m) {
      std::lock_guard l(mu);
      got.push_back(m);
    };
    ev.on_receipt = [this](const client::Receipt& r) {
      std::lock_guard l(mu);
      receipts.push_back(r);
    };
    return ev;
  }
  bool delivered_to(const std::string& user, Seq seq) {
    std::lock_guard l(mu);
    for (const auto& r : receipts)
      if (r.user == user && r.seq >= seq) return true;
    return false;
  }
  bool has(const std::string& text) {
    std::lock_guard l(mu);
    for (const auto& m : got)
      if (m.body == text) return true;
    return false;
  }
  std::vector<std::string> bodies() {
    std::lock_guard l(mu);
    std::vector<std::string> v;
    for (const auto& m : got)
      if (!m.system_json) v.push_back(m.body);
    return v;
  }
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
  ASSERT_TRUE(server_->start(server_->port()).ok());
  ASSERT_TRUE(chat.wait_for("[online]", off)) << chat.tail();
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

  ASSERT_TRUE(server_->start(server_->port()).ok());
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
TEST_F(TernCli, PlaintextCanaryNeverReachesTheServer) {
  server_->stop();
  server_->set_log_level("debug");
  ASSERT_TRUE(server_->start(server_->port()).ok());
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
