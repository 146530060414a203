#include "services/conversation_ids.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace tern::services {
namespace fs = std::filesystem;
namespace {

constexpr size_t kSecretBytes = 32;

std::mutex& secret_mu() {
  static std::mutex mu;
  return mu;
}
std::string& secret_storage() {
  static std::string s;
  return s;
}

Error io_error(const std::string& what, const std::string& path) {
  return make_error(ErrorCode::kInternal, what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

Result<void> secure_data_dir(const std::string& dir) {
  ::umask(077);  // every file created from now on (RocksDB's included) is owner-only
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(ErrorCode::kInternal, "create " + dir + ": " + ec.message());
  if (::chmod(dir.c_str(), 0700) != 0) return io_error("chmod", dir);
  // Files left by an older version (or created under another umask) are tightened too.
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const auto& p = it->path();
    if (it->is_symlink(ec)) continue;
    const mode_t want = it->is_directory(ec) ? 0700 : 0600;
    if (::chmod(p.c_str(), want) != 0) return io_error("chmod", p.string());
  }
  if (ec) return make_error(ErrorCode::kInternal, "scan " + dir + ": " + ec.message());
  return {};
}

Result<std::string> load_or_create_secret(const std::string& path) {
  if (sodium_init() < 0) return make_error(ErrorCode::kInternal, "libsodium failed to initialize");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    unsigned char fresh[kSecretBytes];
    randombytes_buf(fresh, sizeof fresh);
    const std::string tmp = path + ".tmp";
    int w = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w < 0) return io_error("create", tmp);
    const bool ok = ::write(w, fresh, sizeof fresh) == static_cast<ssize_t>(sizeof fresh) && ::fsync(w) == 0;
    ::close(w);
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) return io_error("write", path);
    // The rename must survive a crash too, or a restart would make new ids.
    if (int d = ::open(fs::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
      ::fsync(d);
      ::close(d);
    }
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) return io_error("open", path);
  unsigned char buf[kSecretBytes + 1];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n != static_cast<ssize_t>(kSecretBytes))
    return make_error(ErrorCode::kInternal, path + " must hold exactly 32 bytes");
  ::chmod(path.c_str(), 0600);
  return std::string(reinterpret_cast<const char*>(buf), kSecretBytes);
}

void set_direct_id_secret(const std::string& secret) {
  std::lock_guard lock(secret_mu());
  secret_storage() = secret;
}

std::string keyed_direct_conversation_id(const std::string& a, const std::string& b) {
  std::string key;
  {
    std::lock_guard lock(secret_mu());
    key = secret_storage();
  }
  if (key.empty()) {  // no secret set (unit tests, tools): a random one for this process
    unsigned char fresh[kSecretBytes];
    randombytes_buf(fresh, sizeof fresh);
    std::lock_guard lock(secret_mu());
    if (secret_storage().empty()) secret_storage().assign(reinterpret_cast<const char*>(fresh), sizeof fresh);
    key = secret_storage();
  }
  const std::string pair = a < b ? a + '\n' + b : b + '\n' + a;
  unsigned char digest[16];
  crypto_generichash(digest, sizeof digest, reinterpret_cast<const unsigned char*>(pair.data()), pair.size(),
                     reinterpret_cast<const unsigned char*>(key.data()), key.size());
  char hex[33];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return std::string("d-") + hex;
}

Error conversation_access_error() {
  return make_error(ErrorCode::kForbidden, "not a member of this conversation");
}

}  // namespace tern::services
