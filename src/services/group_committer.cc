#include "services/group_committer.h"

#include <cassert>
#include <iterator>
#include <optional>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "base/thread_name.h"

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
Counter& behind_commits_metric = MetricsRegistry::global().counter(
    "tern_store_commits_behind_total", "commits in which another node had appended to a conversation first");
Counter& behind_commits() { return behind_commits_metric; }
Counter& gap_waits_metric = MetricsRegistry::global().counter(
    "tern_store_commit_gap_waits_total",
    "commits held back by the commit gap (Redis mode) for entries of other recent sources to join");
Counter& gap_waits() { return gap_waits_metric; }

// Whether ops [first, last) of the batch append to a conversation in `convs`.
bool appends_to(const store::Batch& b, size_t first, size_t last, const std::unordered_set<std::string>& convs) {
  for (size_t i = first; i < last; ++i)
    if (const auto* a = std::get_if<store::AppendMessage>(&b.ops[i]); a && convs.count(a->conversation_id)) return true;
  return false;
}

// The error of an entry whose conversation was behind; made once, not per commit.
const Error& behind_error() {
  static const Error e = make_error(ErrorCode::kUnavailable, std::string(GroupCommitter::kBehind));
  return e;
}
}  // namespace

GroupCommitter::GroupCommitter(store::Store& store, bool sync, size_t queue_limit, size_t max_batch, Loops* loops)
    : store_(store), sync_(sync), queue_limit_(queue_limit), max_batch_(max_batch), loops_(loops) {}

GroupCommitter::~GroupCommitter() { stop(); }

void GroupCommitter::start() {
  if (completion_thread_on_) completion_thread_ = std::thread([this] {
    set_thread_name("tern-complete");
    run_completions();
  });
  thread_ = std::thread([this] {
    set_thread_name("tern-commit");
    run();
  });
}

void GroupCommitter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // The writer has handed off its last completions: the completion thread runs them, then ends.
  {
    std::lock_guard lock(completions_mu_);
    completions_stopping_ = true;
  }
  completions_cv_.notify_all();
  if (completion_thread_.joinable()) completion_thread_.join();
}

void GroupCommitter::hand_off(Completed done) {
  {
    std::unique_lock lock(completions_mu_);
    completions_cv_.wait(lock, [&] { return completions_.size() < kCompletionsWaiting; });
    completions_.push_back(std::move(done));
  }
  completions_cv_.notify_all();
}

void GroupCommitter::run_completions() {
  for (;;) {
    Completed done;
    {
      std::unique_lock lock(completions_mu_);
      completions_cv_.wait(lock, [&] { return completions_stopping_ || !completions_.empty(); });
      if (completions_.empty()) return;  // stopping, and everything handed off has run
      done = std::move(completions_.front());
      completions_.pop_front();
    }
    completions_cv_.notify_all();  // room for the writer
    for (auto& [d, res] : done) d(res);
  }
}

bool GroupCommitter::submit(store::Batch batch, Completion done, const DeviceRef* device) {
  std::optional<Error> rejected;
  bool wake = true;
  // Only with a gap (Redis mode): RocksDB's submits do not hash the device.
  const uint64_t source =
      device && min_gap_.count() > 0 ? (std::hash<std::string>{}(device->user) * 1000003u + device->device) | 1u : 0;
  {
    std::lock_guard lock(mu_);
    if (failed_) rejected = make_error(ErrorCode::kInternal, "store writes failed; node needs a restart");
    else if (stopping_) rejected = make_error(ErrorCode::kDraining, "server is shutting down");
    else if (pending_.size() >= queue_limit_) rejected = make_error(ErrorCode::kOverloaded, "write queue full, retry later");
    else {
      if (source != 0) {
        const auto now = std::chrono::steady_clock::now();
        age_sources(now);
        auto [it, fresh] = sources_.try_emplace(source);
        if (!fresh && it->second.outstanding == 0) --idle_;
        it->second.last = now;
        ++it->second.outstanding;
        recent_.emplace_back(now, source);
      }
      pending_.push_back(Entry{std::move(batch), std::move(done), loops_ ? loops_->here() : Loops::kNone, source});
      // Waiting out the commit gap, the writer needs a wake-up only when full or when the
      // last source it waits for is in.
      wake = !in_gap_ || pending_.size() >= max_batch_ || idle_ == 0;
    }
  }
  if (rejected) {
    if (done) done(Result<void>(*rejected));
    return false;
  }
  if (wake) cv_.notify_one();
  return true;
}

