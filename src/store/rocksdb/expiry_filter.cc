#include "store/rocksdb/expiry_filter.h"

#include <rocksdb/compaction_filter.h>

#include <string_view>

#include "proto/frames.h"

namespace tern::store::rocks {
namespace {

class ExpiryFilter final : public rocksdb::CompactionFilter {
 public:
  explicit ExpiryFilter(int64_t now_ms) : now_ms_(now_ms) {}

  bool Filter(int /*level*/, const rocksdb::Slice& /*key*/, const rocksdb::Slice& value, std::string* new_value,
              bool* value_changed) const override {
    const std::string_view v(value.data(), value.size());
    if (v.find(R"("expired":true)") != std::string_view::npos) return false;  // already a tombstone
    auto meta = proto::stored_meta(v);
    if (!meta || !meta->expires_at || *meta->expires_at > now_ms_) return false;
    auto tomb = proto::render_expired(v);
    if (!tomb) return false;  // unreadable: kept (reads skip it as they do today)
    *new_value = std::move(*tomb);
    *value_changed = true;
    return false;  // keep the key: seqs stay dense
  }
  const char* Name() const override { return "tern.ExpiryFilter"; }

 private:
  const int64_t now_ms_;  // one clock reading per flush/compaction job
};

class ExpiryFilterFactory final : public rocksdb::CompactionFilterFactory {
 public:
  explicit ExpiryFilterFactory(std::function<int64_t()> clock) : clock_(std::move(clock)) {}
  std::unique_ptr<rocksdb::CompactionFilter> CreateCompactionFilter(
      const rocksdb::CompactionFilter::Context& /*context*/) override {
    return std::make_unique<ExpiryFilter>(clock_());
  }
  bool ShouldFilterTableFileCreation(rocksdb::TableFileCreationReason reason) const override {
    return reason == rocksdb::TableFileCreationReason::kFlush ||
           reason == rocksdb::TableFileCreationReason::kCompaction;
  }
  const char* Name() const override { return "tern.ExpiryFilterFactory"; }

 private:
  std::function<int64_t()> clock_;
};

}  // namespace

std::shared_ptr<rocksdb::CompactionFilterFactory> make_expiry_filter_factory(std::function<int64_t()> clock) {
  return std::make_shared<ExpiryFilterFactory>(std::move(clock));
}

}  // namespace tern::store::rocks
