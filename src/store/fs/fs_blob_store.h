// FsBlobStore: the blob store contract (store/blob_store.h) on a local filesystem.
//
// Layout under `root` (the data directory's media/):
//   tmp/<random>          a writer's temporary (mode 0600)
//   blobs/<id[0..2]>/<id> a published blob
// commit(): fsync the temporary, rename it to its content name, fsync the directory — so a
// blob is either absent or complete, across crashes too. The id is the SHA-256 computed
// while writing (no second read of the file).
//
// Thread-safety: as the contract. Ownership: the composition root owns it.
#pragma once
#include <string>

#include "store/blob_store.h"

namespace tern::store {

class FsBlobStore final : public BlobStore {
 public:
  // Creates root/tmp and root/blobs (mode 0700) if needed.
  static Result<std::unique_ptr<FsBlobStore>> open_at(const std::string& root);

  Result<std::unique_ptr<BlobWriter>> create() override;
  Result<std::unique_ptr<BlobReader>> open(const std::string& id) override;
  Result<std::optional<BlobInfo>> stat(const std::string& id) override;
  Result<bool> remove(const std::string& id) override;
  Result<std::vector<BlobInfo>> list(const std::string& after, size_t limit) override;
  Result<size_t> remove_stale_temporaries(int64_t older_than_ms) override;

  const std::string& root() const { return root_; }

 private:
  explicit FsBlobStore(std::string root) : root_(std::move(root)) {}
  std::string path_of(const std::string& id) const;
  std::string root_;
};

}  // namespace tern::store
