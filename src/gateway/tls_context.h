// TlsContext: the server's TLS configuration (certificate chain and key, PEM files), as an
// OpenSSL SSL_CTX that can be replaced while connections use the old one.
//
// Ownership: held by shared_ptr in the GatewayContext. Each connection's SSL object holds a
// reference of its own on the SSL_CTX it was created from (OpenSSL counts them), so after a
// reload the old SSL_CTX lives until its last connection ends; nothing here waits for that.
// Threading: every method is safe from any thread (the current SSL_CTX is swapped under a
// mutex; new_ssl() takes it for the few instructions of SSL_new).
//
// Policy: TLS 1.2 minimum, OpenSSL's default ciphers and groups, no renegotiation, no
// client certificates. SSL_MODE_RELEASE_BUFFERS: an idle connection gives its record
// buffers back (see docs/benchmarks.md for what an idle TLS connection still costs).
#pragma once
#include <memory>
#include <mutex>
#include <string>

#include "base/result.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace tern::gateway {

struct SslDeleter {
  void operator()(SSL* ssl) const;
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

class TlsContext {
 public:
  // Loads `cert_file` (PEM: the certificate, then its chain) and `key_file` (PEM private
  // key). Errors (kInvalidArgument) name the file and OpenSSL's reason; never key material.
  // Sets SIGPIPE to be ignored in the process (OpenSSL's socket writes would raise it).
  static Result<std::shared_ptr<TlsContext>> create(std::string cert_file, std::string key_file);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // Re-reads both files. On success new connections get the new certificate; on error the
  // current one stays and the error says why.
  Result<void> reload();
  // A server-side SSL for a new connection, from the current SSL_CTX; null if OpenSSL is
  // out of memory.
  SslPtr new_ssl() const;

 private:
  TlsContext(std::string cert_file, std::string key_file) : cert_file_(std::move(cert_file)), key_file_(std::move(key_file)) {}
  const std::string cert_file_;
  const std::string key_file_;
  mutable std::mutex mu_;
  SSL_CTX* current_ = nullptr;  // guarded by mu_; one reference owned here
};

}  // namespace tern::gateway
