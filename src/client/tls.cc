#include "client/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>

#include "client/errors.h"

namespace tern::client {

namespace asio = boost::asio;

Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const std::string& ca_file) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  boost::system::error_code ec;
  ctx->set_verify_mode(asio::ssl::verify_peer, ec);
  if (!ec) ctx->set_default_verify_paths(ec);
  if (ec) return make_error(ErrorCode::kInternal, "tls: " + ec.message());
  if (!ca_file.empty()) {
    ctx->load_verify_file(ca_file, ec);
    if (ec) return make_error(ErrorCode::kInvalidArgument, "tls: CA file " + ca_file + ": " + ec.message());
  }
  return ctx;
}

Result<void> prepare_tls(SSL* ssl, const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  const bool is_ip = !ec;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                       : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  if (ok != 1) return make_error(ErrorCode::kInvalidArgument, "tls: cannot check host " + host);
  if (!is_ip && SSL_set_tlsext_host_name(ssl, host.c_str()) != 1)
    return make_error(ErrorCode::kInvalidArgument, "tls: bad server name " + host);
  return ok_result();
}

Error tls_handshake_error(const boost::beast::error_code& ec) {
  if (ec.category() == asio::error::get_ssl_category() &&
      ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_CERTIFICATE_VERIFY_FAILED)
    return make_error(ErrorCode::kInvalidArgument, "tls: the server's certificate did not verify (" + ec.message() + ")");
  return network_error("tls handshake: " + ec.message());
}

bool is_tls_verify_error(const Error& e) {
  return e.code == ErrorCode::kInvalidArgument && e.message.starts_with("tls:");
}

}  // namespace tern::client
