#include "gateway/ws_codec.h"

#include <cstring>

#include <openssl/sha.h>

#include "base/base64.h"

namespace tern::gateway::ws {

namespace {

constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

Event error(uint16_t code, const char* reason) {
  Event e;
  e.kind = Event::kError;
  e.code = code;
  e.reason = reason;
  return e;
}

// Close codes a peer may send (RFC 6455 §7.4, IANA registry).
bool valid_close_code(uint16_t code) {
  if (code >= 1000 && code <= 1003) return true;
  if (code >= 1007 && code <= 1014) return true;
  return code >= 3000 && code <= 4999;
}

void unmask(char* p, size_t n, const uint8_t mask[4]) {
  uint32_t m32;
  std::memcpy(&m32, mask, 4);
  const uint64_t m64 = (static_cast<uint64_t>(m32) << 32) | m32;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    v ^= m64;
    std::memcpy(p + i, &v, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<char>(p[i] ^ mask[i & 3]);
}

}  // namespace

std::string accept_key(std::string_view client_key) {
  std::string input;
  input.reserve(client_key.size() + kGuid.size());
  input.append(client_key).append(kGuid);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  return base64_encode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

bool valid_client_key(std::string_view key) {
  const auto n = base64_decoded_size(key);
  return n && *n == 16;
}

size_t encode_header(uint8_t opcode, uint64_t len, uint8_t* out) {
  out[0] = static_cast<uint8_t>(0x80 | (opcode & 0x0F));
  if (len < 126) {
    out[1] = static_cast<uint8_t>(len);
    return 2;
  }
  if (len <= 0xFFFF) {
    out[1] = 126;
    out[2] = static_cast<uint8_t>(len >> 8);
    out[3] = static_cast<uint8_t>(len);
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<uint8_t>(len >> (56 - 8 * i));
  return 10;
}

std::string close_payload(uint16_t code, std::string_view reason) {
  if (code == kCloseNoStatus) return {};
  if (reason.size() > kMaxCloseReason) reason = reason.substr(0, kMaxCloseReason);
  std::string out;
  out.reserve(2 + reason.size());
  out.push_back(static_cast<char>(code >> 8));
  out.push_back(static_cast<char>(code & 0xFF));
  out.append(reason);
  return out;
}

void FrameParser::release() {
  if (!in_message_ && message_.capacity() > 0) std::string().swap(message_);
}

Event FrameParser::next(char* data, size_t size, size_t max_message_bytes, size_t* consumed) {
  *consumed = 0;
  release();  // a message delivered by the previous call is no longer referenced
  if (size < 2) return {};
  const auto* u = reinterpret_cast<const uint8_t*>(data);
  const bool fin = (u[0] & 0x80) != 0;
  const uint8_t opcode = u[0] & 0x0F;
  const bool masked = (u[1] & 0x80) != 0;
  uint64_t len = u[1] & 0x7F;
  size_t header = 2;
  if ((u[0] & 0x70) != 0) return error(kCloseProtocol, "reserved bits set");
  if (!masked) return error(kCloseProtocol, "client frames must be masked");
  if (len == 126) {
    if (size < 4) return {};
    len = (static_cast<uint64_t>(u[2]) << 8) | u[3];
    header = 4;
  } else if (len == 127) {
    if (size < 10) return {};
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | u[2 + i];
    if (len >> 63) return error(kCloseProtocol, "bad frame length");
    header = 10;
  }
  header += 4;  // the mask

  const bool control = (opcode & 0x08) != 0;
  if (control) {
    if (opcode != kClose && opcode != kPing && opcode != kPong) return error(kCloseProtocol, "unknown opcode");
    if (!fin || len > kMaxControlPayload) return error(kCloseProtocol, "bad control frame");
  } else {
    if (opcode != kContinuation && opcode != kText && opcode != kBinary)
      return error(kCloseProtocol, "unknown opcode");
    if (opcode == kContinuation && !in_message_) return error(kCloseProtocol, "continuation without a message");
    if (opcode != kContinuation && in_message_) return error(kCloseProtocol, "expected a continuation frame");
    if (opcode == kBinary) return error(kCloseUnsupported, "text frames only");
    const uint64_t total = (opcode == kContinuation ? message_.size() : 0) + len;
    if (total > max_message_bytes) return error(kCloseTooBig, "message too big");
  }
  if (size < header || size - header < len) return {};

  uint8_t mask[4];
  std::memcpy(mask, data + header - 4, 4);
  char* payload = data + header;
  unmask(payload, static_cast<size_t>(len), mask);
  *consumed = header + static_cast<size_t>(len);
  const std::string_view body(payload, static_cast<size_t>(len));

  Event e;
  switch (opcode) {
    case kText:
      if (fin) {
        e.kind = Event::kText;
        e.payload = body;
        return e;
      }
      in_message_ = true;
      message_.assign(body);
      e.kind = Event::kFragment;
      return e;
    case kContinuation:
      message_.append(body);
      if (!fin) {
        e.kind = Event::kFragment;
        return e;
      }
      in_message_ = false;
      e.kind = Event::kText;
      e.payload = message_;
      return e;
    case kPing:
      e.kind = Event::kPing;
      e.payload = body;
      return e;
    case kPong:
      e.kind = Event::kPong;
      e.payload = body;
      return e;
    default:  // kClose
      if (len == 1) return error(kCloseProtocol, "bad close frame");
      e.kind = Event::kClose;
      if (len == 0) {
        e.code = kCloseNoStatus;
        return e;
      }
      e.code = static_cast<uint16_t>((static_cast<uint8_t>(payload[0]) << 8) | static_cast<uint8_t>(payload[1]));
      if (!valid_close_code(e.code)) return error(kCloseProtocol, "bad close code");
      e.payload = body.substr(2);
      return e;
  }
}

}  // namespace tern::gateway::ws
