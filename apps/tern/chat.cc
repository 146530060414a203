#include "chat.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <ctime>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <set>

#include "base/clock.h"
#include "client/blocking.h"
#include "client/client.h"
#include "client/errors.h"
#include "format.h"
#include "media_commands.h"
#include "terminal.h"

namespace tern::cli {
namespace {
using namespace std::chrono_literals;

constexpr size_t kMaxLines = 1000;          // transcript kept in memory (oldest dropped)
constexpr int64_t kTypingShownMs = 6'000;   // a typing indicator without news fades
constexpr int64_t kTypingIdleMs = 4'000;    // our own: "stopped typing" after this idle
constexpr int64_t kTypingRefreshMs = 3'000; // our own: repeat "typing" while typing

std::atomic<bool> g_quit{false};
void on_signal(int) { g_quit = true; }

std::string hhmm(int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M", &tm);
  return buf;
}

struct Line {
  Seq seq = 0;
  std::string sender;
  int64_t ts = 0;
  std::string text;  // already printable
  bool own = false;
  std::string client_msg_id;
  bool confirmed = false;
  std::string failed;   // why the server refused it
  bool notice = false;  // the chat's own text (command output), not a message
};

constexpr const char* kHelp[] = {
    "/help            this list",
    "/quit (/q)       leave (Ctrl-C or Ctrl-D too)",
    "/history N       show the N messages before the oldest one on screen",
    "/members         who is in this conversation (a channel: subscribers and admins)",
    "/seen [SEQ]      who has your message SEQ (default: your last one): delivered, read",
    "/save SEQ [PATH] save the attachment(s) of message SEQ (here, or into PATH)",
    "//text           send a message that starts with /",
    "Marks on your messages: ... waiting, ✓ on the server, ✓✓ delivered to everyone, ✓✓ read by everyone.",
    "Files and media are not supported yet.",
};

// Everything on screen. Both the io thread (events) and the main thread (keys) change it;
// one mutex guards it and the terminal output.
class Screen {
 public:
  // `read_only`: a channel where the user is not an admin: no input line, only commands.
  Screen(std::string self, Target target, bool tty, bool read_only)
      : self_(std::move(self)), t_(std::move(target)), tty_(tty), read_only_(read_only), others_(t_.others) {}

