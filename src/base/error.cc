#include "base/error.h"

namespace tern {
namespace {

// Every code must have a name here: a code left out is a compile error, not a warning.
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
// The wire name of a code; empty for a value that is not a code.
constexpr std::string_view wire_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kMalformed: return "malformed";
    case ErrorCode::kUnknownType: return "unknown_type";
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kDeviceMismatch: return "device_mismatch";
    case ErrorCode::kUnauthorized: return "unauthorized";
    case ErrorCode::kForbidden: return "forbidden";
    case ErrorCode::kNotFound: return "not_found";
    case ErrorCode::kExists: return "exists";
    case ErrorCode::kTooLarge: return "too_large";
    case ErrorCode::kLimitExceeded: return "limit_exceeded";
    case ErrorCode::kRateLimited: return "rate_limited";
    case ErrorCode::kOverloaded: return "overloaded";
    case ErrorCode::kDraining: return "draining";
    case ErrorCode::kInternal: return "internal";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kBadSignature: return "bad_signature";
  }
  return {};
}
#pragma GCC diagnostic pop

constexpr ErrorCode after(ErrorCode code) { return static_cast<ErrorCode>(static_cast<int>(code) + 1); }
static_assert(!wire_name(kLastErrorCode).empty(), "kLastErrorCode must be a code");
static_assert(wire_name(after(kLastErrorCode)).empty(),
              "a code was added after kLastErrorCode: move kLastErrorCode (base/error.h) to it");

}  // namespace

std::string_view code_name(ErrorCode code) {
  const std::string_view name = wire_name(code);
  return name.empty() ? "internal" : name;
}

int http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return 200;
    case ErrorCode::kMalformed:
    case ErrorCode::kUnknownType:
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kDeviceMismatch: return 400;
    case ErrorCode::kUnauthorized: return 401;
    case ErrorCode::kForbidden: return 403;
    case ErrorCode::kLimitExceeded: return 403;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kExists: return 409;
    case ErrorCode::kTooLarge: return 413;
    case ErrorCode::kRateLimited: return 429;
    case ErrorCode::kOverloaded:
    case ErrorCode::kDraining: return 503;
    case ErrorCode::kInternal: return 500;
    case ErrorCode::kUnavailable: return 503;
    case ErrorCode::kBadSignature: return 400;
  }
  return 500;
}

}  // namespace tern
