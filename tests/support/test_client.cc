#include "support/test_client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <fcntl.h>
#include <future>
#include <mutex>
#include <thread>

#include "base/base64.h"

namespace tern::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- JSON helpers

std::string jstr(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (!v || !v->is_string()) return {};
  return std::string(v->as_string());
}

int64_t jint(const json::object& o, std::string_view key, int64_t absent) {
  const auto* v = o.if_contains(key);
  if (!v) return absent;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64()) return static_cast<int64_t>(v->as_uint64());
  return absent;
}

bool jbool(const json::object& o, std::string_view key, bool absent) {
  const auto* v = o.if_contains(key);
  if (!v || !v->is_bool()) return absent;
  return v->as_bool();
}

std::string type_of(const json::object& o) { return jstr(o, "type"); }

std::string dump(const json::value& v) { return json::serialize(v); }

std::string dump_frames(const std::vector<json::object>& frames, size_t max) {
  std::string out;
  size_t n = 0;
  for (const auto& f : frames) {
    if (n++ == max) {
      out += "  ... (" + std::to_string(frames.size() - max) + " more)\n";
      break;
    }
    std::string s = json::serialize(f);
    if (s.size() > 300) s = s.substr(0, 300) + "...";
    out += "  " + s + "\n";
  }
  return out;
}

std::string b64(std::string_view bytes) { return base64_encode(bytes); }

std::string unb64(std::string_view text) { return base64_decode(text).value_or(std::string()); }

std::string HttpResult::error_code() const {
  if (!json.is_object()) return {};
  return jstr(json.as_object(), "error");
}

const json::object& HttpResult::obj() const {
  static const json::object empty;
  return json.is_object() ? json.as_object() : empty;
}

// ---------------------------------------------------------------- HTTP

HttpResult http_request(uint16_t port, std::string_view method, std::string_view target,
                        std::optional<std::string> body, std::string_view token, ms timeout) {
  HttpResult out;
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  http::request<http::string_body> req;
  const http::verb verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) req.method_string(method);
  else req.method(verb);
  req.target(target);
  req.version(11);
  req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  req.set(http::field::connection, "close");
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + std::string(token));
  if (body) {
    req.set(http::field::content_type, "application/json");
    req.body() = *body;
  }
  req.prepare_payload();

  http::response_parser<http::string_body> parser;
  parser.body_limit(256u * 1024 * 1024);
  beast::flat_buffer buf;
  boost::system::error_code result;
  bool done = false;
  const tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), port);

  stream.expires_after(timeout);
  stream.async_connect(ep, [&](boost::system::error_code ec) {
    if (ec) { result = ec; done = true; return; }
    http::async_write(stream, req, [&](boost::system::error_code ec2, size_t) {
      if (ec2) { result = ec2; done = true; return; }
      http::async_read(stream, buf, parser, [&](boost::system::error_code ec3, size_t) {
        result = ec3;
        done = true;
      });
    });
  });
  ioc.run();  // bounded: the stream's expiry cancels whatever is in flight
  if (!done || result) {
    out.status = 0;
    out.body = "network error: " + (done ? result.message() : std::string("not completed"));
    return out;
  }
  auto res = parser.release();
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  boost::system::error_code ec;
  json::value v = json::parse(out.body, ec);
  if (!ec) out.json = std::move(v);
  return out;
}

// ---------------------------------------------------------------- Api

