#include "client/lean/lean_ws_connection.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <random>

#include "client/lean/lean_ws_frame.h"

namespace tern::client::lean {
namespace {

// Mask keys and handshake nonces: a fast generator seeded once per thread is plenty; the
// masking key only has to be unpredictable to intermediaries, not cryptographically strong.
uint64_t next_random() {
  thread_local uint64_t s = [] {
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ rd() ^ 0x9E3779B97F4A7C15ULL;
  }();
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 0x2545F4914F6CDD1DULL;
}

}  // namespace

WsConnection::WsConnection(asio::io_context& io, ReadScratch& scratch, Handler& handler, WsLimits limits)
    : io_(io), scratch_(scratch), handler_(handler), limits_(limits), socket_(io) {}

WsConnection::~WsConnection() {
  boost::system::error_code ec;
  socket_.close(ec);
}

void WsConnection::reset_socket(bool abort) {
  ++gen_;
  boost::system::error_code ec;
  if (socket_.is_open()) {
    if (abort) socket_.set_option(asio::socket_base::linger(true, 0), ec);
    socket_.close(ec);
  }
  state_ = State::kClosed;
  writing_ = false;
  flush_posted_ = false;
  close_after_write_ = false;
  in_fragmented_ = false;
  // Swap rather than clear so that a connection that once carried a large frame gives the
  // memory back; an idle connection should cost its socket and little else.
  std::string().swap(pending_);
  std::string().swap(message_);
  std::string().swap(out_);
  std::string().swap(inflight_);
}

void WsConnection::open(const WsTarget& target, std::string_view token) {
  reset_socket(true);
  const uint64_t gen = gen_;
  state_ = State::kConnecting;
  boost::system::error_code ec;
  socket_.open(target.server.protocol(), ec);
  if (ec) {
    // Defer: the handler must not be re-entered from inside open().
    asio::post(io_, [this, gen] { if (gen == gen_) fail("socket"); });
    return;
  }
  if (target.source) {
#ifdef IP_BIND_ADDRESS_NO_PORT
    int one = 1;
    ::setsockopt(socket_.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    socket_.bind(asio::ip::tcp::endpoint(*target.source, 0), ec);
    if (ec) {
      asio::post(io_, [this, gen] { if (gen == gen_) fail("bind"); });
      return;
    }
  }
  key_ = make_handshake_key(next_random(), next_random());
  out_ = make_upgrade_request(target.host_header, target.path, key_, token);
  socket_.async_connect(target.server, [this, gen](const boost::system::error_code& cec) {
    if (gen != gen_) return;
    if (cec) return fail("connect");
    boost::system::error_code oec;
    socket_.set_option(asio::ip::tcp::no_delay(true), oec);
    socket_.non_blocking(true, oec);
    state_ = State::kHandshaking;
    start_write();
    start_read();
  });
}

bool WsConnection::send_text(std::string_view text) {
  if (state_ != State::kOpen || close_after_write_) return false;
  return queue_frame(static_cast<uint8_t>(WsOpcode::kText), text);
}

bool WsConnection::queue_frame(uint8_t opcode, std::string_view payload) {
  if (queued_bytes() + payload.size() + 14 > limits_.max_queued_bytes) return false;
  append_client_frame(out_, static_cast<WsOpcode>(opcode), payload, static_cast<uint32_t>(next_random()));
  schedule_flush();
  return true;
}

void WsConnection::close(CloseMode mode) {
  if (state_ == State::kClosed) return;
  if (mode == CloseMode::kGraceful && state_ == State::kOpen && !close_after_write_) {
    const char code[2] = {char(0x03), char(0xE8)};  // 1000, normal closure
    queue_frame(static_cast<uint8_t>(WsOpcode::kClose), std::string_view(code, 2));
    close_after_write_ = true;
    // Reads are no longer delivered: the handler asked to be done with this connection.
    return;
  }
  reset_socket(mode == CloseMode::kAbort);
}

void WsConnection::schedule_flush() {
  if (writing_ || flush_posted_) return;
  flush_posted_ = true;
  const uint64_t gen = gen_;
  // Posted, not immediate: every frame queued by the current handler run shares one write.
  asio::post(io_, [this, gen] {
    if (gen != gen_) return;
    flush_posted_ = false;
    start_write();
  });
}

void WsConnection::start_write() {
  if (writing_ || out_.empty() || state_ == State::kConnecting || state_ == State::kClosed) return;
  writing_ = true;
  inflight_.swap(out_);
  const uint64_t gen = gen_;
  asio::async_write(socket_, asio::buffer(inflight_), [this, gen](const boost::system::error_code& ec, size_t) {
    if (gen != gen_) return;
    writing_ = false;
    inflight_.clear();
    if (ec) return fail("write");
    if (!out_.empty()) return start_write();
    if (close_after_write_) reset_socket(false);
  });
}

void WsConnection::start_read() {
  const uint64_t gen = gen_;
  socket_.async_wait(asio::ip::tcp::socket::wait_read, [this, gen](const boost::system::error_code& ec) {
    if (gen != gen_) return;
    if (ec) return fail("read");
    on_readable();
  });
}

void WsConnection::on_readable() {
  const uint64_t gen = gen_;
  // Bounded: a connection that always has data must not starve the others on this thread.
  for (int round = 0; round < 4; ++round) {
    boost::system::error_code ec;
    const size_t n = socket_.read_some(asio::buffer(scratch_.bytes), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec == asio::error::eof) return fail("eof");
    if (ec) return fail("read");
    if (close_after_write_) continue;  // closing: drain and drop
    if (!consume(scratch_.bytes.data(), n)) return;
    if (gen != gen_) return;
    if (n < scratch_.bytes.size()) break;
  }
  start_read();
}

bool WsConnection::consume(const char* data, size_t n) {
  const uint64_t gen = gen_;
  // A partial frame from an earlier read is moved out of pending_ first: a handler may close
  // or reopen this connection, which resets pending_, while views into the bytes are live.
  std::string joined;
  std::string_view in(data, n);
  const bool from_pending = !pending_.empty();
  if (from_pending) {
    joined.swap(pending_);
    joined.append(data, n);
    in = joined;
  }
  size_t used = 0;
  while (used < in.size()) {
    if (state_ == State::kHandshaking) {
      const size_t end = in.find("\r\n\r\n", used);
      if (end == std::string_view::npos) {
        if (in.size() - used > limits_.max_handshake_bytes) {
          fail("handshake");
          return false;
        }
        break;
      }
      auto ok = check_upgrade_response(in.substr(used, end + 4 - used), key_);
      used = end + 4;
      if (!ok) {
        const std::string& m = ok.error().message;
        fail(m.rfind("http ", 0) == 0 ? std::string_view(m) : std::string_view("handshake"));
        return false;
      }
      state_ = State::kOpen;
      handler_.on_ws_open(*this);
      if (gen != gen_) return false;
      continue;
    }
    const auto hr = parse_frame_header(in.substr(used), limits_.max_message_bytes);
    if (hr.status == WsParse::kError) {
      fail("protocol");
      return false;
    }
    if (hr.status == WsParse::kNeedMore) break;
    const auto& h = hr.header;
    if (in.size() - used < h.header_len + h.payload_len) break;
    const std::string_view payload = in.substr(used + h.header_len, h.payload_len);
    used += h.header_len + h.payload_len;
    if (!handle_frame(static_cast<uint8_t>(h.opcode), h.fin, payload)) return false;
    if (gen != gen_) return false;
  }
  if (used < in.size()) {
    if (from_pending && used == 0) {
      pending_.swap(joined);  // nothing consumed: keep the buffer as it is
    } else {
      pending_.assign(in.substr(used));
    }
  }
  return true;
}

bool WsConnection::handle_frame(uint8_t opcode, bool fin, std::string_view payload) {
  ++frames_in_;
  switch (static_cast<WsOpcode>(opcode)) {
    case WsOpcode::kText:
    case WsOpcode::kBinary:
      if (in_fragmented_) {
        fail("protocol");
        return false;
      }
      if (fin) {
        handler_.on_ws_text(*this, payload);
        return true;
      }
      in_fragmented_ = true;
      message_.assign(payload);
      return true;
    case WsOpcode::kContinuation:
      if (!in_fragmented_ || message_.size() + payload.size() > limits_.max_message_bytes) {
        fail("protocol");
        return false;
      }
      message_.append(payload);
      if (fin) {
        in_fragmented_ = false;
        std::string whole;
        whole.swap(message_);
        handler_.on_ws_text(*this, whole);
      }
      return true;
    case WsOpcode::kPing:
      queue_frame(static_cast<uint8_t>(WsOpcode::kPong), payload);
      return true;
    case WsOpcode::kPong:
      return true;
    case WsOpcode::kClose: {
      unsigned code = 1005;
      if (payload.size() >= 2) code = (uint8_t(payload[0]) << 8) | uint8_t(payload[1]);
      fail("close " + std::to_string(code));
      return false;
    }
  }
  return true;
}

void WsConnection::fail(std::string_view reason) {
  if (state_ == State::kClosed) return;
  const std::string why(reason);  // `reason` may point into a buffer reset_socket frees
  reset_socket(false);
  handler_.on_ws_closed(*this, why);
}

}  // namespace tern::client::lean
