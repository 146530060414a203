#include "crypto/record_format.h"

#include <cstring>

namespace tern::crypto {

SecretBytes seal_record(pb::Writer& w) {
  std::vector<uint8_t> body = w.take();
  SecretBytes out(body.size() + 1);
  out.data()[0] = kRecordVersion;
  if (!body.empty()) std::memcpy(out.data() + 1, body.data(), body.size());
  wipe(body);
  return out;
}

Result<std::span<const uint8_t>> open_record(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return Errc::kMalformed;
  if (bytes[0] != kRecordVersion) return Errc::kUnsupportedVersion;
  return bytes.subspan(1);
}

}  // namespace tern::crypto
