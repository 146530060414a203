// Error codes and the Error value. Expected failures (client input, network, disk) travel
// as values; these codes are the stable strings of wire-v1's `error` frames and HTTP bodies.
// Thread-safe: plain values.
#pragma once
#include <string>
#include <string_view>

namespace tern {

enum class ErrorCode {
  kOk = 0,
  kMalformed,        // 400: not JSON, wrong types, missing fields, bad base64
  kUnknownType,      // 400: frame `type` not known
  kInvalidArgument,  // 400: well-formed but unacceptable values (bad user id, ...)
  kDeviceMismatch,   // 400: `bodies` keys differ from the member devices
  kUnauthorized,     // 401: missing or bad token
  kForbidden,        // 403: not a member / not an admin
  kNotFound,         // 404
  kExists,           // 409
  kTooLarge,         // 413: frame, body or request over its limit
  kLimitExceeded,    // 403/409-ish: too many members or devices
  kRateLimited,      // 429
  kOverloaded,       // 503: a bounded queue is full
  kDraining,         // 503: the server is shutting down
  kInternal,         // 500: store failure and other bugs
  kUnavailable,      // 503: the shared store (Redis) cannot be reached; retry (nothing was acknowledged)
  kBadSignature,     // 400: a signed prekey whose signature the identity key does not verify
  // A new code goes here, and kLastErrorCode below moves to it (error.cc static_asserts it).
};

// The highest code: decoders of codes from elsewhere (services/send_forwarding.h) refuse any
// above it. A code added after it without moving it fails to compile: error.cc names every
// code (-Wswitch as an error there) and static_asserts that the one after this has no name.
inline constexpr ErrorCode kLastErrorCode = ErrorCode::kBadSignature;

// Stable wire name of a code, e.g. "not_member" style snake case.
std::string_view code_name(ErrorCode code);
// HTTP status that carries the code.
int http_status(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  // Optional extra fields for the error frame / HTTP body, as the members of a JSON object
  // (e.g. device_mismatch's {"missing":[…],"extra":[…]}). Empty for most errors.
  std::string detail_json;
};

inline Error make_error(ErrorCode code, std::string message) { return Error{code, std::move(message), {}}; }

}  // namespace tern
