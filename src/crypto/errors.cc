#include "crypto/errors.h"

namespace tern::crypto {

std::string_view errc_name(Errc e) {
  switch (e) {
    case Errc::kMalformed: return "malformed";
    case Errc::kUnsupportedVersion: return "unsupported_version";
    case Errc::kInvalidKey: return "invalid_key";
    case Errc::kBadMac: return "bad_mac";
    case Errc::kBadSignature: return "bad_signature";
    case Errc::kDuplicate: return "duplicate";
    case Errc::kTooFarAhead: return "too_far_ahead";
    case Errc::kNoSession: return "no_session";
    case Errc::kTooLarge: return "too_large";
    case Errc::kInternal: return "internal";
  }
  return "unknown";
}

}  // namespace tern::crypto