  void add_history(const std::vector<client::Message>& msgs) {
    std::lock_guard l(mu_);
    for (const auto& m : msgs) add_message_locked(m);
    draw_locked();
  }
  // Returns true when the message is new for this conversation (the caller marks it read).
  bool on_message(const client::Message& m) {
    std::lock_guard l(mu_);
    bool fresh = false;
    if (m.conversation_id == t_.conversation_id) {
      fresh = add_message_locked(m);
      typing_until_.erase(m.sender);
      if (m.system_json) apply_membership_locked(*m.system_json);
    } else {
      // Only the chosen conversation is shown; the header counts what arrived elsewhere.
      ++elsewhere_;
      if (!tty_) std::cout << "* a new message in another conversation (" << printable(m.conversation_id) << ")"
                           << std::endl;
    }
    draw_locked();
    return fresh;
  }
  // A disappearing message reached its expires_at: its text goes from the screen (and the
  // chat keeps nothing else of it).
  void on_expired(const std::string& conversation_id, Seq seq) {
    std::lock_guard l(mu_);
    if (conversation_id != t_.conversation_id) return;
    for (auto& ln : lines_)
      if (!ln.notice && ln.seq == seq) ln.text = "(expired)";
    draw_locked();
  }
  // Lines of the chat's own (command output, errors), not messages.
  void notice(const std::vector<std::string>& texts) {
    std::lock_guard l(mu_);
    for (const auto& t : texts) {
      Line ln;
      ln.notice = true;
      ln.text = t;
      push_locked(std::move(ln));
    }
    draw_locked();
  }
  // Messages fetched on request (/history): shown as a block at the bottom.
  void add_block(const std::string& title, const std::vector<client::Message>& msgs) {
    std::lock_guard l(mu_);
    Line head;
    head.notice = true;
    head.text = title;
    push_locked(std::move(head));
    for (const auto& m : msgs) push_locked(line_of(m));
    draw_locked();
  }
  std::vector<std::string> others() {
    std::lock_guard l(mu_);
    return others_;
  }
  void set_others(std::vector<std::string> others) {
    std::lock_guard l(mu_);
    others_ = std::move(others);
    draw_locked();
  }
  Seq oldest_seq() {
    std::lock_guard l(mu_);
    return shown_.empty() ? 0 : *shown_.begin();
  }
  Seq last_own_seq() {
    std::lock_guard l(mu_);
    Seq s = 0;
    for (const auto& ln : lines_)
      if (ln.own && ln.confirmed && !ln.notice) s = std::max(s, ln.seq);
    return s;
  }
  // "/seen": who has `seq`, member by member.
  std::vector<std::string> seen(Seq seq) {
    std::lock_guard l(mu_);
    std::vector<std::string> read, delivered, waiting;
    for (const auto& u : others_) {
      auto r = read_by_.find(u);
      auto d = delivered_by_.find(u);
      if (r != read_by_.end() && r->second >= seq) read.push_back(u);
      else if (d != delivered_by_.end() && d->second >= seq) delivered.push_back(u);
      else waiting.push_back(u);
    }
    std::vector<std::string> out{"seq " + std::to_string(seq) + ":"};
    if (!read.empty()) out.push_back("  read by " + join_names(read));
    if (!delivered.empty()) out.push_back("  delivered to " + join_names(delivered) + " (not read yet)");
    if (!waiting.empty()) out.push_back("  not delivered yet: " + join_names(waiting));
    if (others_.empty()) out.push_back("  nobody else is in this conversation");
    return out;
  }
  void add_own(const std::string& client_msg_id, const std::string& text) {
    std::lock_guard l(mu_);
    Line ln;
    ln.sender = self_;
    ln.ts = now_ms();
    ln.text = printable(text);
    ln.own = true;
    ln.client_msg_id = client_msg_id;
    push_locked(std::move(ln));
    draw_locked();
  }
  void on_sent(const client::SendResult& r) {
    std::lock_guard l(mu_);
    for (auto& ln : lines_)
      if (ln.own && ln.client_msg_id == r.client_msg_id) {
        ln.confirmed = true;
        ln.seq = r.seq;
        ln.ts = r.ts;
        shown_.insert(r.seq);
      }
    draw_locked();
  }
  void on_send_failed(const std::string& id, const Error& e) {
    std::lock_guard l(mu_);
    for (auto& ln : lines_)
      if (ln.own && ln.client_msg_id == id) ln.failed = std::string(code_name(e.code));
    draw_locked();
  }
  void on_receipt(const client::Receipt& r) {
    if (r.conversation_id != t_.conversation_id || r.user == self_) return;
    std::lock_guard l(mu_);
    auto& m = r.status == client::ReceiptStatus::kRead ? read_by_ : delivered_by_;
    m[r.user] = std::max(m[r.user], r.seq);
    if (r.status == client::ReceiptStatus::kRead) delivered_by_[r.user] = std::max(delivered_by_[r.user], r.seq);
    if (!tty_) std::cout << "* " << (r.status == client::ReceiptStatus::kRead ? "read" : "delivered") << " by "
                         << printable(r.user) << " up to " << r.seq << std::endl;
    draw_locked();
  }
  void on_typing(const client::Typing& t) {
    if (t.conversation_id != t_.conversation_id || t.user == self_) return;
    std::lock_guard l(mu_);
    if (t.active) typing_until_[t.user] = now_ms() + kTypingShownMs;
    else typing_until_.erase(t.user);
    if (!tty_ && t.active) std::cout << "* " << printable(t.user) << " is typing" << std::endl;
    draw_locked();
  }
  void on_presence(const client::Presence& p) {
    std::lock_guard l(mu_);
    presence_[p.user] = p;
    if (!tty_) std::cout << "* " << printable(p.user) << (p.online ? " online" : " offline") << std::endl;
    draw_locked();
  }
  void on_state(client::ConnectionState s, const Error* e) {
    std::lock_guard l(mu_);
    switch (s) {
      case client::ConnectionState::kSynced: state_ = "online"; break;
      case client::ConnectionState::kConnected: state_ = "syncing…"; break;
      case client::ConnectionState::kConnecting: state_ = "connecting…"; break;
      case client::ConnectionState::kDisconnected: state_ = "offline, retrying"; break;
      case client::ConnectionState::kStopped: state_ = "stopped" + (e ? ": " + e->message : std::string()); break;
    }
    // What we knew of the others' presence is stale once our connection is gone; the
    // subscription is renewed on reconnect and brings it back.
    if (s == client::ConnectionState::kDisconnected || s == client::ConnectionState::kStopped) presence_.clear();
    if (!tty_) std::cout << "* " << state_ << std::endl;
    draw_locked();
  }
  void set_input(const std::string& input) {
    std::lock_guard l(mu_);
    input_ = input;
    draw_locked();
  }
  // Fades stale typing indicators; redraws when something changed.
  void tick() {
    std::lock_guard l(mu_);
    const int64_t now = now_ms();
    bool changed = false;
    for (auto it = typing_until_.begin(); it != typing_until_.end();) {
      if (it->second < now) {
        it = typing_until_.erase(it);
        changed = true;
      } else {
        ++it;
      }
    }
    if (changed) draw_locked();
  }
  void redraw() {
    std::lock_guard l(mu_);
    draw_locked();
  }

