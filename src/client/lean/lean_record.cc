#include "client/lean/lean_record.h"

#include <algorithm>

#include "base/base64.h"

namespace tern::client::lean {
namespace {

void put_le(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

BodyEncoder::BodyEncoder(size_t total_bytes) {
  body_bytes_ = std::max(total_bytes, kRecordBytes);
  body_bytes_ = (body_bytes_ + 2) / 3 * 3;
  pad_b64_ = base64_encode(std::string(body_bytes_ - kRecordBytes, 'x'));
}

void BodyEncoder::encode(const BodyRecord& r, std::string& out) const {
  uint8_t raw[kRecordBytes] = {'T', 'B', 1, 0};
  put_le(raw + 4, r.sender, 4);
  put_le(raw + 8, r.sender_seq, 8);
  put_le(raw + 16, static_cast<uint64_t>(r.sent_us), 8);
  // 24 bytes = 8 groups of 3 → 32 base64 characters with no padding, so the padding's
  // base64 can follow it.
  out = base64_encode(std::string_view(reinterpret_cast<const char*>(raw), kRecordBytes));
  out.append(pad_b64_);
}

std::optional<BodyRecord> decode_body(std::string_view body_b64) {
  if (body_b64.size() < kRecordB64) return std::nullopt;
  auto decoded = base64_decode(body_b64.substr(0, kRecordB64));
  if (!decoded || decoded->size() != kRecordBytes) return std::nullopt;
  return decode_record_raw(*decoded);
}

void encode_record_raw(const BodyRecord& r, size_t total_bytes, std::string& out) {
  uint8_t raw[kRecordBytes] = {'T', 'B', 1, 0};
  put_le(raw + 4, r.sender, 4);
  put_le(raw + 8, r.sender_seq, 8);
  put_le(raw + 16, static_cast<uint64_t>(r.sent_us), 8);
  out.assign(reinterpret_cast<const char*>(raw), kRecordBytes);
  if (total_bytes > kRecordBytes) out.append(total_bytes - kRecordBytes, 'x');
}

std::optional<BodyRecord> decode_record_raw(std::string_view payload) {
  if (payload.size() < kRecordBytes) return std::nullopt;
  const auto* raw = reinterpret_cast<const uint8_t*>(payload.data());
  if (raw[0] != 'T' || raw[1] != 'B' || raw[2] != 1) return std::nullopt;
  BodyRecord r;
  r.sender = static_cast<uint32_t>(get_le(raw + 4, 4));
  r.sender_seq = get_le(raw + 8, 8);
  r.sent_us = static_cast<int64_t>(get_le(raw + 16, 8));
  return r;
}

}  // namespace tern::client::lean
