// TLS for the SDK's connections to an https:// server (internal): the client context, the
// per-connection set-up (SNI, host name check) and how a handshake failure is reported.
// A certificate that does not verify is a permanent error (tls_verify_failed): retrying
// cannot help until the configuration changes, so the Client stops instead of looping.
// Thread-safe: the context is configured once, then only used.
#pragma once
#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/error.hpp>

#include "base/result.h"

typedef struct ssl_st SSL;

namespace tern::client {

// Verify-peer context, TLS 1.2 minimum, OpenSSL's default CA paths plus `ca_file` (PEM)
// when not empty.
Result<std::shared_ptr<boost::asio::ssl::context>> make_tls_context(const std::string& ca_file);
// Before the handshake: SNI (for a DNS name) and the check that the certificate names
// `host` (a DNS name or an IP address).
Result<void> prepare_tls(SSL* ssl, const std::string& host);
// The error for a failed TLS handshake: a certificate that did not verify → a
// non-retryable error (kInvalidArgument, message "tls: ..."); anything else is a network
// error (retryable).
Error tls_handshake_error(const boost::beast::error_code& ec);
bool is_tls_verify_error(const Error& e);

}  // namespace tern::client
