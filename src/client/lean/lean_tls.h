// LeanTls: what a lean connection to an https:// (wss://) server needs: the process's one TLS
// client context (the SDK's, client/tls.h: peer verification against OpenSSL's default paths
// plus an optional CA file, TLS 1.2 minimum) and the name the certificate must carry. One per
// process, shared by every connection: 20,000 clients must not mean 20,000 contexts.
//
// Thread-safe once made: the context is only used to create per-connection SSL objects.
#pragma once
#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"

namespace tern::client::lean {

struct LeanTls {
  std::shared_ptr<boost::asio::ssl::context> context;
  std::string host;  // checked against the certificate (DNS name or IP address), and the SNI
};

// The context for `host`; `ca_file` (PEM) is trusted in addition to the system store when not
// empty. An unreadable or malformed CA file is an error.
Result<std::shared_ptr<const LeanTls>> make_lean_tls(const std::string& host, const std::string& ca_file);

// A short, stable reason for a failed TLS handshake, to count by: "tls: certificate did not
// verify" or "tls handshake".
std::string_view tls_failure_reason(const boost::system::error_code& ec);

}  // namespace tern::client::lean
