#include "client/lean/lean_record.h"

#include <algorithm>
#include <array>

#include "base/base64.h"

namespace tern::client::lean {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> make_table() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}
constexpr auto kTable = make_table();

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
  out.resize(kRecordB64);
  // 24 bytes = 8 groups of 3 → 32 characters, no padding.
  for (size_t g = 0; g < kRecordBytes / 3; ++g) {
    const uint32_t n = (uint32_t(raw[3 * g]) << 16) | (uint32_t(raw[3 * g + 1]) << 8) | raw[3 * g + 2];
    out[4 * g] = kAlphabet[(n >> 18) & 63];
    out[4 * g + 1] = kAlphabet[(n >> 12) & 63];
    out[4 * g + 2] = kAlphabet[(n >> 6) & 63];
    out[4 * g + 3] = kAlphabet[n & 63];
  }
  out.append(pad_b64_);
}

std::optional<BodyRecord> decode_body(std::string_view body_b64) {
  if (body_b64.size() < kRecordB64) return std::nullopt;
  uint8_t raw[kRecordBytes];
  for (size_t g = 0; g < kRecordBytes / 3; ++g) {
    uint32_t n = 0;
    for (size_t k = 0; k < 4; ++k) {
      const int8_t v = kTable[static_cast<uint8_t>(body_b64[4 * g + k])];
      if (v < 0) return std::nullopt;
      n = (n << 6) | static_cast<uint32_t>(v);
    }
    raw[3 * g] = static_cast<uint8_t>(n >> 16);
    raw[3 * g + 1] = static_cast<uint8_t>(n >> 8);
    raw[3 * g + 2] = static_cast<uint8_t>(n);
  }
  if (raw[0] != 'T' || raw[1] != 'B' || raw[2] != 1) return std::nullopt;
  BodyRecord r;
  r.sender = static_cast<uint32_t>(get_le(raw + 4, 4));
  r.sender_seq = get_le(raw + 8, 8);
  r.sent_us = static_cast<int64_t>(get_le(raw + 16, 8));
  return r;
}

}  // namespace tern::client::lean
