// OpenSSL's reasons for the last failures on the calling thread, for an error message: the
// queue is read (and emptied) oldest first, joined with "; ". Its own target
// (tern_base_openssl) so that tern_base does not link OpenSSL; used by the gateway's TLS and
// the Redis client's. Any thread (OpenSSL's error queue is per thread).
#pragma once
#include <string>

namespace tern {

// `fallback` when the queue is empty.
std::string openssl_error_text(const char* fallback = "unknown error");

}  // namespace tern
