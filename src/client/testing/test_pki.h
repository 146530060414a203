// Test support: a throw-away PKI made with the openssl CLI (installed by scripts/setup.sh): CAs
// (dir/<name>-ca.pem, -ca.key) and server certificates they sign, by default for localhost and
// 127.0.0.1, for tests of ternd's --tls-cert/--tls-key against clients that verify. Not part of
// the SDK. Not thread-safe: one test thread drives it.
#pragma once
#include <string>

namespace tern::client::testing {

class TestPki {
 public:
  // `dir` must exist; the files are written there.
  explicit TestPki(std::string dir) : dir_(std::move(dir)) {}

  // A self-signed CA: dir/<name>-ca.pem and dir/<name>-ca.key. False when openssl failed.
  bool make_ca(const std::string& name);
  // Writes dir/<out>.pem and dir/<out>.key, signed by CA `ca`, with serial `serial` and the
  // subjectAltName `names`.
  bool make_server(const std::string& ca, const std::string& out, int serial,
                   const std::string& names = "DNS:localhost,IP:127.0.0.1");
  std::string path(const std::string& file) const { return dir_ + "/" + file; }

 private:
  std::string dir_;
};

}  // namespace tern::client::testing
