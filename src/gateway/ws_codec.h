// The RFC 6455 wire format, server side: the opening handshake's accept key, headers of the
// frames the server writes, and an incremental parser of the frames a client sends.
//
// Pure code, no I/O: the WebSocket session feeds it bytes. Thread-safety: the functions are
// pure; a FrameParser belongs to one connection.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tern::gateway::ws {

enum Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

// Close codes the gateway sends.
constexpr uint16_t kCloseNormal = 1000;
constexpr uint16_t kCloseProtocol = 1002;
constexpr uint16_t kCloseUnsupported = 1003;
constexpr uint16_t kCloseNoStatus = 1005;  // "no code in the close frame"; never sent
constexpr uint16_t kClosePolicy = 1008;
constexpr uint16_t kCloseTooBig = 1009;
constexpr uint16_t kCloseInternal = 1011;

// Control frame payloads are at most 125 bytes; a close reason at most 123.
constexpr size_t kMaxControlPayload = 125;
constexpr size_t kMaxCloseReason = 123;

// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA-1(key + RFC GUID)).
std::string accept_key(std::string_view client_key);
// A valid Sec-WebSocket-Key is the base64 of 16 bytes.
bool valid_client_key(std::string_view key);

// Header of an unmasked server frame with FIN set: 2, 4 or 10 bytes.
constexpr size_t header_size(uint64_t payload_len) {
  return payload_len < 126 ? 2 : payload_len <= 0xFFFF ? 4 : 10;
}
// Writes that header into `out` (at least 10 bytes); returns its length.
size_t encode_header(uint8_t opcode, uint64_t payload_len, uint8_t* out);
// The payload of a close frame: the code (big-endian), then the reason cut to 123 bytes.
// An empty string for kCloseNoStatus (an empty close frame).
std::string close_payload(uint16_t code, std::string_view reason);

struct Event {
  // kNeedMore: the frame is incomplete (nothing consumed). kFragment: a non-final fragment
  // was consumed, nothing to deliver yet: call again.
  enum Kind : uint8_t { kNeedMore, kFragment, kText, kPing, kPong, kClose, kError };
  Kind kind = kNeedMore;
  // kText: the whole message; kPing/kPong: the payload; kClose: the reason.
  // Valid until the next call to next() or release().
  std::string_view payload;
  // kClose: the peer's code (kCloseNoStatus when it sent none).
  // kError: the close code to answer with (1002, 1003 or 1009).
  uint16_t code = 0;
  const char* reason = "";  // kError: the close reason to send
};

// Parses client frames one at a time from a caller-owned buffer. A frame is parsed only when
// it is complete (header and payload); its payload is unmasked in place. Fragmented text
// messages are reassembled (control frames may come between the fragments). After an
// kError the parser must not be used again.
class FrameParser {
 public:
  // Parses the first frame of data[0, size). Sets *consumed to the bytes it took (0 when the
  // frame is incomplete: kNeedMore, keep the bytes and call again with more). The size
  // limit is checked as soon as a header is complete, before its payload arrives.
  Event next(char* data, size_t size, size_t max_message_bytes, size_t* consumed);
  // Frees the reassembly buffer if no message is in progress (after a delivered kText).
  void release();
  bool in_message() const { return in_message_; }
  size_t buffered() const { return message_.capacity(); }

 private:
  std::string message_;  // fragments of the text message in progress
  bool in_message_ = false;
};

}  // namespace tern::gateway::ws
