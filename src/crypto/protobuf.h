// A small, strict protobuf (proto2 wire format) codec: just what Signal's wire messages and
// our own state records need — varint (uint32/uint64) and length-delimited (bytes / nested
// message) fields. Strict by design (untrusted input): a truncated varint or length, a varint
// longer than needed or than its type, a length past the end, field number 0, a group wire
// type, or a known field given twice is an error, never undefined behaviour. Unknown fields of
// wire types 0, 1, 2, 5 are skipped (forward compatibility, as protobuf requires).
// Thread-safety: values; one thread at a time per object.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "crypto/errors.h"

namespace tern::crypto::pb {

enum WireType : uint8_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

class Writer {
 public:
  // Reserving up front keeps secrets from being left behind in reallocated buffers.
  explicit Writer(size_t reserve = 0) { out_.reserve(reserve); }
  void varint_field(uint32_t field, uint64_t value);
  void bytes_field(uint32_t field, std::span<const uint8_t> bytes);
  const std::vector<uint8_t>& bytes() const { return out_; }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  void varint(uint64_t v);
  std::vector<uint8_t> out_;
};

// One field as read: its number, wire type and value (varint value or a view of the bytes,
// which points into the reader's input).
struct Field {
  uint32_t number = 0;
  WireType type = kVarint;
  uint64_t varint = 0;
  std::span<const uint8_t> bytes;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  // The next field; false at the clean end of input; kMalformed on bad input.
  Result<bool> next(Field& field);

 private:
  Result<uint64_t> varint(unsigned max_bytes);
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
};

// Field-presence tracker for a message with field numbers < 64: refuses repeats.
class Seen {
 public:
  // False (the caller returns kMalformed) when `field` was already seen.
  bool mark(uint32_t field);
  bool has(uint32_t field) const { return field < 64 && (bits_ >> field) & 1; }

 private:
  uint64_t bits_ = 0;
};

// Helpers for decoders: a varint field's value as uint32 (kMalformed if wider or wrong type);
// a bytes field (kMalformed for wrong type); a bytes field of exactly `size` bytes.
Result<uint32_t> as_u32(const Field& f);
Result<uint64_t> as_u64(const Field& f);
Result<std::span<const uint8_t>> as_bytes(const Field& f);
Result<std::span<const uint8_t>> as_bytes(const Field& f, size_t size);

// Reads every field of `bytes` and hands each to on_field(const Field&) -> Result<void>,
// stopping at the first error. A second occurrence of a field number other than `repeatable`
// (0: none) is kMalformed. `seen` reports which fields were present.
template <typename OnField>
Result<void> for_each_field(std::span<const uint8_t> bytes, Seen& seen, OnField&& on_field, uint32_t repeatable = 0) {
  Reader r(bytes);
  Field f;
  for (;;) {
    auto more = r.next(f);
    if (!more.ok()) return more.error();
    if (!*more) return {};
    if (!seen.mark(f.number) && f.number != repeatable) return Errc::kMalformed;
    if (auto e = on_field(f); !e.ok()) return e;
  }
}

}  // namespace tern::crypto::pb