namespace {

// Percent-encodes a conversation id for use as one path segment.
std::string path_segment(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || std::string_view("-._~:@!$&'()*+,;=").find(static_cast<char>(c)) != std::string_view::npos) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

json::array to_array(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

}  // namespace

HttpResult Api::healthz() { return http_request(next_port(), "GET", "/healthz"); }

HttpResult Api::register_user(std::string_view user) {
  json::object o;
  o["user"] = user;
  return http_request(next_port(), "POST", "/v1/users", json::serialize(o));
}

Account Api::must_register(std::string_view user) {
  auto r = register_user(user);
  Account a;
  if (r.status != 201) {
    ADD_FAILURE() << "register " << user << ": " << r.status << " " << r.body;
    return a;
  }
  a.user = jstr(r.obj(), "user");
  a.device = static_cast<uint32_t>(jint(r.obj(), "device", 0));
  a.token = jstr(r.obj(), "token");
  EXPECT_EQ(a.user, user) << r.body;
  EXPECT_EQ(a.device, 1u) << r.body;
  EXPECT_FALSE(a.token.empty()) << r.body;
  return a;
}

HttpResult Api::link_device(std::string_view token) { return http_request(next_port(), "POST", "/v1/devices", "{}", token); }

Account Api::must_link(const Account& owner) {
  auto r = link_device(owner.token);
  Account a;
  if (r.status != 201) {
    ADD_FAILURE() << "link device for " << owner.user << ": " << r.status << " " << r.body;
    return a;
  }
  a.user = jstr(r.obj(), "user");
  a.device = static_cast<uint32_t>(jint(r.obj(), "device", 0));
  a.token = jstr(r.obj(), "token");
  EXPECT_EQ(a.user, owner.user) << r.body;
  EXPECT_GT(a.device, 0u) << r.body;
  EXPECT_FALSE(a.token.empty()) << r.body;
  return a;
}

HttpResult Api::create_direct(std::string_view token, std::string_view other) {
  json::object o;
  o["type"] = "direct";
  o["members"] = json::array{json::string(other)};
  return http_request(next_port(), "POST", "/v1/conversations", json::serialize(o), token);
}

std::string Api::must_direct(std::string_view token, std::string_view other) {
  auto r = create_direct(token, other);
  if (r.status != 200 && r.status != 201) {
    ADD_FAILURE() << "create direct with " << other << ": " << r.status << " " << r.body;
    return {};
  }
  std::string id = jstr(r.obj(), "conversation_id");
  EXPECT_FALSE(id.empty()) << r.body;
  return id;
}

HttpResult Api::create_group(std::string_view token, std::string_view name, const std::vector<std::string>& members) {
  json::object o;
  o["type"] = "group";
  o["name"] = name;
  o["members"] = to_array(members);
  return http_request(next_port(), "POST", "/v1/conversations", json::serialize(o), token);
}

std::string Api::must_group(std::string_view token, std::string_view name, const std::vector<std::string>& members) {
  auto r = create_group(token, name, members);
  if (r.status != 200 && r.status != 201) {
    ADD_FAILURE() << "create group " << name << ": " << r.status << " " << r.body;
    return {};
  }
  std::string id = jstr(r.obj(), "conversation_id");
  EXPECT_FALSE(id.empty()) << r.body;
  return id;
}

HttpResult Api::set_presence_visibility(std::string_view token, std::string_view visibility) {
  return http_request(next_port(), "PUT", "/v1/privacy", json::serialize(json::object{{"presence", visibility}}), token);
}

HttpResult Api::add_members(std::string_view token, std::string_view conv, const std::vector<std::string>& users) {
  json::object o;
  o["add"] = to_array(users);
  return http_request(next_port(), "POST", "/v1/conversations/" + path_segment(conv) + "/members", json::serialize(o), token);
}

HttpResult Api::remove_members(std::string_view token, std::string_view conv, const std::vector<std::string>& users) {
  json::object o;
  o["remove"] = to_array(users);
  return http_request(next_port(), "POST", "/v1/conversations/" + path_segment(conv) + "/members", json::serialize(o), token);
}

HttpResult Api::list_conversations(std::string_view token) {
  return http_request(next_port(), "GET", "/v1/conversations", std::nullopt, token);
}

HttpResult Api::messages(std::string_view token, std::string_view conv, std::optional<Seq> after_seq,
                         std::optional<uint64_t> limit) {
  std::string target = "/v1/conversations/" + path_segment(conv) + "/messages";
  char sep = '?';
  if (after_seq) {
    target += sep + std::string("after_seq=") + std::to_string(*after_seq);
    sep = '&';
  }
  if (limit) target += sep + std::string("limit=") + std::to_string(*limit);
  return http_request(next_port(), "GET", target, std::nullopt, token);
}

std::vector<json::object> Api::backfill_all(std::string_view token, std::string_view conv, Seq after_seq, Seq* head,
                                            uint64_t page) {
  std::vector<json::object> out;
  Seq after = after_seq;
  for (int i = 0; i < 10000; ++i) {
    auto r = messages(token, conv, after, page);
    if (r.status != 200 || !r.obj().contains("messages") || !r.obj().at("messages").is_array()) {
      ADD_FAILURE() << "backfill " << conv << " after " << after << ": " << r.status << " " << r.body.substr(0, 500);
      return out;
    }
    const auto& msgs = r.obj().at("messages").as_array();
    Seq h = static_cast<Seq>(jint(r.obj(), "head", 0));
    if (head) *head = h;
    for (const auto& m : msgs) {
      if (!m.is_object()) {
        ADD_FAILURE() << "backfill entry is not an object: " << dump(m);
        return out;
      }
      out.push_back(m.as_object());
    }
    if (msgs.empty()) return out;
    Seq last = static_cast<Seq>(jint(msgs.back().as_object(), "seq", 0));
    if (last <= after) {
      ADD_FAILURE() << "backfill did not advance past " << after;
      return out;
    }
    after = last;
    if (after >= h) return out;
  }
  ADD_FAILURE() << "backfill did not finish";
  return out;
}

Seq Api::head(std::string_view token, std::string_view conv) {
  auto r = messages(token, conv, std::nullopt, 1);
  if (r.status != 200) {
    ADD_FAILURE() << "head of " << conv << ": " << r.status << " " << r.body;
    return 0;
  }
  return static_cast<Seq>(jint(r.obj(), "head", 0));
}

// ---------------------------------------------------------------- WsClient

struct WsClient::Impl {
  // Frames received and not yet read by the test; beyond this the client stops reading
  // (a test that lets this many pile up is broken anyway).
  static constexpr size_t kMaxInbox = 200000;

