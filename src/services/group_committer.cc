#include "services/group_committer.h"

#include <optional>

#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"

namespace tern::services {
namespace {
Histogram& batch_sizes_metric = MetricsRegistry::global().histogram(
      "tern_store_batch_entries", "entries (sends, acks, ...) per group-committed store write",
      {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096});
Histogram& batch_sizes() { return batch_sizes_metric; }
Histogram& commit_seconds_metric = MetricsRegistry::global().histogram("tern_store_commit_seconds",
                                                       "duration of one store commit (incl. fsync)", latency_buckets());
Histogram& commit_seconds() { return commit_seconds_metric; }
// Store write ops committed (a log append, an inbox mark, a cursor...: each one op of the
// store contract): what docs/fanout.md reports as store writes per message.
Counter& store_writes_metric =
    MetricsRegistry::global().counter("tern_store_writes_total", "store write ops committed (store contract ops)");
Counter& store_writes() { return store_writes_metric; }
}  // namespace

GroupCommitter::GroupCommitter(store::Store& store, bool sync, size_t queue_limit, size_t max_batch, Loops* loops)
    : store_(store), sync_(sync), queue_limit_(queue_limit), max_batch_(max_batch), loops_(loops) {}

GroupCommitter::~GroupCommitter() { stop(); }

void GroupCommitter::start() { thread_ = std::thread([this] { run(); }); }

void GroupCommitter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool GroupCommitter::submit(store::Batch batch, Completion done) {
  std::optional<Error> rejected;
  {
    std::lock_guard lock(mu_);
    if (failed_) rejected = make_error(ErrorCode::kInternal, "store writes failed; node needs a restart");
    else if (stopping_) rejected = make_error(ErrorCode::kDraining, "server is shutting down");
    else if (pending_.size() >= queue_limit_) rejected = make_error(ErrorCode::kOverloaded, "write queue full, retry later");
    else pending_.push_back(Entry{std::move(batch), std::move(done), loops_ ? loops_->here() : Loops::kNone});
  }
  if (rejected) {
    if (done) done(Result<void>(*rejected));
    return false;
  }
  cv_.notify_one();
  return true;
}

void GroupCommitter::run() {
  std::vector<Entry> work;
  store::Batch merged;
  // Completions by loop; the last slot is for submitters that are not loops.
  const size_t nloops = loops_ ? loops_->size() : 0;
  std::vector<std::vector<Completion>> by_loop(nloops + 1);
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (pending_.empty() && stopping_) return;
      const size_t n = std::min(pending_.size(), max_batch_);
      work.clear();
      for (size_t i = 0; i < n; ++i) {
        work.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
    }
    merged.ops.clear();
    for (auto& e : work)
      for (auto& op : e.batch.ops) merged.ops.push_back(std::move(op));
    const int64_t t0 = mono_us();
    Result<void> r = store_.commit(merged, sync_);
    if (r) store_writes().inc(merged.ops.size());
    commit_seconds().observe(static_cast<double>(mono_us() - t0) / 1e6);
    batch_sizes().observe(static_cast<double>(work.size()));
    if (!r && r.error().code == ErrorCode::kUnavailable) {
      // A shared store (Redis) out of reach: these entries fail, later ones are tried again.
      // The conversations involved reload their heads from the store before their next seq
      // (ConvState::stale), so a batch that did apply leaves no duplicate seq.
      spdlog::error("event=store_unavailable entries={} error=\"{}\"", work.size(), r.error().message);
    } else if (!r) {
      spdlog::critical("event=store_commit_failed entries={} error=\"{}\"", work.size(), r.error().message);
      std::lock_guard lock(mu_);
      failed_ = true;
    }
    for (auto& e : work) {
      if (!e.done) continue;
      by_loop[e.loop < nloops ? e.loop : nloops].push_back(std::move(e.done));
    }
    for (size_t l = 0; l < nloops; ++l) {
      if (by_loop[l].empty()) continue;
      loops_->post(l, [done = std::move(by_loop[l]), r] {
        for (auto& d : done) d(r);
      });
      by_loop[l] = {};
    }
    for (auto& d : by_loop[nloops]) d(r);
    by_loop[nloops].clear();
  }
}

}  // namespace tern::services
