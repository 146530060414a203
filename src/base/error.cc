#include "base/error.h"

namespace tern {

std::string_view code_name(ErrorCode code) {
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
  return "internal";
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
