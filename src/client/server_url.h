// The server address as the user writes it ("http://127.0.0.1:8080") split into what the
// transport needs. Plain TCP only: "https://" is refused (TLS is not in this client yet).
// Pure; thread-safe.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace tern::client {

struct ServerUrl {
  std::string host;
  uint16_t port = 80;
  std::string prefix;  // path prefix without trailing '/', usually empty

  // "host:port", as the HTTP Host header wants it.
  std::string host_header() const { return host + ":" + std::to_string(port); }
  std::string to_string() const { return "http://" + host_header() + prefix; }
};

// Accepts "http://host[:port][/prefix]" and, for convenience, "host:port".
Result<ServerUrl> parse_server_url(std::string_view text);

}  // namespace tern::client
