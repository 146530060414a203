// ExpiryFilterFactory: the RocksDB compaction filter of the message log (issue 11). Every
// flush and compaction that rewrites a message whose expires_at has passed writes its
// tombstone (proto::render_expired: no body, no bodies, no media) instead of the stored
// frame, so once the files holding the old value are rewritten the ciphertext is gone from
// disk. RocksDbStore::erase_expired() forces that rewrite for the expired ranges.
//
// Thread-safety: RocksDB calls filters from its background threads; the factory and its
// filters only read the clock (thread-safe) and the values handed to them. Owned by the
// column family options (shared_ptr).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

namespace rocksdb {
class CompactionFilterFactory;
}

namespace tern::store::rocks {

// clock: ms since the epoch (injectable for tests).
std::shared_ptr<rocksdb::CompactionFilterFactory> make_expiry_filter_factory(std::function<int64_t()> clock);

}  // namespace tern::store::rocks
