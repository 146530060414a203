// The envelope of every persisted record of tern_crypto (keys, sessions, sender keys): one
// format version byte, kRecordVersion, then the record's protobuf encoding, in SecretBytes
// (records hold private keys). Thread-safety: pure functions.
#pragma once
#include <cstdint>
#include <span>

#include "crypto/errors.h"
#include "crypto/protobuf.h"
#include "crypto/secret.h"

namespace tern::crypto {

constexpr uint8_t kRecordVersion = 1;

// Moves the writer's bytes behind the version byte into sodium memory and wipes the ordinary
// heap copy (writers of secrets reserve their size up front so no stale copy is left).
SecretBytes seal_record(pb::Writer& w);
// The protobuf body of a record: kMalformed when empty, kUnsupportedVersion for another version.
Result<std::span<const uint8_t>> open_record(std::span<const uint8_t> bytes);

// A nested message field: encoded by fill(pb::Writer&), copied into `parent`, then wiped.
template <typename Fill>
void nested_field(pb::Writer& parent, uint32_t field, size_t reserve, Fill&& fill) {
  pb::Writer w(reserve);
  fill(w);
  std::vector<uint8_t> b = w.take();
  parent.bytes_field(field, b);
  wipe(b);
}

}  // namespace tern::crypto
