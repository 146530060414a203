// What RocksDbStore's two source files share (rocksdb_store.cc: open and commit;
// rocksdb_store_reads.cc: the reads): its error values, slice conversions, the point read and
// the bounded prefix scan, each counting tern_store_reads_total. Internal to this folder.
// Thread-safety: free functions; RocksDB's DB is safe for concurrent reads.
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>

#include "base/metrics.h"
#include "base/result.h"
#include "store/rocksdb/encoding.h"
#include "store/store_metrics.h"

namespace tern::store::rocks_access {

inline Error rocks_error(std::string_view what, const rocksdb::Status& st) {
  return make_error(ErrorCode::kInternal, "rocksdb " + std::string(what) + ": " + st.ToString());
}

inline Error corrupt_error(std::string_view what) {
  return make_error(ErrorCode::kInternal, "store: corrupt " + std::string(what) + " record");
}

inline Error nul_error() {
  return make_error(ErrorCode::kInvalidArgument, "store: user and conversation ids must not contain NUL");
}

inline std::string_view sv(const rocksdb::Slice& s) { return {s.data(), s.size()}; }
inline rocksdb::Slice slice(std::string_view s) { return {s.data(), s.size()}; }

// Every read call counts (tern_store_reads_total, shared with the other backends).
inline Counter& store_reads() { return reads_counter(); }

// Point read. Ok(false) when absent; the value stays pinned in `out` until it is reset.
inline Result<bool> get_pinned(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, std::string_view key,
                        rocksdb::PinnableSlice& out) {
  store_reads().inc();
  rocksdb::Status st = db->Get(rocksdb::ReadOptions(), cf, slice(key), &out);
  if (st.IsNotFound()) return false;
  if (!st.ok()) return rocks_error("get", st);
  return true;
}

enum class Step { kNext, kStop, kCorrupt };

// Visits every row whose key starts with `prefix`, from `start` (>= prefix) on, with a
// bounded iterator: f(key tail after prefix, value) → Step.
template <typename F>
Result<void> scan(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, std::string_view what, const std::string& prefix,
                  const std::string& start, F&& f) {
  store_reads().inc();
  const std::string upper = rocks::prefix_successor(prefix);
  const rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  if (!upper.empty()) ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, cf));
  for (it->Seek(start); it->Valid(); it->Next()) {
    std::string_view key = sv(it->key());
    if (key.size() < prefix.size() || key.substr(0, prefix.size()) != prefix) break;
    Step step = f(key.substr(prefix.size()), sv(it->value()));
    if (step == Step::kStop) break;
    if (step == Step::kCorrupt) return corrupt_error(what);
  }
  if (!it->status().ok()) return rocks_error("iterate", it->status());
  return {};
}

}  // namespace tern::store::rocks_access
