#include "base/openssl_error.h"

#include <openssl/err.h>

namespace tern {

std::string openssl_error_text(const char* fallback) {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? fallback : out;
}

}  // namespace tern