void GroupCommitter::age_sources(std::chrono::steady_clock::time_point now) {
  const auto window = kBusyGaps * min_gap_;
  while (!recent_.empty() && now - recent_.front().first >= window) {
    const uint64_t source = recent_.front().second;
    recent_.pop_front();
    auto it = sources_.find(source);
    // Forgotten at its last submit's turn (an earlier one finds it submitted since), if idle;
    // one still outstanding is forgotten when it settles (settle_source).
    if (it != sources_.end() && it->second.outstanding == 0 && now - it->second.last >= window) {
      sources_.erase(it);
      --idle_;
    }
  }
}

void GroupCommitter::settle_source(uint64_t source, std::chrono::steady_clock::time_point now) {
  auto it = sources_.find(source);
  assert(it != sources_.end() && it->second.outstanding > 0);
  if (--it->second.outstanding > 0) return;
  // Its last submit already aged out of recent_ (or is about to): forget it now, or nothing would.
  if (now - it->second.last >= kBusyGaps * min_gap_) sources_.erase(it);
  else ++idle_;
}

bool GroupCommitter::is_behind(const Error& e) { return e.code == ErrorCode::kUnavailable && e.message == kBehind; }

void GroupCommitter::reloaded(const std::string& conversation_id) {
  if (behind_count_.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard lock(mu_);
  if (behind_.erase(conversation_id)) behind_count_.store(behind_.size(), std::memory_order_relaxed);
}

Result<void> GroupCommitter::commit_entries(std::vector<Entry>& work, std::vector<std::optional<Error>>& failed) {
  const Error& behind = behind_error();
  std::vector<size_t> live;
  // Entries built on a head that an earlier commit found behind: sequenced before their loop
  // learnt of it, so a later seq of a send that must come first. They fail too. Only this
  // thread adds to behind_ (loops only remove), so a count of 0 needs no lock: the common
  // case, and always on one node.
  if (behind_count_.load(std::memory_order_relaxed) == 0) {
    for (size_t i = 0; i < work.size(); ++i) live.push_back(i);
  } else {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < work.size(); ++i) {
      const store::Batch& b = work[i].batch;
      if (appends_to(b, 0, b.ops.size(), behind_)) failed[i] = behind;
      else live.push_back(i);
    }
  }
  store::Batch merged;
  std::vector<std::pair<size_t, size_t>> ranges(work.size());
  Result<void> r;
  for (int round = 0; !live.empty(); ++round) {
    merged.ops.clear();
    for (size_t i : live) {
      ranges[i].first = merged.ops.size();
      for (auto& op : work[i].batch.ops) merged.ops.push_back(std::move(op));
      ranges[i].second = merged.ops.size();
    }
    const int64_t t0 = mono_us();
    r = store_.commit(merged, sync_);
    commit_seconds().observe(static_cast<double>(mono_us() - t0) / 1e6);
    if (r) {
      store_writes().inc(merged.ops.size());
      return r;
    }
    if (r.error().code == ErrorCode::kExists) return commit_one_by_one(live, merged, ranges, failed);
    store::Store::Behind b = store_.behind();
    if (b.conversations.empty()) return r;
    // Some conversations had a head behind the store's (another node appended first): their
    // entries fail (the sequencer reloads those heads and sequences the sends again); the
    // rest is committed (a Redis Cluster already did) or tried again at once.
    std::unordered_set<std::string> late(b.conversations.begin(), b.conversations.end());
    std::vector<size_t> rest;
    for (size_t i : live) {
      if (appends_to(merged, ranges[i].first, ranges[i].second, late)) failed[i] = behind;
      else rest.push_back(i);
    }
    note_behind(b);
    if (rest.size() == live.size()) return r;  // nothing to drop: a plain failure
    if (b.rest_applied) return {};
    if (round == 3) return r;  // bounded: the rest fails as `unavailable`
    for (size_t i : rest)
      work[i].batch.ops.assign(std::make_move_iterator(merged.ops.begin() + static_cast<ptrdiff_t>(ranges[i].first)),
                               std::make_move_iterator(merged.ops.begin() + static_cast<ptrdiff_t>(ranges[i].second)));
    live = std::move(rest);
  }
  return {};
}

void GroupCommitter::note_behind(const store::Store::Behind& b) {
  {
    std::lock_guard lock(mu_);
    behind_.insert(b.conversations.begin(), b.conversations.end());
    behind_count_.store(behind_.size(), std::memory_order_relaxed);
  }
  behind_commits().inc();
}

