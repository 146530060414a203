// The server address as the user writes it ("http://127.0.0.1:8080",
// "https://chat.example:8443") split into what the transport needs. An https:// URL carries
// the TLS client context every connection to it uses: the certificate chain is verified
// against OpenSSL's default paths plus an optional CA file (a private CA), and the
// certificate must name the host (DNS name or IP address).
// Thread-safe: ServerUrl is a value; its TLS context is shared read-only.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include <memory>

#include "base/result.h"

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl

namespace tern::client {

struct ServerUrl {
  std::string host;
  uint16_t port = 80;
  std::string prefix;  // path prefix without trailing '/', usually empty
  // https: TLS on every connection, with this context (never null then).
  std::shared_ptr<boost::asio::ssl::context> tls;

  // "host:port", as the HTTP Host header wants it.
  std::string host_header() const { return host + ":" + std::to_string(port); }
  std::string to_string() const { return (tls ? "https://" : "http://") + host_header() + prefix; }
};

// Accepts "http://host[:port][/prefix]", "https://host[:port][/prefix]" (port 443 by default)
// and, for convenience, "host:port". `ca_file`: a PEM file of extra trusted CAs for https
// (an unreadable file is an error; ignored for http).
Result<ServerUrl> parse_server_url(std::string_view text, const std::string& ca_file = {});

}  // namespace tern::client
