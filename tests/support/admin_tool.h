// Test support for the admin endpoint (ternd --admin-listen, docs/protocol.md §16): a token
// file that lives as long as the object, the admin port a ternd logged, and ternctl run
// against it. Used by the single-node admin suite and the Redis multi-node suite. Test
// thread only.
#pragma once
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <utility>
#include <vector>

namespace tern::test {

inline constexpr const char* kAdminToken = "admin-token-for-tests-0123456789";

// The admin token in a temporary file (removed with the object), and the ternd options that
// open the admin endpoint on a free loopback port behind it.
class AdminTokenFile {
 public:
  AdminTokenFile()
      : path_(std::filesystem::temp_directory_path() /
              ("tern-admin-" + std::to_string(::getpid()) + "-" + std::to_string(next()) + ".token")) {
    std::ofstream(path_) << kAdminToken << "\n";
  }
  ~AdminTokenFile() { std::filesystem::remove(path_); }
  AdminTokenFile(const AdminTokenFile&) = delete;
  AdminTokenFile& operator=(const AdminTokenFile&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::vector<std::string> ternd_args() const {
    return {"--admin-listen", "127.0.0.1:0", "--admin-token-file", path_.string()};
  }

 private:
  static int next() {
    static int n = 0;
    return ++n;
  }
  std::filesystem::path path_;
};

// The admin port in a ternd's log ("event=admin_listening ... port=N", written before
// "listening"); 0 (and a recorded failure) if absent.
inline uint16_t admin_port_in_log(const std::string& log) {
  std::smatch m;
  if (!std::regex_search(log, m, std::regex("event=admin_listening address=127.0.0.1 port=([0-9]+)"))) {
    ADD_FAILURE() << "no admin_listening in the log:\n" << log;
    return 0;
  }
  return static_cast<uint16_t>(std::stoi(m[1]));
}

// Runs ternctl against the admin endpoint on `port` with `token_file` and `args`; returns its
// exit code and stdout.
inline std::pair<int, std::string> run_ternctl(uint16_t port, const std::string& token_file, const std::string& args) {
  const char* dir = std::getenv("TERN_BIN_DIR");
  const std::string bin = std::string(dir ? dir : "build/bin") + "/ternctl";
  const std::string cmd = bin + " --admin http://127.0.0.1:" + std::to_string(port) + " --token-file " + token_file +
                          " " + args + " 2>/dev/null";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace tern::test
