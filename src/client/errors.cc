#include "client/errors.h"

#include <array>

namespace tern::client {

ErrorCode error_code_from_name(std::string_view name) {
  static constexpr std::array kAll = {
      ErrorCode::kMalformed,     ErrorCode::kUnknownType,  ErrorCode::kInvalidArgument,
      ErrorCode::kDeviceMismatch, ErrorCode::kUnauthorized, ErrorCode::kForbidden,
      ErrorCode::kNotFound,      ErrorCode::kExists,       ErrorCode::kTooLarge,
      ErrorCode::kLimitExceeded, ErrorCode::kRateLimited,  ErrorCode::kOverloaded,
      ErrorCode::kDraining,      ErrorCode::kInternal,     ErrorCode::kBadSignature,
      ErrorCode::kUnavailable};
  for (ErrorCode c : kAll)
    if (code_name(c) == name) return c;
  return ErrorCode::kInternal;
}

ErrorCode error_code_from_status(int status) {
  switch (status) {
    case 400: return ErrorCode::kMalformed;
    case 401: return ErrorCode::kUnauthorized;
    case 403: return ErrorCode::kForbidden;
    case 404: return ErrorCode::kNotFound;
    case 409: return ErrorCode::kExists;
    case 410: return ErrorCode::kNotFound;  // gone: an expired or used one-time code
    case 413: return ErrorCode::kTooLarge;
    case 429: return ErrorCode::kRateLimited;
    case 503: return ErrorCode::kOverloaded;
    default: return ErrorCode::kInternal;
  }
}

bool retryable(ErrorCode code) {
  switch (code) {
    case ErrorCode::kRateLimited:
    case ErrorCode::kOverloaded:
    case ErrorCode::kDraining:
    case ErrorCode::kUnavailable:
    case ErrorCode::kInternal: return true;
    default: return false;
  }
}

Error network_error(std::string_view what) {
  return make_error(ErrorCode::kOverloaded, "network: " + std::string(what));
}

bool is_network_error(const Error& e) {
  return e.code == ErrorCode::kOverloaded && e.message.starts_with("network:");
}

}  // namespace tern::client
