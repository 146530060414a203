#include "store/fs/fs_blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "base/hex.h"

namespace tern::store {
namespace {

Error sys_error(std::string_view what, int err) {
  return make_error(ErrorCode::kInternal, "blob store: " + std::string(what) + ": " + std::strerror(err));
}

Result<void> make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("mkdir " + path, errno);
  return {};
}

Result<void> fsync_dir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_error("open dir", errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return sys_error("fsync dir", err);
  return {};
}

int64_t mtime_ms(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
}

class FsWriter final : public BlobWriter {
 public:
  FsWriter(const FsBlobStore& store, std::string tmp_path, int fd)
      : store_(store), tmp_path_(std::move(tmp_path)), fd_(fd) {
    crypto_hash_sha256_init(&hash_);
  }
  ~FsWriter() override {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_path_.c_str());
  }

  Result<void> write(std::string_view bytes) override {
    if (fd_ < 0) return make_error(ErrorCode::kInternal, "blob store: writer already committed or failed");
    const char* p = bytes.data();
    size_t left = bytes.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return sys_error("write", errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    crypto_hash_sha256_update(&hash_, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
    size_.fetch_add(bytes.size(), std::memory_order_relaxed);
    return {};
  }

  uint64_t size() const override { return size_.load(std::memory_order_relaxed); }

  Result<BlobInfo> commit() override {
    if (fd_ < 0) return make_error(ErrorCode::kInternal, "blob store: writer already committed or failed");
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&hash_, digest);
    const std::string id = hex_encode(digest, sizeof digest);
    const int rc = ::fsync(fd_);
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (rc != 0) return sys_error("fsync", err);
    const std::string dir = store_.root() + "/blobs/" + id.substr(0, 2);
    if (auto r = make_dir(dir); !r) return r.error();
    const std::string final_path = dir + "/" + id;
    // rename() replaces an existing blob of the same content atomically: same bytes.
    if (::rename(tmp_path_.c_str(), final_path.c_str()) != 0) return sys_error("rename", errno);
    committed_ = true;
    if (auto r = fsync_dir(dir); !r) return r.error();
    if (auto r = fsync_dir(store_.root() + "/blobs"); !r) return r.error();
    struct stat st {};
    if (::stat(final_path.c_str(), &st) != 0) return sys_error("stat", errno);
    return BlobInfo{id, size(), mtime_ms(st)};
  }

 private:
  const FsBlobStore& store_;
  std::string tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
  // Read by size() from other threads (a resumable upload's offset query) while written.
  std::atomic<uint64_t> size_{0};
  crypto_hash_sha256_state hash_{};
};

class FsReader final : public BlobReader {
 public:
  FsReader(int fd, uint64_t size) : fd_(fd), size_(size) {}
  ~FsReader() override { ::close(fd_); }
  uint64_t size() const override { return size_; }
  Result<size_t> read(uint64_t offset, char* out, size_t n) override {
    size_t done = 0;
    while (done < n && offset + done < size_) {
      const ssize_t r = ::pread(fd_, out + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return sys_error("read", errno);
      }
      if (r == 0) break;
      done += static_cast<size_t>(r);
    }
    return done;
  }

 private:
  int fd_;
  uint64_t size_;
};

}  // namespace

Result<std::unique_ptr<FsBlobStore>> FsBlobStore::open_at(const std::string& root, const std::string& temp_subdir) {
  if (sodium_init() < 0) return make_error(ErrorCode::kInternal, "blob store: libsodium failed to initialise");
  const bool name_ok = temp_subdir.size() <= 64 && temp_subdir != "." && temp_subdir != ".." &&
                       std::all_of(temp_subdir.begin(), temp_subdir.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
                       });
  if (!name_ok) return make_error(ErrorCode::kInvalidArgument, "blob store: a node name for temporaries is 1-64 of [A-Za-z0-9._-]");
  const std::string temp_dir = temp_subdir.empty() ? root + "/tmp" : root + "/tmp/" + temp_subdir;
  for (const std::string& d : {root, root + "/tmp", temp_dir, root + "/blobs"})
    if (auto r = make_dir(d); !r) return r.error();
  return std::unique_ptr<FsBlobStore>(new FsBlobStore(root, temp_dir));
}

