#include "store/redis/testing/test_certs.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "base/testing/child_process.h"

namespace tern::store::redis::testing {
namespace {

// Runs `openssl args...` to its end (its output to /dev/null); false if it failed.
bool openssl(std::vector<std::string> args) {
  args.insert(args.begin(), "openssl");
  const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  tern::test_support::ExecPlan plan(std::move(args));
  plan.stdout_to(devnull).stderr_to(devnull);
  const pid_t pid = plan.spawn();
  if (devnull >= 0) ::close(devnull);
  if (pid < 0) return false;
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// A P-256 key and a certificate for `cn` signed by the CA in `dir`, with `san` (may be empty).
bool signed_cert(const std::string& dir, const std::string& name, const std::string& cn, const std::string& san) {
  const std::string ext = dir + "/" + name + ".ext";
  {
    std::ofstream out(ext);
    out << "basicConstraints=CA:FALSE\n";
    if (!san.empty()) out << "subjectAltName=" << san << "\n";
  }
  return openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                  dir + "/" + name + ".key", "-out", dir + "/" + name + ".csr", "-subj", "/CN=" + cn}) &&
         openssl({"x509", "-req", "-in", dir + "/" + name + ".csr", "-CA", dir + "/ca.crt", "-CAkey", dir + "/ca.key",
                  "-CAcreateserial", "-out", dir + "/" + name + ".crt", "-days", "2", "-extfile", ext});
}

}  // namespace

Result<std::unique_ptr<TestCerts>> TestCerts::make(const std::string& server_name) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "tern-certs-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) return make_error(ErrorCode::kInternal, "no temp dir for test certificates");
  std::unique_ptr<TestCerts> certs(new TestCerts(tmpl));
  const std::string& d = certs->dir_;
  const bool ok = openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                           "-keyout", d + "/ca.key", "-out", d + "/ca.crt", "-days", "2", "-subj", "/CN=tern test CA"}) &&
                  signed_cert(d, "server", "redis", server_name) && signed_cert(d, "client", "tern-node", "");
  if (!ok) return make_error(ErrorCode::kInternal, "openssl could not make the test certificates (is it installed?)");
  return certs;
}

bool TestCerts::concatenate(const std::string& to, const std::vector<std::string>& from) {
  std::ofstream out(to, std::ios::trunc);
  for (const auto& f : from) {
    std::ifstream in(f);
    if (!in || !(out << in.rdbuf())) return false;
  }
  out.close();
  return out.good();
}

TestCerts::~TestCerts() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace tern::store::redis::testing