  struct PendingWrite {
    std::string data;
    bool binary = false;
    std::shared_ptr<std::promise<bool>> done;
  };

  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  std::unique_ptr<websocket::stream<beast::tcp_stream>> ws;
  std::thread thread;

  // I/O-thread state.
  beast::flat_buffer rbuf;
  bool reading = false;
  bool writing = false;
  bool io_closed = false;
  bool closing = false;
  uint16_t close_request = 1000;
  std::shared_ptr<std::promise<void>> close_done;
  std::deque<PendingWrite> wq;

  // Shared with the test thread.
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> inbox;
  bool open = false;
  bool peer_closed = false;
  std::optional<uint16_t> code;
  std::atomic<bool> paused{false};

  Impl() : thread([this] { ioc.run(); }) {}

  ~Impl() {
    asio::post(ioc, [this] { hard_close(); });
    work.reset();
    thread.join();
  }

  void mark_closed() {
    io_closed = true;
    {
      std::lock_guard lk(mu);
      open = false;
      peer_closed = true;
    }
    cv.notify_all();
    for (auto& w : wq) w.done->set_value(false);
    wq.clear();
    if (close_done) {
      close_done->set_value();
      close_done.reset();
    }
  }

  void hard_close() {
    if (ws) {
      boost::system::error_code ec;
      beast::get_lowest_layer(*ws).socket().close(ec);
    }
    if (!io_closed && ws) mark_closed();
  }

  void arm_read() {
    if (reading || io_closed || paused.load() || !ws) return;
    reading = true;
    ws->async_read(rbuf, [this](boost::system::error_code ec, size_t) { on_read(ec); });
  }

  void on_read(boost::system::error_code ec) {
    reading = false;
    if (ec) {
      if (ec == websocket::error::closed) {
        std::lock_guard lk(mu);
        code = static_cast<uint16_t>(ws->reason().code);
      }
      boost::system::error_code ignored;
      beast::get_lowest_layer(*ws).socket().close(ignored);
      mark_closed();
      return;
    }
    std::string s = beast::buffers_to_string(rbuf.data());
    rbuf.consume(rbuf.size());
    bool overflow = false;
    {
      std::lock_guard lk(mu);
      if (inbox.size() >= kMaxInbox) overflow = true;
      else inbox.push_back(std::move(s));
    }
    cv.notify_all();
    if (overflow) {
      hard_close();
      return;
    }
    arm_read();
  }

  void do_write() {
    if (writing) return;
    if (wq.empty()) {
      if (closing && !io_closed) do_close();
      return;
    }
    if (io_closed) {
      for (auto& w : wq) w.done->set_value(false);
      wq.clear();
      return;
    }
    writing = true;
    ws->binary(wq.front().binary);
    ws->async_write(asio::buffer(wq.front().data), [this](boost::system::error_code ec, size_t) {
      writing = false;
      if (!wq.empty()) {
        wq.front().done->set_value(!ec);
        wq.pop_front();
      }
      if (ec) {
        hard_close();
        return;
      }
      do_write();
    });
  }

