#include "client/lean/lean_ws_frame.h"

#include <openssl/evp.h>

#include <array>
#include <cctype>
#include <cstring>

#include "base/base64.h"

namespace tern::client::lean {
namespace {

constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

WsHeaderResult parse_frame_header(std::string_view data, uint64_t max_payload, bool expect_masked) {
  WsHeaderResult r;
  if (data.size() < 2) return r;
  const auto b0 = static_cast<uint8_t>(data[0]);
  const auto b1 = static_cast<uint8_t>(data[1]);
  WsFrameHeader& h = r.header;
  h.fin = (b0 & 0x80) != 0;
  h.opcode = static_cast<WsOpcode>(b0 & 0x0F);
  h.masked = (b1 & 0x80) != 0;
  auto fail = [&r](const char* why) {
    r.status = WsParse::kError;
    r.error = why;
    return r;
  };
  if (b0 & 0x70) return fail("reserved bits set");
  switch (h.opcode) {
    case WsOpcode::kContinuation:
    case WsOpcode::kText:
    case WsOpcode::kBinary:
    case WsOpcode::kClose:
    case WsOpcode::kPing:
    case WsOpcode::kPong:
      break;
    default:
      return fail("unknown opcode");
  }
  if (h.masked != expect_masked) return fail(expect_masked ? "frame not masked" : "server frame is masked");
  const bool control = (b0 & 0x08) != 0;
  uint64_t len = b1 & 0x7F;
  size_t pos = 2;
  if (len == 126) {
    if (data.size() < 4) return r;
    len = (uint64_t(uint8_t(data[2])) << 8) | uint8_t(data[3]);
    pos = 4;
  } else if (len == 127) {
    if (data.size() < 10) return r;
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | uint8_t(data[2 + i]);
    if (len >> 63) return fail("payload length has the top bit set");
    pos = 10;
  }
  if (control && (!h.fin || len > 125)) return fail("control frame fragmented or longer than 125 bytes");
  if (len > max_payload) return fail("frame larger than the limit");
  if (h.masked) {
    if (data.size() < pos + 4) return r;
    std::memcpy(h.mask, data.data() + pos, 4);
    pos += 4;
  }
  h.payload_len = len;
  h.header_len = pos;
  r.status = WsParse::kOk;
  return r;
}

void apply_mask(char* data, size_t n, const uint8_t key[4], size_t offset) {
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<char>(data[i] ^ key[(i + offset) & 3]);
}

void append_client_frame(std::string& out, WsOpcode opcode, std::string_view payload, uint32_t mask_key) {
  uint8_t head[14];
  size_t n = 0;
  head[n++] = static_cast<uint8_t>(0x80 | static_cast<uint8_t>(opcode));
  const uint64_t len = payload.size();
  if (len < 126) {
    head[n++] = static_cast<uint8_t>(0x80 | len);
  } else if (len <= 0xFFFF) {
    head[n++] = 0x80 | 126;
    head[n++] = static_cast<uint8_t>(len >> 8);
    head[n++] = static_cast<uint8_t>(len);
  } else {
    head[n++] = 0x80 | 127;
    for (int i = 7; i >= 0; --i) head[n++] = static_cast<uint8_t>(len >> (8 * i));
  }
  uint8_t key[4];
  std::memcpy(key, &mask_key, 4);
  std::memcpy(head + n, key, 4);
  n += 4;
  out.append(reinterpret_cast<const char*>(head), n);
  const size_t at = out.size();
  out.append(payload);
  apply_mask(out.data() + at, payload.size(), key);
}

std::string make_handshake_key(uint64_t r1, uint64_t r2) {
  char raw[16];
  std::memcpy(raw, &r1, 8);
  std::memcpy(raw + 8, &r2, 8);
  return base64_encode(std::string_view(raw, 16));
}

std::string expected_accept(std::string_view key) {
  std::string in;
  in.reserve(key.size() + kGuid.size());
  in.append(key).append(kGuid);
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int md_len = 0;
  if (EVP_Digest(in.data(), in.size(), md.data(), &md_len, EVP_sha1(), nullptr) != 1) return {};
  return base64_encode(std::string_view(reinterpret_cast<const char*>(md.data()), md_len));
}

std::string make_upgrade_request(std::string_view host, std::string_view path, std::string_view key,
                                 std::string_view token) {
  std::string r;
  r.reserve(256 + token.size());
  r.append("GET ").append(path).append(" HTTP/1.1\r\nHost: ").append(host);
  r.append("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
  r.append(key);
  if (!token.empty()) r.append("\r\nAuthorization: Bearer ").append(token);
  r.append("\r\n\r\n");
  return r;
}

Result<void> check_upgrade_response(std::string_view head, std::string_view key) {
  const size_t eol = head.find("\r\n");
  const std::string_view status_line = head.substr(0, eol);
  // "HTTP/1.1 101 Switching Protocols"
  const size_t sp = status_line.find(' ');
  if (sp == std::string_view::npos || status_line.substr(0, 5) != "HTTP/")
    return make_error(ErrorCode::kMalformed, "handshake: not an HTTP response");
  const std::string_view code = status_line.substr(sp + 1, 3);
  if (code != "101") return make_error(ErrorCode::kUnauthorized, "http " + std::string(code));
  bool upgrade = false;
  bool accept_ok = false;
  const std::string want = expected_accept(key);
  size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string_view::npos) end = head.size();
    const std::string_view line = head.substr(pos, end - pos);
    pos = end + 2;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view name = trim(line.substr(0, colon));
    const std::string_view value = trim(line.substr(colon + 1));
    if (iequals(name, "upgrade") && iequals(value, "websocket")) upgrade = true;
    if (iequals(name, "sec-websocket-accept") && value == want) accept_ok = true;
  }
  if (!upgrade) return make_error(ErrorCode::kMalformed, "handshake: missing Upgrade: websocket");
  if (!accept_ok) return make_error(ErrorCode::kMalformed, "handshake: wrong Sec-WebSocket-Accept");
  return {};
}

}  // namespace tern::client::lean
