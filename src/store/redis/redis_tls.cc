#include "store/redis/redis_tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <mutex>

#include "base/openssl_error.h"

namespace tern::store::redis {

Result<SSL_CTX*> RedisTls::load(const RedisTlsFiles& files) {
  auto bad = [](const std::string& what) {
    return make_error(ErrorCode::kInvalidArgument, "redis TLS: " + what + ": " + openssl_error_text("unknown error"));
  };
  if (files.cert_file.empty() != files.key_file.empty())
    return make_error(ErrorCode::kInvalidArgument, "redis TLS: a client certificate needs its key, and a key its certificate");
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
  if (!ctx) return bad("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  // hiredis and AsyncRedis hand over whole buffers; a partial SSL_write is then retried with
  // the rest (a moved buffer is fine: Redis's replies and commands are not kept by OpenSSL).
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY);
  if (files.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) return bad("the system's CA certificates");
  } else if (SSL_CTX_load_verify_locations(ctx.get(), files.ca_file.c_str(), nullptr) != 1) {
    return bad("CA file " + files.ca_file);
  }
  if (!files.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), files.cert_file.c_str()) != 1)
      return bad("client certificate " + files.cert_file);
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), files.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      return bad("client key " + files.key_file);
    if (SSL_CTX_check_private_key(ctx.get()) != 1)
      return bad("client key " + files.key_file + " does not match its certificate");
  }
  return ctx.release();
}

Result<std::shared_ptr<RedisTls>> RedisTls::create(const RedisTlsFiles& files) {
  auto ctx = load(files);
  if (!ctx) return ctx.error();
  return std::shared_ptr<RedisTls>(new RedisTls(files, *ctx));
}

Result<void> RedisTls::reload() {
  auto ctx = load(files_);
  if (!ctx) return ctx.error();
  SSL_CTX* old;
  {
    std::lock_guard lock(mu_);
    old = ctx_;
    ctx_ = *ctx;
  }
  SSL_CTX_free(old);  // connections made from it hold their own references
  return {};
}

RedisTls::~RedisTls() { SSL_CTX_free(ctx_); }

std::optional<int64_t> RedisTls::client_cert_not_after() const {
  std::lock_guard lock(mu_);
  const X509* cert = SSL_CTX_get0_certificate(ctx_);
  if (!cert) return std::nullopt;
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return std::nullopt;
  return static_cast<int64_t>(::timegm(&tm));
}

SSL* RedisTls::new_ssl(const std::string& host) const {
  SSL* ssl;
  {
    std::lock_guard lock(mu_);
    ssl = SSL_new(ctx_);  // takes a reference to ctx_: a reload may free it meanwhile
  }
  if (!ssl) return nullptr;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  unsigned char ip[16];
  const bool is_ip = ::inet_pton(AF_INET, host.c_str(), ip) == 1 || ::inet_pton(AF_INET6, host.c_str(), ip) == 1;
  const int named = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                          : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  if (named != 1 || (!is_ip && SSL_set_tlsext_host_name(ssl, host.c_str()) != 1)) {
    SSL_free(ssl);
    return nullptr;
  }
  return ssl;
}

}  // namespace tern::store::redis
