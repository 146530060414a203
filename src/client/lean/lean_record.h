// The record tern-bench embeds in every message body so that a receiver can measure latency
// and the verifier can recognise a message without any shared state: who sent it (the
// sender's device index within its worker), the sender's own sequence number, and the
// intended send time (steady clock, µs; the clock is machine-wide, so this works across
// worker processes). Layout, 24 bytes little-endian: "TB" 0x01 0x00, sender u32,
// sender_seq u64, sent_us i64; then padding to the requested body size. The body travels as
// base64, and the record is always the first 32 base64 characters, so it is read without
// decoding the rest. Pure values and functions; thread-safe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern::client::lean {

struct BodyRecord {
  uint32_t sender = 0;
  uint64_t sender_seq = 0;
  int64_t sent_us = 0;
  friend bool operator==(const BodyRecord&, const BodyRecord&) = default;
};

inline constexpr size_t kRecordBytes = 24;
inline constexpr size_t kRecordB64 = 32;

class BodyEncoder {
 public:
  // Bodies of `total_bytes` decoded bytes, at least the record; rounded up to a multiple of 3
  // so the record's base64 and the padding's base64 concatenate into valid base64.
  explicit BodyEncoder(size_t total_bytes);
  // Replaces `out` with the base64 body for `r`.
  void encode(const BodyRecord& r, std::string& out) const;
  size_t body_bytes() const { return body_bytes_; }

 private:
  size_t body_bytes_;
  std::string pad_b64_;
};

// Reads the record from a base64 body; nullopt when the body is not one of ours.
std::optional<BodyRecord> decode_body(std::string_view body_b64);

// The same record for binary payloads (tern-bench's MQTT mode): the 24 bytes as they are,
// then 'x' padding up to `total_bytes` (at least the record; no rounding, nothing encoded).
void encode_record_raw(const BodyRecord& r, size_t total_bytes, std::string& out);
std::optional<BodyRecord> decode_record_raw(std::string_view payload);

}  // namespace tern::client::lean
