#include "client/lean/lean_tls.h"

#include <openssl/ssl.h>

#include "client/tls.h"

namespace tern::client::lean {

Result<std::shared_ptr<const LeanTls>> make_lean_tls(const std::string& host, const std::string& ca_file) {
  auto ctx = make_tls_context(ca_file);
  if (!ctx) return ctx.error();
  // OpenSSL keeps a read and a write buffer of about 16 KiB per connection; most of tern-bench's
  // connections are idle most of the time, so let OpenSSL free them between records.
  SSL_CTX_set_mode((*ctx)->native_handle(), SSL_MODE_RELEASE_BUFFERS);
  auto tls = std::make_shared<LeanTls>();
  tls->context = std::move(*ctx);
  tls->host = host;
  return std::shared_ptr<const LeanTls>(std::move(tls));
}

std::string_view tls_failure_reason(const boost::system::error_code& ec) {
  return is_tls_verify_error(tls_handshake_error(ec)) ? "tls: certificate did not verify" : "tls handshake";
}

}  // namespace tern::client::lean
