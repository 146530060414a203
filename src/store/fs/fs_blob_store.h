// FsBlobStore: the blob store contract (store/blob_store.h) on a local filesystem.
//
// Layout under `root` (the data directory's media/, or --media-dir):
//   <temp>/<random>       a writer's temporary (mode 0600); <temp> is tmp/ or, when several
//                         nodes share the root (ternd --media-dir on a shared filesystem),
//                         tmp/<node>/, so that a node cleaning up its own temporaries at start
//                         never removes an upload in progress on another node
//   blobs/<id[0..2]>/<id> a published blob (content-addressed: two nodes publishing the same
//                         bytes rename onto the same name, which is harmless)
//   uploads/<uid>.<hex(owner)>.meta  a partial's announced size (written first)
//   uploads/<uid>.<hex(owner)>       its bytes; a writer holds flock(LOCK_EX) on it, so a
//                         second writer (this process or another node's on the shared
//                         directory) is refused while a chunk streams; mtime = last write
//                         (the owner is in the name, hex-encoded: a lookup by another user
//                         finds nothing, and counting a user's partials reads no file)
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
  // Creates root/tmp[/temp_subdir] and root/blobs (mode 0700) if needed. temp_subdir: empty
  // for a root of one node; the node's name (letters, digits, '.', '_', '-') when shared.
  static Result<std::unique_ptr<FsBlobStore>> open_at(const std::string& root, const std::string& temp_subdir = "");

  Result<std::unique_ptr<BlobWriter>> create() override;
  Result<std::unique_ptr<BlobReader>> open(const std::string& id) override;
  Result<std::optional<BlobInfo>> stat(const std::string& id) override;
  Result<bool> remove(const std::string& id) override;
  Result<std::vector<BlobInfo>> list(const std::string& after, size_t limit) override;
  Result<size_t> remove_stale_temporaries(int64_t older_than_ms) override;
  Result<void> create_partial(const std::string& upload_id, const std::string& owner, uint64_t announced) override;
  Result<std::unique_ptr<PartialWriter>> open_partial(const std::string& upload_id, const std::string& owner) override;
  Result<std::optional<PartialInfo>> stat_partial(const std::string& upload_id, const std::string& owner) override;
  Result<std::vector<PartialInfo>> partials_of(const std::string& owner, size_t limit) override;
  Result<size_t> count_partials() override;
  Result<size_t> remove_idle_partials(int64_t idle_before_ms) override;

  const std::string& root() const { return root_; }

 private:
  FsBlobStore(std::string root, std::string temp_dir) : root_(std::move(root)), temp_dir_(std::move(temp_dir)) {}
  std::string path_of(const std::string& id) const;
  std::string partial_path(const std::string& upload_id, const std::string& owner) const;
  // The announced size in a partial's .meta; nullopt if absent or unreadable.
  std::optional<uint64_t> read_announced(const std::string& data_path) const;
  std::string root_;
  std::string temp_dir_;  // root_/tmp or root_/tmp/<node>
};

}  // namespace tern::store