  void do_close() {
    ws->async_close(websocket::close_reason(close_request), [this](boost::system::error_code) {
      // The pending read (if any) completes with `closed`; make sure we end either way.
      if (ws->reason().code != websocket::close_code::none) {
        std::lock_guard lk(mu);
        if (!code) code = static_cast<uint16_t>(ws->reason().code);
      }
      boost::system::error_code ignored;
      beast::get_lowest_layer(*ws).socket().close(ignored);
      if (!io_closed) mark_closed();
    });
  }
};

WsClient::WsClient() : impl_(std::make_unique<Impl>()) {}
WsClient::~WsClient() = default;

int WsClient::connect_ws(uint16_t port, std::string_view token, const WsOptions& options) {
  // A fresh Impl per connection: a previous connection's state never leaks into this one.
  impl_ = std::make_unique<Impl>();
  Impl& im = *impl_;
  auto result = std::make_shared<std::promise<int>>();
  auto fut = result->get_future();
  auto res = std::make_shared<websocket::response_type>();
  std::string target = "/v1/ws";
  if (options.token_in_query && !token.empty()) target += "?token=" + std::string(token);
  std::string tok(token);
  const bool header = !options.token_in_query && !token.empty();
  const int rcvbuf = options.receive_buffer_bytes;

  asio::post(im.ioc, [&im, result, res, target, tok, header, rcvbuf, port, timeout = options.timeout] {
    im.ws = std::make_unique<websocket::stream<beast::tcp_stream>>(im.ioc);
    im.ws->read_message_max(64u * 1024 * 1024);
    auto& lowest = beast::get_lowest_layer(*im.ws);
    boost::system::error_code ec;
    lowest.socket().open(tcp::v4(), ec);
    if (rcvbuf > 0) lowest.socket().set_option(asio::socket_base::receive_buffer_size(rcvbuf), ec);
    if (header) {
      im.ws->set_option(websocket::stream_base::decorator([tok](websocket::request_type& req) {
        req.set(http::field::authorization, "Bearer " + tok);
      }));
    }
    lowest.expires_after(timeout);
    const tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), port);
    lowest.async_connect(ep, [&im, result, res, target, port](boost::system::error_code ec) {
      if (ec) {
        im.hard_close();
        result->set_value(0);
        return;
      }
      im.ws->async_handshake(*res, "127.0.0.1:" + std::to_string(port), target,
                             [&im, result, res](boost::system::error_code ec2) {
                               beast::get_lowest_layer(*im.ws).expires_never();
                               if (ec2) {
                                 int status = res->result_int() != 0 && res->result() != http::status::switching_protocols
                                                  ? static_cast<int>(res->result_int())
                                                  : 0;
                                 im.hard_close();
                                 result->set_value(status);
                                 return;
                               }
                               {
                                 std::lock_guard lk(im.mu);
                                 im.open = true;
                               }
                               im.arm_read();
                               result->set_value(101);
                             });
    });
  });
  if (fut.wait_for(options.timeout + ms(2000)) != std::future_status::ready) {
    asio::post(im.ioc, [&im] { im.hard_close(); });
    if (fut.wait_for(ms(5000)) != std::future_status::ready) return 0;
  }
  return fut.get();
}

bool WsClient::is_open() const {
  std::lock_guard lk(impl_->mu);
  return impl_->open;
}

bool WsClient::send_text(std::string text, ms timeout) {
  Impl& im = *impl_;
  auto done = std::make_shared<std::promise<bool>>();
  auto fut = done->get_future();
  asio::post(im.ioc, [&im, done, data = std::move(text)]() mutable {
    if (im.io_closed || !im.ws || im.closing) {
      done->set_value(false);
      return;
    }
    im.wq.push_back({std::move(data), false, done});
    im.do_write();
  });
  if (fut.wait_for(timeout) != std::future_status::ready) return false;
  return fut.get();
}

bool WsClient::send_binary(std::string bytes, ms timeout) {
  Impl& im = *impl_;
  auto done = std::make_shared<std::promise<bool>>();
  auto fut = done->get_future();
  asio::post(im.ioc, [&im, done, data = std::move(bytes)]() mutable {
    if (im.io_closed || !im.ws || im.closing) {
      done->set_value(false);
      return;
    }
    im.wq.push_back({std::move(data), true, done});
    im.do_write();
  });
  if (fut.wait_for(timeout) != std::future_status::ready) return false;
  return fut.get();
}

std::optional<json::object> WsClient::read_frame(ms timeout) {
  Impl& im = *impl_;
  std::unique_lock lk(im.mu);
  if (!im.cv.wait_for(lk, timeout, [&] { return !im.inbox.empty() || im.peer_closed; })) return std::nullopt;
  if (im.inbox.empty()) return std::nullopt;
  std::string s = std::move(im.inbox.front());
  im.inbox.pop_front();
  lk.unlock();
  boost::system::error_code ec;
  json::value v = json::parse(s, ec);
  if (ec || !v.is_object()) {
    json::object o;
    o["type"] = "__not_json__";
    o["raw"] = s.substr(0, 1000);
    return o;
  }
  return std::move(v.as_object());
}

