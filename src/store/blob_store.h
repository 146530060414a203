// The blob store contract: opaque byte blobs (client-encrypted media) kept outside the
// message store, named by the SHA-256 of their content. The embedded backend is files under
// the data directory (fs/fs_blob_store.h); an object store can take its place behind the
// same interface.
//
// Visibility rule: a blob is visible (open/stat/list) only once commit() returned: the bytes
// were written to a private temporary, made durable, then published atomically. A writer
// destroyed before commit() leaves nothing behind (its temporary is removed).
//
// Partials (resumable uploads in progress) are kept under their upload id and owner, where
// every process sharing the store sees them (several ternd nodes on one shared media
// directory) and a restart keeps them: a client's next chunk may reach any node. One writer
// at a time holds a partial (open_partial() of a held one is refused); the bytes written
// before its writer went away stay, and the upload goes on from there.
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
  // Gives the bytes up after a commit() that failed or was never tried: a temporary goes
  // anyway with its writer; a partial (below) is removed now, so that an upload whose bytes
  // all arrived but could not be stored is started again (404) instead of staying complete
  // and unfinishable until it expires.
  virtual void abandon() {}
};

// A resumable upload's bytes (create_partial / open_partial). write() appends; size() is the
// bytes there. Destroyed without commit(): the bytes stay and the partial is free for the
// next writer. commit() needs all announced bytes: it computes the id (one read of the
// file), makes the blob durable, publishes it and removes the partial.
class PartialWriter : public BlobWriter {
 public:
  virtual uint64_t announced() const = 0;  // the upload's total size
};

struct PartialInfo {
  std::string upload_id;
  std::string owner;
  uint64_t announced = 0;  // total size
  uint64_t offset = 0;     // bytes there
  int64_t mtime_ms = 0;    // last written (or created)
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
  // older_than_ms; returns how many. Partials are not temporaries: they stay.
  virtual Result<size_t> remove_stale_temporaries(int64_t older_than_ms) = 0;

  // Partials. upload_id: 32 lowercase hex (the caller's random id; anything else is
  // kInvalidArgument, or kNotFound where it names an upload to look up); owner: a user id.
  // kExists if the id is taken.
  virtual Result<void> create_partial(const std::string& upload_id, const std::string& owner, uint64_t announced) = 0;
  // kNotFound: no such partial of this owner (another owner's is not found either);
  // kInvalidArgument: another writer holds it (a chunk in progress, perhaps on another node).
  virtual Result<std::unique_ptr<PartialWriter>> open_partial(const std::string& upload_id, const std::string& owner) = 0;
  virtual Result<std::optional<PartialInfo>> stat_partial(const std::string& upload_id, const std::string& owner) = 0;
  // The owner's partials (at most `limit`), and how many partials there are in all.
  virtual Result<std::vector<PartialInfo>> partials_of(const std::string& owner, size_t limit) = 0;
  virtual Result<size_t> count_partials() = 0;
  // Removes the partials last written before idle_before_ms that no writer holds; returns how many.
  virtual Result<size_t> remove_idle_partials(int64_t idle_before_ms) = 0;
};

}  // namespace tern::store
