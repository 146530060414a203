// RedisTls: the TLS every connection to a Redis deployment uses when its URL says
// `rediss://` (RedisCredentials::tls): Redis's certificate is checked against a CA file (or
// the system's CAs) and its name against the address the node connects to, and the node
// shows a client certificate when given one (redis-server's `tls-auth-clients` asks for one
// by default). RedisConnection runs TLS on its socket through OpenSSL, hiredis only formatting
// commands and parsing replies; AsyncRedis uses asio's SSL stream on the same SSL_CTX.
//
// Policy: TLS 1.2 minimum, OpenSSL's default ciphers, peer verification always on (no
// "insecure" switch: a self-signed Redis certificate is its own CA file).
// Rotation: reload() reads the same files again (ternd does on SIGHUP); connections made
// after it use them, live ones keep the certificate they were made with until they reconnect.
// Ownership: shared (shared_ptr) by every connection options of the deployment (as const: they
// only make connections) and by whoever reloads it; an SSL_CTX lives until the last connection
// made from it ends (OpenSSL counts its references).
// Threading: new_ssl() and reload() from any thread; a mutex guards the current SSL_CTX (both
// run when a connection is made or on a signal, never per command).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
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
  // material. (OpenSSL's writes on a socket can raise SIGPIPE: RedisConnection::connect, which
  // runs TLS on its socket, ignores it process-wide; AsyncRedis's asio stream sends with
  // MSG_NOSIGNAL.)
  static Result<std::shared_ptr<RedisTls>> create(const RedisTlsFiles& files);
  ~RedisTls();
  RedisTls(const RedisTls&) = delete;
  RedisTls& operator=(const RedisTls&) = delete;

  // Reads the files again (the same paths). On an error (as create's) the current context
  // stays: connections go on being made as before.
  Result<void> reload();
  const RedisTlsFiles& files() const { return files_; }
  // When the client certificate in use stops being valid (its notAfter, Unix seconds); none
  // without a client certificate. ternd exports it and warns ahead (server.cc).
  std::optional<int64_t> client_cert_not_after() const;

  // A client SSL object for a connection to `host` (an IP address or a DNS name): its
  // certificate must name it (SNI is sent for a DNS name). Null when OpenSSL is out of memory.
  SSL* new_ssl(const std::string& host) const;

 private:
  RedisTls(RedisTlsFiles files, SSL_CTX* ctx) : files_(std::move(files)), ctx_(ctx) {}
  static Result<SSL_CTX*> load(const RedisTlsFiles& files);

  const RedisTlsFiles files_;
  mutable std::mutex mu_;
  SSL_CTX* ctx_;  // guarded by mu_; owned (one reference)
};

}  // namespace tern::store::redis