std::optional<json::object> WsClient::read_until(const std::function<bool(const json::object&)>& pred, ms timeout,
                                                 std::vector<json::object>* skipped) {
  const auto until = Clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<ms>(until - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto f = read_frame(left);
    if (!f) return std::nullopt;
    if (pred(*f)) return f;
    if (skipped) skipped->push_back(std::move(*f));
  }
}

std::optional<json::object> WsClient::read_until(std::string_view type, ms timeout, std::vector<json::object>* skipped) {
  std::string t(type);
  return read_until([&t](const json::object& o) { return type_of(o) == t; }, timeout, skipped);
}

std::vector<json::object> WsClient::drain(ms quiet, ms max_total) {
  std::vector<json::object> out;
  const auto until = Clock::now() + max_total;
  while (Clock::now() < until) {
    auto f = read_frame(quiet);
    if (!f) break;
    out.push_back(std::move(*f));
  }
  return out;
}

bool WsClient::wait_closed(ms timeout) {
  Impl& im = *impl_;
  std::unique_lock lk(im.mu);
  return im.cv.wait_for(lk, timeout, [&] { return im.peer_closed; });
}

bool WsClient::closed() const {
  std::lock_guard lk(impl_->mu);
  return impl_->peer_closed;
}

std::optional<uint16_t> WsClient::close_code() const {
  std::lock_guard lk(impl_->mu);
  return impl_->code;
}

void WsClient::pause_reading() { impl_->paused = true; }

void WsClient::resume_reading() {
  Impl& im = *impl_;
  im.paused = false;
  asio::post(im.ioc, [&im] { im.arm_read(); });
}

void WsClient::close(uint16_t code, ms timeout) {
  Impl& im = *impl_;
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  asio::post(im.ioc, [&im, done, code] {
    if (im.io_closed || !im.ws || im.closing) {
      done->set_value();
      return;
    }
    im.closing = true;
    im.close_request = code;
    im.close_done = done;
    im.paused = false;
    im.do_write();  // closes once queued writes are out
  });
  if (fut.wait_for(timeout) != std::future_status::ready) abort();
}

void WsClient::abort() {
  Impl& im = *impl_;
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  asio::post(im.ioc, [&im, done] {
    im.hard_close();
    done->set_value();
  });
  fut.wait_for(ms(5000));
}

// ---------------------------------------------------------------- Device

std::optional<std::vector<json::object>> Device::connect_synced(uint16_t port, ms timeout) {
  int st = connect(port);
  if (st != 101) {
    ADD_FAILURE() << account.key() << ": ws upgrade answered " << st;
    return std::nullopt;
  }
  return until_synced(timeout);
}

bool Device::send(std::string_view conv, std::string_view client_msg_id, std::string_view body_bytes) {
  json::object o;
  o["type"] = "send";
  o["client_msg_id"] = client_msg_id;
  o["conversation_id"] = conv;
  o["body"] = b64(body_bytes);
  return send_json(o);
}

bool Device::send_bodies(std::string_view conv, std::string_view client_msg_id,
                         const std::map<std::string, std::string>& bodies_bytes) {
  json::object o;
  o["type"] = "send";
  o["client_msg_id"] = client_msg_id;
  o["conversation_id"] = conv;
  json::object bodies;
  for (const auto& [k, v] : bodies_bytes) bodies[k] = b64(v);
  o["bodies"] = std::move(bodies);
  return send_json(o);
}

std::optional<json::object> Device::wait_answer(std::string_view client_msg_id, ms timeout,
                                                std::vector<json::object>* skipped) {
  std::string id(client_msg_id);
  return read_until(
      [&id](const json::object& o) {
        const std::string t = type_of(o);
        return (t == "sent" && jstr(o, "client_msg_id") == id) || (t == "error" && jstr(o, "ref") == id);
      },
      timeout, skipped);
}

std::optional<json::object> Device::send_wait(std::string_view conv, std::string_view client_msg_id,
                                              std::string_view body_bytes, ms timeout,
                                              std::vector<json::object>* skipped) {
  if (!send(conv, client_msg_id, body_bytes)) return std::nullopt;
  return wait_answer(client_msg_id, timeout, skipped);
}