 private:
  Line line_of(const client::Message& m) const {
    Line ln;
    ln.seq = m.seq;
    ln.sender = printable(m.sender);
    ln.ts = m.ts;
    ln.own = m.sender == self_ && !m.system_json;
    ln.confirmed = true;
    if (m.system_json) ln.notice = true;
    ln.text = message_text(m, std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch()).count());
    if (m.reply_to) ln.text = "↪" + std::to_string(*m.reply_to) + " " + ln.text;
    return ln;
  }
  void apply_membership_locked(const std::string& system_json) {
    bool removed = false;
    for (const auto& u : system_users(system_json, removed)) {
      if (u == self_) continue;
      auto it = std::find(others_.begin(), others_.end(), u);
      if (removed && it != others_.end()) others_.erase(it);
      if (!removed && it == others_.end()) others_.push_back(u);
    }
  }
  bool add_message_locked(const client::Message& m) {
    if (!shown_.insert(m.seq).second) return false;
    Line ln = line_of(m);
    // Keep the transcript in seq order (history and live may interleave at the seam).
    auto pos = lines_.end();
    while (pos != lines_.begin() && std::prev(pos)->seq > m.seq && std::prev(pos)->confirmed) --pos;
    if (!tty_) print_line(ln);
    lines_.insert(pos, std::move(ln));
    if (lines_.size() > kMaxLines) lines_.pop_front();
    return !m.system_json && m.sender != self_;
  }
  void push_locked(Line ln) {
    if (!tty_) print_line(ln);
    lines_.push_back(std::move(ln));
    if (lines_.size() > kMaxLines) lines_.pop_front();
  }
  // ✓✓ once every other member's delivered mark has reached the message (protocol §7.6),
  // "✓✓ read" once every other member has read it; a direct conversation has one other.
  bool all_reached(const std::map<std::string, Seq>& marks, Seq seq) const {
    if (others_.empty()) return false;
    for (const auto& u : others_) {
      auto it = marks.find(u);
      if (it == marks.end() || it->second < seq) return false;
    }
    return true;
  }
  std::string mark(const Line& ln) const {
    if (!ln.failed.empty()) return "✗ " + ln.failed;
    if (!ln.confirmed) return "…";
    if (all_reached(read_by_, ln.seq)) return "✓✓ read";
    if (all_reached(delivered_by_, ln.seq)) return "✓✓";
    return "✓";
  }
  std::string format(const Line& ln, size_t cols) const {
    if (ln.notice) {
      const std::string prefix = ln.ts ? hhmm(ln.ts) + " * " : std::string("  · ");
      return prefix + (width(prefix) + width(ln.text) + 1 > cols ? clip(ln.text, cols > width(prefix) + 2 ? cols - width(prefix) - 2 : 1) + "…" : ln.text);
    }
    std::string prefix = hhmm(ln.ts) + " ";
    prefix += (ln.own ? std::string("you") : ln.sender) + ": ";
    const std::string suffix = ln.own ? "  " + mark(ln) : "";
    const size_t used = width(prefix) + width(suffix) + 1;
    const size_t room = cols > used ? cols - used : 1;
    std::string text = width(ln.text) > room ? clip(ln.text, room > 1 ? room - 1 : 0) + "…" : ln.text;
    return prefix + text + suffix;
  }
  void print_line(const Line& ln) const { std::cout << format(ln, 10'000) << std::endl; }

  void draw_locked() {
    if (!tty_) return;
    const WindowSize ws = window_size(1);
    const size_t cols = static_cast<size_t>(std::max(ws.cols, 20));
    const int body_rows = std::max(ws.rows - 5, 1);
    std::string out = "\x1b[?25l\x1b[H\x1b[2J";
    const std::string kind = t_.type == "group"     ? "group "
                             : t_.type == "channel" ? (read_only_ ? "channel (read-only) " : "channel ")
                                                    : "chat with ";
    out += clip("tern · " + kind + printable(t_.title) +
                    " · [" + state_ + "]" +
                    (elsewhere_ ? " · " + std::to_string(elsewhere_) + " new elsewhere (tern conversations)" : "") +
                    " · /help",
                cols - 1) +
           "\r\n";
    std::string pres;
    for (const auto& u : others_) {
      auto it = presence_.find(u);
      pres += (pres.empty() ? "" : "   ") + printable(u) + ": ";
      if (it == presence_.end()) pres += "unknown";
      else if (it->second.online) pres += "online";
      else pres += "last seen " + (it->second.last_seen ? hhmm(it->second.last_seen) : std::string("never"));
    }
    if (t_.type == "channel")
      pres = read_only_ ? "read-only: only the channel's admins post here; Ctrl-C leaves"
                        : "you are an admin: what you type is posted to every subscriber (not end-to-end encrypted)";
    out += clip(pres, cols - 1) + "\r\n";
    for (size_t i = 0; i + 1 < cols && i < 60; ++i) out += "─";
    out += "\r\n";
    const size_t n = lines_.size();
    const size_t first = n > static_cast<size_t>(body_rows) ? n - body_rows : 0;
    for (int r = 0; r < body_rows - static_cast<int>(n - first); ++r) out += "\r\n";
    for (size_t i = first; i < n; ++i) out += format(lines_[i], cols) + "\r\n";
    std::string typing;
    for (const auto& [u, until] : typing_until_) typing += (typing.empty() ? "" : ", ") + printable(u);
    if (!typing.empty()) typing += typing_until_.size() > 1 ? " are typing…" : " is typing…";
    out += clip(typing, cols - 1) + "\r\n";
    const size_t in_w = width(input_);
    const size_t room = cols > 4 ? cols - 4 : 1;
    std::string shown = input_;
    if (in_w > room) {  // show the tail of a long input
      size_t skip = in_w - room;
      size_t i = 0;
      while (skip > 0 && i < shown.size()) {
        ++i;
        while (i < shown.size() && (static_cast<unsigned char>(shown[i]) & 0xc0) == 0x80) ++i;
        --skip;
      }
      shown = shown.substr(i);
    }
    if (read_only_ && input_.empty()) {
      out += "\x1b[?25h";  // no input line: nothing to type here but /commands
    } else {
      out += "> " + shown + "\x1b[?25h";
    }
    (void)!::write(1, out.data(), out.size());
  }

  std::mutex mu_;
  const std::string self_;
  const Target t_;
  const bool tty_;
  const bool read_only_;
  std::deque<Line> lines_;
  std::set<Seq> shown_;  // seqs of this conversation on screen (history/live seam)
  std::map<std::string, Seq> delivered_by_, read_by_;
  std::map<std::string, int64_t> typing_until_;
  std::map<std::string, client::Presence> presence_;
  std::vector<std::string> others_;  // the other members, kept current by system messages
  size_t elsewhere_ = 0;             // messages of other conversations while open
  std::string state_ = "connecting…";
  std::string input_;
};

}  // namespace

int cmd_chat(const Global& g, const std::string& target, size_t history) {
  auto p = require_profile(g);
  if (!p) return fail(g, p.error());
  auto db = state_db_path();
  if (!db) return fail(g, db.error());
  const bool tty = ::isatty(0) && ::isatty(1);
  // Say what we are waiting for, and fail fast (exit 4) when nobody answers.
  if (tty && !g.json) std::cerr << "tern: connecting to " << p->server << "…\n";
  {
    client::IoThread probe_io;
    auto url = checked_server(probe_io, p->server, true);
    if (!url) return fail(g, url.error());
  }

  client::Options o;
  o.server = p->server;
  o.credentials = p->credentials;
  o.store_path = *db;
  o.reconnect = {250, 5'000, 0};  // a person is waiting: retry often
  o.api = cli_api_options();

  // The Screen exists before the Client (its events need it) and outlives it.
  std::unique_ptr<Screen> screen;
  std::unique_ptr<client::Client> c;
  std::string conv;
  client::Events ev;
  ev.on_message = [&](const client::Message& m) {
    if (screen && screen->on_message(m)) c->mark_read(m.conversation_id, m.seq);
  };
  ev.on_sent = [&](const client::SendResult& r) { if (screen) screen->on_sent(r); };
  ev.on_send_failed = [&](const std::string& id, const Error& e) { if (screen) screen->on_send_failed(id, e); };
  ev.on_receipt = [&](const client::Receipt& r) { if (screen) screen->on_receipt(r); };
  ev.on_typing = [&](const client::Typing& t) { if (screen) screen->on_typing(t); };
  ev.on_presence = [&](const client::Presence& pr) { if (screen) screen->on_presence(pr); };
  ev.on_expired = [&](const std::string& conv_id, Seq seq) { if (screen) screen->on_expired(conv_id, seq); };
  ev.on_state = [&](client::ConnectionState s, const Error* e) { if (screen) screen->on_state(s, e); };
  auto created = client::Client::create(o, std::move(ev));
  if (!created) return fail(g, created.error());
  c = std::move(*created);

  auto t = resolve_target(c->api(), p->credentials.user, target);
  if (!t) return fail(g, t.error());
  conv = t->conversation_id;
  const bool is_channel = t->type == "channel";
  bool read_only = false;
  if (is_channel) {
    // Admins post; everyone else only reads (the server refuses their sends anyway).
    auto info = client::wait_for<client::ConversationInfo>(
        [&](auto cb) { c->api().conversation_info(conv, std::move(cb)); });
    if (!info) return fail(g, info.error());
    read_only = std::find(info->admins.begin(), info->admins.end(), p->credentials.user) == info->admins.end();
    if (!info->name.empty()) t->title = info->name;
  }
  auto page = client::wait_for<client::HistoryPage>([&](auto cb) {
    c->api().history(conv, t->head > history ? t->head - history : 0, std::max<size_t>(history, 1), std::move(cb));
  });

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);

  RawMode raw(0);
  // Created after the history call so events during start-up have somewhere to go; the
  // io thread only reads `screen` once start() runs (below), which orders the write.
  screen = std::make_unique<Screen>(p->credentials.user, *t, tty && raw.active(), read_only);
  if (page) {
    screen->add_history(page->messages);
    Seq last_other = 0;
    for (const auto& m : page->messages)
      if (m.sender != p->credentials.user) last_other = std::max(last_other, m.seq);
    if (last_other) c->mark_read(conv, last_other);
  }
  if (!t->others.empty() && !is_channel) c->subscribe_presence(t->others);
  c->start();
  if (!tty || !raw.active()) {
    if (is_channel)
      std::cout << "* channel " << printable(t->title) << " (" << conv << ")"
                << (read_only ? "; read-only: only the channel's admins post here" : "; you are an admin: lines are posted")
                << "; /quit leaves" << std::endl;
    else
      std::cout << "* chat with " << printable(t->title) << " (" << conv << "); E2E encryption is not on yet; /quit leaves"
                << std::endl;
  }

  std::string input, pending_line;
  bool typing = false;
  int64_t last_key = 0, last_typing_sent = 0;
  auto command = [&](const std::string& line) {
    std::string name = line, arg;
    if (auto sp = line.find(' '); sp != std::string::npos) {
      name = line.substr(0, sp);
      arg = line.substr(line.find_first_not_of(' ', sp) == std::string::npos ? line.size() : line.find_first_not_of(' ', sp));
    }
    if (name == "/quit" || name == "/q") {
      g_quit = true;
    } else if (name == "/help" || name == "/?") {
      std::vector<std::string> lines(std::begin(kHelp), std::end(kHelp));
      screen->notice(lines);
    } else if (name == "/history") {
      size_t n = 20;
      if (!arg.empty()) {
        n = 0;
        for (char ch : arg) n = std::isdigit(static_cast<unsigned char>(ch)) && n < 100'000 ? n * 10 + (ch - '0') : 0;
        if (n == 0) return screen->notice({"usage: /history N (a number of messages)"});
      }
      const Seq oldest = screen->oldest_seq();
      const Seq before = oldest ? oldest - 1 : t->head;
      if (before == 0) return screen->notice({"no earlier messages"});
      const Seq from = before > n ? before - n : 0;
      auto earlier = client::wait_for<client::HistoryPage>(
          [&](auto cb) { c->api().history(conv, from, std::min<size_t>(n, before - from), std::move(cb)); }, 15s);
      if (!earlier) return screen->notice({"history: " + earlier.error().message});
      std::vector<client::Message> msgs;
      for (auto& m : earlier->messages)
        if (m.seq <= before) msgs.push_back(std::move(m));
      screen->add_block("messages " + std::to_string(from + 1) + "–" + std::to_string(before) + ":", msgs);
    } else if (name == "/members" && is_channel) {
      auto info = client::wait_for<client::ConversationInfo>(
          [&](auto cb) { c->api().conversation_info(conv, std::move(cb)); }, 15s);
      if (!info) return screen->notice({"members: " + info.error().message});
      screen->notice({std::to_string(info->subscribers) + " subscribers; admins: " + join_names(info->admins)});
    } else if (name == "/members") {
      auto list = client::wait_for<std::vector<client::ConversationInfo>>(
          [&](auto cb) { c->api().conversations(std::move(cb)); }, 15s);
      std::vector<std::string> others = screen->others();
      if (list) {
        for (const auto& ci : *list)
          if (ci.conversation_id == conv) {
            others.clear();
            for (const auto& u : ci.members)
              if (u != p->credentials.user) others.push_back(u);
            screen->set_others(others);
          }
      }
      screen->notice({"members: you" + (others.empty() ? std::string() : ", " + join_names(others)) +
                      (list ? "" : " (as last known: " + list.error().message + ")")});
    } else if (name == "/seen") {
      Seq seq = 0;
      for (char ch : arg) seq = std::isdigit(static_cast<unsigned char>(ch)) ? seq * 10 + (ch - '0') : 0;
      if (arg.empty()) seq = screen->last_own_seq();
      if (seq == 0) return screen->notice({arg.empty() ? "you have sent nothing here yet" : "usage: /seen [SEQ]"});
      screen->notice(screen->seen(seq));
    } else if (name == "/save") {
      Seq seq = 0;
      const size_t sp = arg.find(' ');
      for (char ch : arg.substr(0, sp)) seq = std::isdigit(static_cast<unsigned char>(ch)) ? seq * 10 + (ch - '0') : 0;
      if (seq == 0) return screen->notice({"usage: /save SEQ [PATH]"});
      const std::string path = sp == std::string::npos ? std::string() : arg.substr(arg.find_first_not_of(' ', sp));
      auto url = client::parse_server_url(p->server);
      if (!url) return screen->notice({"save: " + url.error().message});
      auto saved = save_attachments(c->api(), *url, p->credentials.token, conv, seq, path);
      if (!saved) return screen->notice({"save: " + saved.error().message});
      std::vector<std::string> lines;
      for (const auto& w : *saved) lines.push_back("saved " + printable(w));
      screen->notice(lines);
    } else {
      screen->notice({"unknown command " + printable(name) + " (not sent); /help lists the commands, //text sends /text"});
    }
  };
  auto submit = [&](std::string line) {
    if (line.empty()) return;
    if (line[0] == '/' && !line.starts_with("//")) return command(line);
    if (read_only) {
      screen->notice({"read-only: only the channel's admins post here (not sent)"});
      if (!tty) std::cerr << "tern: read-only: only the channel's admins post here (not sent)\n";
      return;
    }
    if (line.starts_with("//")) line.erase(0, 1);
    auto id = c->send(conv, line);
    if (!id) {
      if (!tty) std::cerr << "tern: " << id.error().message << "\n";
      return;
    }
    screen->add_own(*id, line);
    if (typing) {
      c->set_typing(conv, false);
      typing = false;
    }
  };

  while (!g_quit) {
    pollfd pfd{0, POLLIN, 0};
    const int r = ::poll(&pfd, 1, 200);
    if (r < 0 && errno != EINTR) break;
    if (r > 0 && (pfd.revents & (POLLIN | POLLHUP))) {
      char buf[512];
      const ssize_t n = ::read(0, buf, sizeof buf);
      if (n <= 0) {
        if (!pending_line.empty()) submit(pending_line);
        break;  // end of input
      }
      if (!raw.active()) {
        pending_line.append(buf, static_cast<size_t>(n));
        size_t nl;
        while ((nl = pending_line.find('\n')) != std::string::npos) {
          std::string line = pending_line.substr(0, nl);
          if (!line.empty() && line.back() == '\r') line.pop_back();
          pending_line.erase(0, nl + 1);
          submit(line);
        }
        if (pending_line.size() > 64 * 1024) pending_line.clear();  // bounded: no line is that long
        continue;
      }
      for (ssize_t i = 0; i < n; ++i) {
        const unsigned char ch = static_cast<unsigned char>(buf[i]);
        if (ch == '\r' || ch == '\n') {
          submit(input);
          input.clear();
        } else if (ch == 0x03 || (ch == 0x04 && input.empty())) {
          g_quit = true;
        } else if (ch == 0x7f || ch == 0x08) {
          pop_code_point(input);
        } else if (ch == 0x15) {
          input.clear();
        } else if (ch == 0x1b) {
          // An escape sequence (arrows, function keys): skip "ESC [ params final".
          if (i + 1 < n && (buf[i + 1] == '[' || buf[i + 1] == 'O')) {
            i += 2;
            while (i < n && !(buf[i] >= 0x40 && buf[i] <= 0x7e)) ++i;
          }
        } else if (read_only && input.empty() && ch != '/') {
          if (ch == 'q') g_quit = true;  // nothing to type in a read-only channel: q leaves too
        } else if (ch >= 0x20 && input.size() < 16 * 1024) {
          input.push_back(static_cast<char>(ch));
          last_key = now_ms();
        }
        if (g_quit) break;
      }
      screen->set_input(input);
    }
    const int64_t now = now_ms();
    if (is_channel) {
      // No typing indicators in channels (the server does not relay them).
    } else if (!input.empty() && last_key && now - last_key < kTypingIdleMs && (!typing || now - last_typing_sent > kTypingRefreshMs)) {
      c->set_typing(conv, true);
      typing = true;
      last_typing_sent = now;
    } else if (typing && (input.empty() || now - last_key >= kTypingIdleMs)) {
      c->set_typing(conv, false);
      typing = false;
    }
    screen->tick();
  }
  if (typing) c->set_typing(conv, false);
  c->stop();
  if (raw.active()) {
    const std::string reset = "\x1b[?25h\r\n";
    (void)!::write(1, reset.data(), reset.size());
  }
  return 0;
}

}  // namespace tern::cli
