#include "gateway/tls_context.h"

#include <csignal>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "base/openssl_error.h"

namespace tern::gateway {

namespace {

Result<SSL_CTX*> load(const std::string& cert_file, const std::string& key_file) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return make_error(ErrorCode::kInternal, "SSL_CTX_new: " + openssl_error_text());
  auto fail = [&](const std::string& what) -> Result<SSL_CTX*> {
    std::string reason = openssl_error_text();
    SSL_CTX_free(ctx);
    return make_error(ErrorCode::kInvalidArgument, what + ": " + reason);
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // Partial writes and a moving buffer: the WebSocket session stages its frames and may
  // retry from a different address; released buffers keep idle connections small.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) return fail("TLS certificate " + cert_file);
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) return fail("TLS key " + key_file);
  if (SSL_CTX_check_private_key(ctx) != 1) return fail("TLS key " + key_file + " does not match " + cert_file);
  return ctx;
}

}  // namespace

void SslDeleter::operator()(SSL* ssl) const { SSL_free(ssl); }

Result<std::shared_ptr<TlsContext>> TlsContext::create(std::string cert_file, std::string key_file) {
  // OpenSSL writes to the socket with write(2), which raises SIGPIPE when the peer has gone
  // (our own writes use MSG_NOSIGNAL): a server speaking TLS ignores SIGPIPE process-wide.
  std::signal(SIGPIPE, SIG_IGN);
  std::shared_ptr<TlsContext> tls(new TlsContext(std::move(cert_file), std::move(key_file)));
  if (auto r = tls->reload(); !r) return r.error();
  return tls;
}

TlsContext::~TlsContext() { SSL_CTX_free(current_); }

Result<void> TlsContext::reload() {
  auto ctx = load(cert_file_, key_file_);
  if (!ctx) return ctx.error();
  SSL_CTX* old = nullptr;
  {
    std::lock_guard lock(mu_);
    old = current_;
    current_ = *ctx;
  }
  SSL_CTX_free(old);  // connections made from it keep their own references
  return ok_result();
}

SslPtr TlsContext::new_ssl() const {
  std::lock_guard lock(mu_);
  return SslPtr(SSL_new(current_));
}

}  // namespace tern::gateway