Seq Device::must_send(std::string_view conv, std::string_view client_msg_id, std::string_view body_bytes,
                      std::vector<json::object>* skipped) {
  auto a = send_wait(conv, client_msg_id, body_bytes, kDefaultTimeout, skipped);
  if (!a) {
    ADD_FAILURE() << account.key() << ": no answer to send " << client_msg_id;
    return 0;
  }
  if (type_of(*a) != "sent") {
    ADD_FAILURE() << account.key() << ": send " << client_msg_id << " answered " << dump(*a);
    return 0;
  }
  EXPECT_EQ(jstr(*a, "conversation_id"), conv) << dump(*a);
  EXPECT_GT(jint(*a, "ts"), 0) << dump(*a);
  return static_cast<Seq>(jint(*a, "seq", 0));
}

bool Device::ack(std::string_view conv, Seq seq) {
  json::object o;
  o["type"] = "ack";
  o["conversation_id"] = conv;
  o["seq"] = seq;
  return send_json(o);
}

bool Device::read(std::string_view conv, Seq seq) {
  json::object o;
  o["type"] = "read";
  o["conversation_id"] = conv;
  o["seq"] = seq;
  return send_json(o);
}

bool Device::typing(std::string_view conv, bool active) {
  json::object o;
  o["type"] = "typing";
  o["conversation_id"] = conv;
  o["active"] = active;
  return send_json(o);
}

bool Device::presence_subscribe(const std::vector<std::string>& users) {
  json::object o;
  o["type"] = "presence_subscribe";
  json::array a;
  for (const auto& u : users) a.emplace_back(u);
  o["users"] = std::move(a);
  return send_json(o);
}

std::optional<std::vector<json::object>> Device::until_synced(ms timeout) {
  std::vector<json::object> before;
  auto s = read_until("synced", timeout, &before);
  if (!s) return std::nullopt;
  return before;
}

std::vector<json::object> Device::collect_messages(std::string_view conv, Seq seq, ms timeout,
                                                   std::vector<json::object>* skipped) {
  std::vector<json::object> out;
  const auto until = Clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<ms>(until - Clock::now());
    if (left.count() <= 0) break;
    auto f = read_frame(left);
    if (!f) break;
    if (type_of(*f) == "message" && jstr(*f, "conversation_id") == conv) {
      const Seq s = static_cast<Seq>(jint(*f, "seq", 0));
      out.push_back(std::move(*f));
      if (s >= seq) break;
    } else if (skipped) {
      skipped->push_back(std::move(*f));
    }
  }
  return out;
}

// ---------------------------------------------------------------- RawConn

RawConn::~RawConn() { close(); }

void RawConn::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool RawConn::connect(uint16_t port, ms timeout) {
  close();
  eof_ = false;
  received_.clear();
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int r = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  if (r == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd_, POLLOUT, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0;
}

bool RawConn::write_all(std::string_view bytes, ms timeout) {
  const auto until = Clock::now() + timeout;
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    auto left = std::chrono::duration_cast<ms>(until - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLOUT, 0};
    ::poll(&p, 1, static_cast<int>(left));
  }
  return true;
}

std::string RawConn::read_some(ms timeout) {
  if (fd_ < 0 || eof_) return {};
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return {};
  char buf[65536];
  ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
  if (n <= 0) {
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) eof_ = true;
    return {};
  }
  std::string s(buf, static_cast<size_t>(n));
  received_ += s;
  return s;
}

bool RawConn::wait_eof(ms timeout) {
  const auto until = Clock::now() + timeout;
  while (!eof_) {
    auto left = std::chrono::duration_cast<ms>(until - Clock::now());
    if (left.count() <= 0) return false;
    read_some(left);
  }
  return true;
}

int RawConn::ws_upgrade(uint16_t port, std::string_view token, ms timeout) {
  if (!connect(port, timeout)) return 0;
  std::string req = "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                    "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + std::string(token) + "\r\n";
  req += "\r\n";
  if (!write_all(req, timeout)) return 0;
  const auto until = Clock::now() + timeout;
  while (received_.find("\r\n\r\n") == std::string::npos) {
    auto left = std::chrono::duration_cast<ms>(until - Clock::now());
    if (left.count() <= 0 || eof_) return 0;
    read_some(left);
  }
  // "HTTP/1.1 101 Switching Protocols"
  if (received_.size() < 12) return 0;
  return std::atoi(received_.c_str() + 9);
}

}  // namespace tern::test
