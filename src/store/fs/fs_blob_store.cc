#include "store/fs/fs_blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

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

// Renames the durable file at `from` to the blob `id` (`renamed` says whether it got that
// far) and makes the rename durable.
Result<BlobInfo> publish(const std::string& root, const std::string& from, const std::string& id, uint64_t size,
                         bool& renamed) {
  const std::string dir = root + "/blobs/" + id.substr(0, 2);
  if (auto r = make_dir(dir); !r) return r.error();
  const std::string final_path = dir + "/" + id;
  // rename() replaces an existing blob of the same content atomically: same bytes.
  if (::rename(from.c_str(), final_path.c_str()) != 0) return sys_error("rename", errno);
  renamed = true;
  if (auto r = fsync_dir(dir); !r) return r.error();
  if (auto r = fsync_dir(root + "/blobs"); !r) return r.error();
  struct stat st {};
  if (::stat(final_path.c_str(), &st) != 0) return sys_error("stat", errno);
  return BlobInfo{id, size, mtime_ms(st)};
}

Result<void> write_all(int fd, std::string_view bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("write", errno);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return {};
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
    if (auto r = write_all(fd_, bytes); !r) return r;
    crypto_hash_sha256_update(&hash_, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
    size_.fetch_add(bytes.size(), std::memory_order_relaxed);
    return {};
  }

  uint64_t size() const override { return size_.load(std::memory_order_relaxed); }

  Result<BlobInfo> commit() override {
    if (fd_ < 0) return make_error(ErrorCode::kInternal, "blob store: writer already committed or failed");
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&hash_, digest);
    const int rc = ::fsync(fd_);
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (rc != 0) return sys_error("fsync", err);
    return publish(store_.root(), tmp_path_, hex_encode(digest, sizeof digest), size(), committed_);
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


// Does `path` still name the file open as `fd`? (It was renamed or removed if not.)
bool still_named(int fd, const std::string& path) {
  struct stat a {}, b {};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// A partial's writer. It holds flock(LOCK_EX) on the bytes' file from open_partial() until it
// is destroyed or committed; the lock goes with the descriptor (close), also when the
// process dies, so a node that crashed mid-chunk holds nothing.
class FsPartialWriter final : public PartialWriter {
 public:
  FsPartialWriter(std::string root, std::string data_path, int fd, uint64_t size, uint64_t announced)
      : root_(std::move(root)), data_path_(std::move(data_path)), fd_(fd), size_(size), announced_(announced) {}
  ~FsPartialWriter() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Result<void> write(std::string_view bytes) override {
    if (fd_ < 0) return make_error(ErrorCode::kInternal, "blob store: writer already committed");
    auto r = write_all(fd_, bytes);
    struct stat st {};
    // What reached the file counts, also after a failed write: the upload resumes there.
    if (::fstat(fd_, &st) == 0) size_.store(static_cast<uint64_t>(st.st_size), std::memory_order_relaxed);
    return r;
  }
  uint64_t size() const override { return size_.load(std::memory_order_relaxed); }
  uint64_t announced() const override { return announced_; }

  Result<BlobInfo> commit() override {
    if (fd_ < 0) return make_error(ErrorCode::kInternal, "blob store: writer already committed");
    if (size() != announced_) return make_error(ErrorCode::kInvalidArgument, "blob store: the upload is not complete");
    if (::fsync(fd_) != 0) return sys_error("fsync", errno);
    // The id: one read of the file (its bytes may have come through several processes).
    const int in = ::open(data_path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) return sys_error("open", errno);
    crypto_hash_sha256_state hash{};
    crypto_hash_sha256_init(&hash);
    std::vector<unsigned char> buf(64 * 1024);
    uint64_t at = 0;
    while (at < announced_) {
      const ssize_t n = ::pread(in, buf.data(), buf.size(), static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        ::close(in);
        return sys_error("read", err);
      }
      crypto_hash_sha256_update(&hash, buf.data(), static_cast<size_t>(n));
      at += static_cast<uint64_t>(n);
    }
    ::close(in);
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&hash, digest);
    bool renamed = false;
    auto info = publish(root_, data_path_, hex_encode(digest, sizeof digest), announced_, renamed);
    if (!renamed) return info;  // the partial is still there, and still held (abandon())
    ::unlink((data_path_ + ".meta").c_str());
    // The lock goes only now: a writer that opened the file before the rename finds, once it
    // has the lock, that the name no longer leads to its file, and writes nothing.
    ::close(fd_);
    fd_ = -1;
    return info;
  }

  void abandon() override {
    if (fd_ < 0) return;  // published, or given up already
    if (still_named(fd_, data_path_)) {
      ::unlink(data_path_.c_str());
      ::unlink((data_path_ + ".meta").c_str());
    }
    ::close(fd_);
    fd_ = -1;
  }

 private:
  const std::string root_;
  const std::string data_path_;
  int fd_;
  std::atomic<uint64_t> size_;
  const uint64_t announced_;
};

bool valid_upload_id(std::string_view id) {
  return id.size() == 32 && std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

constexpr std::string_view kMeta = ".meta";

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

}  // namespace

Result<std::unique_ptr<FsBlobStore>> FsBlobStore::open_at(const std::string& root, const std::string& temp_subdir) {
  if (sodium_init() < 0) return make_error(ErrorCode::kInternal, "blob store: libsodium failed to initialise");
  const bool name_ok = temp_subdir.size() <= 64 && temp_subdir != "." && temp_subdir != ".." &&
                       std::all_of(temp_subdir.begin(), temp_subdir.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
                       });
  if (!name_ok) return make_error(ErrorCode::kInvalidArgument, "blob store: a node name for temporaries is 1-64 of [A-Za-z0-9._-]");
  const std::string temp_dir = temp_subdir.empty() ? root + "/tmp" : root + "/tmp/" + temp_subdir;
  for (const std::string& d : {root, root + "/tmp", temp_dir, root + "/blobs", root + "/uploads"})
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

// ---- partials ----

std::string FsBlobStore::partial_path(const std::string& upload_id, const std::string& owner) const {
  return root_ + "/uploads/" + upload_id + "." + hex_encode(owner);
}

std::optional<uint64_t> FsBlobStore::read_announced(const std::string& data_path) const {
  const int fd = ::open((data_path + std::string(kMeta)).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[32];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 1 || buf[n - 1] != '\n') return std::nullopt;  // absent, or cut short by a crash
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(buf, buf + n - 1, v);
  if (ec != std::errc() || p != buf + n - 1) return std::nullopt;
  return v;
}

Result<void> FsBlobStore::create_partial(const std::string& upload_id, const std::string& owner, uint64_t announced) {
  if (!valid_upload_id(upload_id) || !valid_user_id(owner))
    return make_error(ErrorCode::kInvalidArgument, "blob store: bad upload id or owner");
  const std::string data = partial_path(upload_id, owner), meta = data + std::string(kMeta);
  // The size first: a partial is there only once both files are.
  const int m = ::open(meta.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (m < 0) {
    if (errno == EEXIST) return make_error(ErrorCode::kExists, "blob store: upload id taken");
    return sys_error("create upload", errno);
  }
  auto wrote = write_all(m, std::to_string(announced) + "\n");
  ::close(m);
  const int d = wrote ? ::open(data.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
  if (d < 0) {
    const int err = errno;
    ::unlink(meta.c_str());
    if (!wrote) return wrote.error();
    return sys_error("create upload", err);
  }
  ::close(d);
  return {};
}

Result<std::unique_ptr<PartialWriter>> FsBlobStore::open_partial(const std::string& upload_id, const std::string& owner) {
  auto none = [] { return make_error(ErrorCode::kNotFound, "no such upload"); };
  if (!valid_upload_id(upload_id) || !valid_user_id(owner)) return none();
  std::string data = partial_path(upload_id, owner);
  const std::optional<uint64_t> announced = read_announced(data);
  if (!announced) return none();
  const int fd = ::open(data.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return none();
    return sys_error("open upload", errno);
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return make_error(ErrorCode::kInvalidArgument, "a chunk of this upload is in progress");
    return sys_error("lock upload", err);
  }
  struct stat st {};
  if (!still_named(fd, data) || ::fstat(fd, &st) != 0) {  // published or expired meanwhile
    ::close(fd);
    return none();
  }
  return std::unique_ptr<PartialWriter>(
      new FsPartialWriter(root_, std::move(data), fd, static_cast<uint64_t>(st.st_size), *announced));
}

Result<std::optional<PartialInfo>> FsBlobStore::stat_partial(const std::string& upload_id, const std::string& owner) {
  if (!valid_upload_id(upload_id) || !valid_user_id(owner)) return std::optional<PartialInfo>{};
  const std::string data = partial_path(upload_id, owner);
  const std::optional<uint64_t> announced = read_announced(data);
  struct stat st {};
  if (!announced || ::stat(data.c_str(), &st) != 0) return std::optional<PartialInfo>{};
  return std::optional<PartialInfo>(
      PartialInfo{upload_id, owner, *announced, static_cast<uint64_t>(st.st_size), mtime_ms(st)});
}

Result<std::vector<PartialInfo>> FsBlobStore::partials_of(const std::string& owner, size_t limit) {
  std::vector<PartialInfo> out;
  const std::string tail = "." + hex_encode(owner) + std::string(kMeta);
  DIR* d = ::opendir((root_ + "/uploads").c_str());
  if (!d) return sys_error("opendir", errno);
  std::vector<std::string> ids;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    if (name.size() == 32 + tail.size() && ends_with(name, tail) && valid_upload_id(name.substr(0, 32)))
      ids.emplace_back(name.substr(0, 32));
  }
  ::closedir(d);
  for (const std::string& id : ids) {
    if (out.size() >= limit) break;
    auto info = stat_partial(id, owner);
    if (info && *info) out.push_back(std::move(**info));
  }
  return out;
}

Result<size_t> FsBlobStore::count_partials() {
  DIR* d = ::opendir((root_ + "/uploads").c_str());
  if (!d) return sys_error("opendir", errno);
  size_t n = 0;
  while (const dirent* e = ::readdir(d)) n += ends_with(e->d_name, kMeta);
  ::closedir(d);
  return n;
}

Result<size_t> FsBlobStore::remove_idle_partials(int64_t idle_before_ms) {
  const std::string dir = root_ + "/uploads";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return sys_error("opendir", errno);
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(d);
  size_t removed = 0;
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    const bool meta = ends_with(name, kMeta);
    const std::string data = meta ? path.substr(0, path.size() - kMeta.size()) : path;
    struct stat st {};
    if (::stat(data.c_str(), &st) != 0) {
      // A size without bytes (a crash while creating): gone once as old as an idle partial.
      if (meta && ::stat(path.c_str(), &st) == 0 && mtime_ms(st) < idle_before_ms) ::unlink(path.c_str());
      continue;
    }
    if (!meta || mtime_ms(st) >= idle_before_ms) continue;  // each partial once, by its .meta
    const int fd = ::open(data.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    // A partial a writer holds is not idle, whatever its mtime says.
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && still_named(fd, data) && ::unlink(data.c_str()) == 0) {
      ::unlink(path.c_str());
      ++removed;
    }
    ::close(fd);
  }
  return removed;
}

}  // namespace tern::store
