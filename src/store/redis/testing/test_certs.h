// Test support: certificates for TLS to Redis, made by Debian's `openssl` command in a temp
// directory (removed with the object): a CA of their own, a server certificate signed by it
// (for 127.0.0.1, or for a DNS name only, to test a name that does not match), and a client
// certificate signed by it (redis-server's tls-auth-clients asks for one). Keys are P-256
// (fast to make). Not thread-safe; one test thread.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"

namespace tern::store::redis::testing {

class TestCerts {
 public:
  // `server_name`: the server certificate's subjectAltName ("IP:127.0.0.1" by default, or
  // e.g. "DNS:redis.test").
  static Result<std::unique_ptr<TestCerts>> make(const std::string& server_name = "IP:127.0.0.1");
  ~TestCerts();  // removes the directory
  TestCerts(const TestCerts&) = delete;
  TestCerts& operator=(const TestCerts&) = delete;

  const std::string& dir() const { return dir_; }
  std::string ca() const { return dir_ + "/ca.crt"; }
  std::string server_cert() const { return dir_ + "/server.crt"; }
  std::string server_key() const { return dir_ + "/server.key"; }
  std::string client_cert() const { return dir_ + "/client.crt"; }
  std::string client_key() const { return dir_ + "/client.key"; }

  // Writes the files `from`, one after the other, into `to` (replaced): a CA file holding two
  // CAs, or a node's certificate swapped for another. False if a file could not be read or
  // `to` written.
  static bool concatenate(const std::string& to, const std::vector<std::string>& from);

 private:
  explicit TestCerts(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace tern::store::redis::testing
