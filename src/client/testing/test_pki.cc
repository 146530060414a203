#include "client/testing/test_pki.h"

#include <cstdlib>
#include <fstream>

namespace tern::client::testing {
namespace {

bool run(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

}  // namespace

bool TestPki::make_ca(const std::string& name) {
  return run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=" + name +
             " -keyout " + path(name + "-ca.key") + " -out " + path(name + "-ca.pem"));
}

bool TestPki::make_server(const std::string& ca, const std::string& out, int serial, const std::string& names) {
  std::ofstream(path("ext.cnf"), std::ios::trunc) << "subjectAltName=" << names << "\n";
  return run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost -keyout " +
             path(out + ".key") + " -out " + path(out + ".csr")) &&
         run("openssl x509 -req -days 2 -in " + path(out + ".csr") + " -CA " + path(ca + "-ca.pem") + " -CAkey " +
             path(ca + "-ca.key") + " -set_serial " + std::to_string(serial) + " -extfile " + path("ext.cnf") +
             " -out " + path(out + ".pem"));
}

}  // namespace tern::client::testing
