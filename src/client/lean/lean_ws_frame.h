// The client side of RFC 6455 framing, as pure functions: frame headers parsed from server
// bytes, masked client frames appended to an output buffer, and the opening handshake's
// key/accept pair. No I/O, no allocation except into the caller's buffer. Thread-safe.
//
// Why our own framing instead of Beast's websocket::stream: tern-bench holds up to ~10,000
// connections per process on one thread while sharing two cores with the server it measures,
// so per connection it keeps only a socket, a partial-frame remainder and a write queue, reads
// every readable connection into one shared scratch buffer and parses many frames per read.
// See docs/benchmarks.md ("Why a minimal WebSocket client").
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace tern::client::lean {

enum class WsOpcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

struct WsFrameHeader {
  bool fin = false;
  WsOpcode opcode = WsOpcode::kText;
  bool masked = false;
  uint8_t mask[4] = {0, 0, 0, 0};
  uint64_t payload_len = 0;
  size_t header_len = 0;  // bytes before the payload
};

enum class WsParse { kOk, kNeedMore, kError };

struct WsHeaderResult {
  WsParse status = WsParse::kNeedMore;
  WsFrameHeader header;
  const char* error = nullptr;  // static text when status == kError
};

// Parses the frame header at the start of `data`. A server frame must not be masked (RFC 6455
// 5.1), reserved bits must be zero (no extension is negotiated), control frames must be final
// and at most 125 bytes, and the payload must not exceed `max_payload`.
WsHeaderResult parse_frame_header(std::string_view data, uint64_t max_payload, bool expect_masked = false);

// Appends one final client frame (masked with `mask_key`, as RFC 6455 requires of clients).
void append_client_frame(std::string& out, WsOpcode opcode, std::string_view payload, uint32_t mask_key);

// XORs `n` bytes with the 4-byte key, starting at key position `offset % 4`.
void apply_mask(char* data, size_t n, const uint8_t key[4], size_t offset = 0);

// The Sec-WebSocket-Key for 16 random bytes given as two 64-bit words.
std::string make_handshake_key(uint64_t r1, uint64_t r2);
// The Sec-WebSocket-Accept a server must answer to `key`: base64(SHA-1(key + GUID)).
std::string expected_accept(std::string_view key);

// The upgrade request for `path` on `host`, authenticated with a bearer token.
std::string make_upgrade_request(std::string_view host, std::string_view path, std::string_view key,
                                 std::string_view token);

// Checks a handshake response head (status line and headers, up to and including the blank
// line): status 101, `Upgrade: websocket` and the right accept value. On refusal the error
// message starts with "http <status>" so callers can count refusals by status.
Result<void> check_upgrade_response(std::string_view head, std::string_view key);

}  // namespace tern::client::lean
