#include "crypto/protobuf.h"

namespace tern::crypto::pb {

void Writer::varint(uint64_t v) {
  while (v >= 0x80) {
    out_.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out_.push_back(static_cast<uint8_t>(v));
}

void Writer::varint_field(uint32_t field, uint64_t value) {
  varint((static_cast<uint64_t>(field) << 3) | kVarint);
  varint(value);
}

void Writer::bytes_field(uint32_t field, std::span<const uint8_t> bytes) {
  varint((static_cast<uint64_t>(field) << 3) | kLengthDelimited);
  varint(bytes.size());
  out_.insert(out_.end(), bytes.begin(), bytes.end());
}

Result<uint64_t> Reader::varint(unsigned max_bytes) {
  uint64_t v = 0;
  for (unsigned i = 0; i < max_bytes; ++i) {
    if (pos_ >= in_.size()) return Errc::kMalformed;  // truncated
    uint8_t b = in_[pos_++];
    if (i == 9 && b > 1) return Errc::kMalformed;  // bits beyond 64
    v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      if (b == 0 && i > 0) return Errc::kMalformed;  // overlong: a needless 0x00 group
      return v;
    }
  }
  return Errc::kMalformed;  // longer than the type allows
}

Result<bool> Reader::next(Field& field) {
  if (pos_ == in_.size()) return false;
  auto key = varint(5);  // field numbers fit in 29 bits + 3 type bits
  if (!key.ok()) return key.error();
  uint64_t number = *key >> 3;
  auto type = static_cast<uint8_t>(*key & 7);
  if (number == 0 || number > 0x1fffffff) return Errc::kMalformed;
  field = Field{};
  field.number = static_cast<uint32_t>(number);
  switch (type) {
    case kVarint: {
      auto v = varint(10);
      if (!v.ok()) return v.error();
      field.type = kVarint;
      field.varint = *v;
      return true;
    }
    case kLengthDelimited: {
      auto len = varint(10);
      if (!len.ok()) return len.error();
      if (*len > in_.size() - pos_) return Errc::kMalformed;  // past the end
      field.type = kLengthDelimited;
      field.bytes = in_.subspan(pos_, static_cast<size_t>(*len));
      pos_ += static_cast<size_t>(*len);
      return true;
    }
    case kFixed64:
    case kFixed32: {
      size_t n = type == kFixed64 ? 8 : 4;
      if (n > in_.size() - pos_) return Errc::kMalformed;
      field.type = static_cast<WireType>(type);
      field.bytes = in_.subspan(pos_, n);
      pos_ += n;
      return true;
    }
    default:
      return Errc::kMalformed;  // groups (3, 4) and reserved types 6, 7
  }
}

bool Seen::mark(uint32_t field) {
  if (field >= 64) return true;  // unknown high fields: not tracked (skipped by callers)
  uint64_t bit = uint64_t{1} << field;
  if (bits_ & bit) return false;
  bits_ |= bit;
  return true;
}

Result<uint32_t> as_u32(const Field& f) {
  if (f.type != kVarint || f.varint > 0xffffffffULL) return Errc::kMalformed;
  return static_cast<uint32_t>(f.varint);
}

Result<uint64_t> as_u64(const Field& f) {
  if (f.type != kVarint) return Errc::kMalformed;
  return f.varint;
}

Result<std::span<const uint8_t>> as_bytes(const Field& f) {
  if (f.type != kLengthDelimited) return Errc::kMalformed;
  return f.bytes;
}

Result<std::span<const uint8_t>> as_bytes(const Field& f, size_t size) {
  if (f.type != kLengthDelimited || f.bytes.size() != size) return Errc::kMalformed;
  return f.bytes;
}

}  // namespace tern::crypto::pb
