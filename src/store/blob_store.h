// The blob store contract: opaque byte blobs (client-encrypted media) kept outside the
// message store, named by the SHA-256 of their content. The embedded backend is files under
// the data directory (fs/fs_blob_store.h); an object store can take its place behind the
// same interface.
//
// Visibility rule: a blob is visible (open/stat/list) only once commit() returned: the bytes
// were written to a private temporary, made durable, then published atomically. A writer
// destroyed before commit() leaves nothing behind (its temporary is removed).
//
// Thread-safety: BlobStore methods may be called from any thread. A BlobWriter or a
// BlobReader is used by one thread at a time (its owner). Ownership: the server's
// composition root owns the BlobStore; writers/readers are owned by their caller and may
// outlive a remove() of their blob (a reader keeps reading what it opened).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/ids.h"
#include "base/result.h"

namespace tern::store {

// A blob id is the lowercase hex SHA-256 of the blob's bytes (tern::valid_media_id).

struct BlobInfo {
  std::string id;
  uint64_t size = 0;
  int64_t mtime_ms = 0;  // when it was published (ms since the epoch)
};

class BlobWriter {
 public:
  virtual ~BlobWriter() = default;  // without commit(): the temporary is removed
  virtual Result<void> write(std::string_view bytes) = 0;
  virtual uint64_t size() const = 0;  // bytes written so far; callable from any thread
  // Makes the bytes durable and publishes them under their content id. Publishing content
  // that already exists succeeds (same id) and keeps one copy. The writer is spent after.
  virtual Result<BlobInfo> commit() = 0;
};

class BlobReader {
 public:
  virtual ~BlobReader() = default;
  virtual uint64_t size() const = 0;
  // Reads up to n bytes at offset; fewer only at the end of the blob.
  virtual Result<size_t> read(uint64_t offset, char* out, size_t n) = 0;
};

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  virtual Result<std::unique_ptr<BlobWriter>> create() = 0;
  // kNotFound if there is no such blob.
  virtual Result<std::unique_ptr<BlobReader>> open(const std::string& id) = 0;
  virtual Result<std::optional<BlobInfo>> stat(const std::string& id) = 0;
  // true if it existed.
  virtual Result<bool> remove(const std::string& id) = 0;
  // Published blobs with id > after, in id order, at most limit (for sweeps in pages).
  virtual Result<std::vector<BlobInfo>> list(const std::string& after, size_t limit) = 0;
  // Removes temporaries of writers that are gone (a crash) and were last written before
  // older_than_ms; returns how many.
  virtual Result<size_t> remove_stale_temporaries(int64_t older_than_ms) = 0;
};

}  // namespace tern::store
