// RedisTls: the TLS every connection to a Redis deployment uses when its URL says
// `rediss://` (RedisCredentials::tls): Redis's certificate is checked against a CA file (or
// the system's CAs) and its name against the address the node connects to, and the node
// shows a client certificate when given one (redis-server's `tls-auth-clients` asks for one
// by default). RedisConnection runs TLS on its socket through OpenSSL, hiredis only formatting
// commands and parsing replies; AsyncRedis uses asio's SSL stream on the same SSL_CTX.
//
// Policy: TLS 1.2 minimum, OpenSSL's default ciphers, peer verification always on (no
// "insecure" switch: a self-signed Redis certificate is its own CA file).
// Ownership: shared (shared_ptr) by every connection options of the deployment; the SSL_CTX
// lives until the last connection made from it ends (OpenSSL counts its references).
// Threading: const after create(); new_ssl() from any thread.
#pragma once
#include <memory>
#include <string>

#include "base/result.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace tern::store::redis {

struct RedisTlsFiles {
  std::string ca_file;    // PEM CA bundle that signed Redis's certificate; empty: the system's CAs
  std::string cert_file;  // PEM client certificate (with its chain); empty: none
  std::string key_file;   // PEM key of cert_file; given with it or not at all
};

class RedisTls {
 public:
  // Loads the files. Errors (kInvalidArgument) name the file and OpenSSL's reason, never key
  // material. Sets SIGPIPE to be ignored in the process (OpenSSL's socket writes raise it).
  static Result<std::shared_ptr<const RedisTls>> create(const RedisTlsFiles& files);
  ~RedisTls();
  RedisTls(const RedisTls&) = delete;
  RedisTls& operator=(const RedisTls&) = delete;

  // A client SSL object for a connection to `host` (an IP address or a DNS name): its
  // certificate must name it (SNI is sent for a DNS name). Null when OpenSSL is out of memory.
  SSL* new_ssl(const std::string& host) const;
  SSL_CTX* native() const { return ctx_; }

 private:
  explicit RedisTls(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

// OpenSSL's reason for the last failure on this thread (its error queue, emptied), or
// `fallback` when the queue is empty.
std::string tls_error_text(const char* fallback);

}  // namespace tern::store::redis