std::string FsBlobStore::path_of(const std::string& id) const {
  return root_ + "/blobs/" + id.substr(0, 2) + "/" + id;
}

Result<std::unique_ptr<BlobWriter>> FsBlobStore::create() {
  unsigned char rnd[16];
  randombytes_buf(rnd, sizeof rnd);
  std::string path = temp_dir_ + "/" + hex_encode(rnd, sizeof rnd);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return sys_error("create temporary", errno);
  return std::unique_ptr<BlobWriter>(new FsWriter(*this, std::move(path), fd));
}

Result<std::unique_ptr<BlobReader>> FsBlobStore::open(const std::string& id) {
  if (!valid_media_id(id)) return make_error(ErrorCode::kNotFound, "no such blob");
  const int fd = ::open(path_of(id).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return make_error(ErrorCode::kNotFound, "no such blob");
    return sys_error("open", errno);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return sys_error("fstat", err);
  }
  return std::unique_ptr<BlobReader>(new FsReader(fd, static_cast<uint64_t>(st.st_size)));
}

Result<std::optional<BlobInfo>> FsBlobStore::stat(const std::string& id) {
  if (!valid_media_id(id)) return std::optional<BlobInfo>{};
  struct stat st {};
  if (::stat(path_of(id).c_str(), &st) != 0) {
    if (errno == ENOENT) return std::optional<BlobInfo>{};
    return sys_error("stat", errno);
  }
  return std::optional<BlobInfo>(BlobInfo{id, static_cast<uint64_t>(st.st_size), mtime_ms(st)});
}

Result<bool> FsBlobStore::remove(const std::string& id) {
  if (!valid_media_id(id)) return false;
  if (::unlink(path_of(id).c_str()) != 0) {
    if (errno == ENOENT) return false;
    return sys_error("unlink", errno);
  }
  if (auto r = fsync_dir(root_ + "/blobs/" + id.substr(0, 2)); !r) return r.error();
  return true;
}

Result<std::vector<BlobInfo>> FsBlobStore::list(const std::string& after, size_t limit) {
  std::vector<BlobInfo> out;
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int hi = 0; hi < 16 && out.size() < limit; ++hi) {
    for (int lo = 0; lo < 16 && out.size() < limit; ++lo) {
      const std::string sub{kDigits[hi], kDigits[lo]};
      if (!after.empty() && sub < after.substr(0, 2)) continue;
      const std::string dir = root_ + "/blobs/" + sub;
      DIR* d = ::opendir(dir.c_str());
      if (!d) {
        if (errno == ENOENT) continue;
        return sys_error("opendir", errno);
      }
      std::vector<std::string> names;
      while (const dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (valid_media_id(name) && name > after) names.push_back(std::move(name));
      }
      ::closedir(d);
      std::sort(names.begin(), names.end());
      for (auto& n : names) {
        if (out.size() >= limit) break;
        struct stat st {};
        if (::stat((dir + "/" + n).c_str(), &st) != 0) continue;  // removed meanwhile
        out.push_back(BlobInfo{std::move(n), static_cast<uint64_t>(st.st_size), mtime_ms(st)});
      }
    }
  }
  return out;
}

Result<size_t> FsBlobStore::remove_stale_temporaries(int64_t older_than_ms) {
  const std::string& dir = temp_dir_;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return sys_error("opendir", errno);
  size_t removed = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = dir + "/" + name;
    struct stat st {};
    // Regular files only: tmp/ of a shared root also holds the other nodes' directories.
    if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && mtime_ms(st) < older_than_ms &&
        ::unlink(path.c_str()) == 0)
      ++removed;
  }
  ::closedir(d);
  return removed;
}

}  // namespace tern::store