Result<void> GroupCommitter::commit_one_by_one(const std::vector<size_t>& live, store::Batch& merged,
                                               const std::vector<std::pair<size_t, size_t>>& ranges,
                                               std::vector<std::optional<Error>>& failed) {
  // A device that must be new was stored already (PutDevice::must_be_new: two nodes linked
  // the same device number at once), or a channel's record changed since a change read it
  // (PutConversation::expected). The store wrote nothing; only the entry holding that op may
  // fail, so each entry is committed alone, in order (rare).
  for (size_t i : live) {
    store::Batch one;
    one.ops.assign(std::make_move_iterator(merged.ops.begin() + static_cast<ptrdiff_t>(ranges[i].first)),
                   std::make_move_iterator(merged.ops.begin() + static_cast<ptrdiff_t>(ranges[i].second)));
    Result<void> r = store_.commit(one, sync_);
    if (r) {
      store_writes().inc(one.ops.size());
      continue;
    }
    if (r.error().code == ErrorCode::kExists) {
      failed[i] = r.error();
      continue;
    }
    store::Store::Behind b = store_.behind();
    if (b.conversations.empty()) return r;  // a plain failure: as for a merged commit
    failed[i] = behind_error();
    note_behind(b);
  }
  return {};
}

void GroupCommitter::run() {
  std::vector<Entry> work;
  std::vector<std::optional<Error>> failed;
  // Completions by loop; the last slot is for submitters that are not loops.
  const size_t nloops = loops_ ? loops_->size() : 0;
  std::vector<Completed> by_loop(nloops + 1);
  std::chrono::steady_clock::time_point last_start{};
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (pending_.empty() && stopping_) return;
      if (min_gap_.count() > 0) {
        // Busy (the previous commit started less than the gap ago) and other sources may
        // still submit: let their entries join, until the gap passes or the last is in.
        const auto now = std::chrono::steady_clock::now();
        age_sources(now);
        if (now < last_start + min_gap_ && idle_ > 0) {
          in_gap_ = true;
          cv_.wait_until(lock, last_start + min_gap_,
                         [&] { return stopping_ || pending_.size() >= max_batch_ || idle_ == 0; });
          in_gap_ = false;
          gap_waits().inc();
        }
        last_start = std::chrono::steady_clock::now();
      }
      const size_t n = std::min(pending_.size(), max_batch_);
      work.clear();
      for (size_t i = 0; i < n; ++i) {
        work.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
    }
    failed.assign(work.size(), std::nullopt);
    Result<void> r = commit_entries(work, failed);
    if (min_gap_.count() > 0) {
      // Their sources may submit again (before the completions go out: a submitter woken by
      // its completion must find its entry no longer outstanding).
      std::lock_guard lock(mu_);
      const auto now = std::chrono::steady_clock::now();
      for (const Entry& e : work)
        if (e.source != 0) settle_source(e.source, now);
    }
    batch_sizes().observe(static_cast<double>(work.size()));
    if (!r && r.error().code == ErrorCode::kUnavailable) {
      // A shared store (Redis) out of reach: these entries fail, later ones are tried again.
      // The conversations involved reload their heads from the store before their next seq
      // (ConvState::stale), so a batch that did apply leaves no duplicate seq.
      if (!is_behind(r.error()) && r.error().message.rfind("redis: TERNSEQ", 0) != 0)
        spdlog::error("event=store_unavailable entries={} error=\"{}\"", work.size(), r.error().message);
    } else if (!r) {
      spdlog::critical("event=store_commit_failed entries={} error=\"{}\"", work.size(), r.error().message);
      std::lock_guard lock(mu_);
      failed_ = true;
    }
    for (size_t i = 0; i < work.size(); ++i) {
      Entry& e = work[i];
      if (!e.done) continue;
      Result<void> own = failed[i] ? Result<void>(*failed[i]) : r;
      by_loop[e.loop < nloops ? e.loop : nloops].emplace_back(std::move(e.done), std::move(own));
    }
    for (size_t l = 0; l < nloops; ++l) {
      if (by_loop[l].empty()) continue;
      loops_->post(l, [done = std::move(by_loop[l])] {
        for (auto& [d, res] : done) d(res);
      });
      by_loop[l] = {};
    }
    if (by_loop[nloops].empty()) continue;
    if (completion_thread_on_) {
      hand_off(std::move(by_loop[nloops]));
      by_loop[nloops] = {};
    } else {
      for (auto& [d, res] : by_loop[nloops]) d(res);
      by_loop[nloops].clear();
    }
  }
}

}  // namespace tern::services
