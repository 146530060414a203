#include "client/lean/lean_ws_connection.h"

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
    : handler_(handler), limits_(limits), stream_(io, scratch, *this) {}

WsConnection::~WsConnection() = default;

static_assert(static_cast<int>(WsConnection::State::kHandshaking) == static_cast<int>(LeanStream::Phase::kHandshake) &&
              static_cast<int>(WsConnection::State::kOpen) == static_cast<int>(LeanStream::Phase::kOpen));

void WsConnection::on_stream_reset() {
  in_fragmented_ = false;
  // Swap rather than clear, as the stream does with its buffers.
  std::string().swap(message_);
}

void WsConnection::on_stream_failed(std::string_view reason) { handler_.on_ws_closed(*this, reason); }

void WsConnection::open(const WsTarget& target, std::string_view token) {
  key_ = make_handshake_key(next_random(), next_random());
  stream_.open(target.server, target.source, make_upgrade_request(target.host_header, target.path, key_, token),
               target.tls);
}

bool WsConnection::send_text(std::string_view text) {
  if (state() != State::kOpen || stream_.closing()) return false;
  return queue_frame(static_cast<uint8_t>(WsOpcode::kText), text);
}

bool WsConnection::queue_frame(uint8_t opcode, std::string_view payload) {
  if (stream_.queued_bytes() + payload.size() + 14 > limits_.max_queued_bytes) return false;
  stream_.queue([&](std::string& out) {
    append_client_frame(out, static_cast<WsOpcode>(opcode), payload, static_cast<uint32_t>(next_random()));
  });
  return true;
}

void WsConnection::close(CloseMode mode) {
  stream_.close(mode == CloseMode::kAbort, [this] {
    const char code[2] = {char(0x03), char(0xE8)};  // 1000, normal closure
    queue_frame(static_cast<uint8_t>(WsOpcode::kClose), std::string_view(code, 2));
  });
}

size_t WsConnection::on_stream_input(std::string_view in) {
  const uint64_t gen = stream_.generation();
  size_t used = 0;
  while (used < in.size()) {
    if (stream_.phase() == LeanStream::Phase::kHandshake) {
      const size_t end = in.find("\r\n\r\n", used);
      if (end == std::string_view::npos) {
        if (in.size() - used > limits_.max_handshake_bytes) fail("handshake");
        break;
      }
      auto ok = check_upgrade_response(in.substr(used, end + 4 - used), key_);
      used = end + 4;
      if (!ok) {
        const std::string& m = ok.error().message;
        fail(m.rfind("http ", 0) == 0 ? std::string_view(m) : std::string_view("handshake"));
        break;
      }
      stream_.mark_open();
      handler_.on_ws_open(*this);
      if (gen != stream_.generation()) break;
      continue;
    }
    const auto hr = parse_frame_header(in.substr(used), limits_.max_message_bytes);
    if (hr.status == WsParse::kError) {
      fail("protocol");
      break;
    }
    if (hr.status == WsParse::kNeedMore) break;
    const auto& h = hr.header;
    if (in.size() - used < h.header_len + h.payload_len) break;
    const std::string_view payload = in.substr(used + h.header_len, h.payload_len);
    used += h.header_len + h.payload_len;
    // After a failure or a close by the handler the stream has a new generation and ignores
    // what is returned.
    if (!handle_frame(static_cast<uint8_t>(h.opcode), h.fin, payload)) break;
    if (gen != stream_.generation()) break;
  }
  return used;
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

}  // namespace tern::client::lean
