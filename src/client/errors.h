// Error helpers of the client SDK: wire error names back to codes, and which errors are
// worth retrying. Transport failures (connect refused, reset, timeout) have no wire code;
// the SDK reports them as ErrorCode::kOverloaded with a message starting "network:", since
// both mean "the server cannot take this now, try again later".
// Pure functions; thread-safe.
#pragma once
#include <string>
#include <string_view>

#include "base/error.h"

namespace tern::client {

// Inverse of tern::code_name(); unknown names map to kInternal.
ErrorCode error_code_from_name(std::string_view name);
// Code for an HTTP status when the body carries no recognisable error name.
ErrorCode error_code_from_status(int status);
// True for conditions that may pass by themselves: rate limits, overload, draining,
// network failures and internal server errors. False for everything the same request
// would hit again (forbidden, not found, malformed, too large, ...).
bool retryable(ErrorCode code);
// A transport failure as an Error (see the header comment).
Error network_error(std::string_view what);
// True for errors made by network_error(): the server was not reached (or stopped
// answering), as opposed to a server that answered `overloaded`.
bool is_network_error(const Error& e);

}  // namespace tern::client
