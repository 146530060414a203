// Group commit: the one writer of the store. Producers (the loops that own conversations,
// accounts, presence) submit entries, each a store Batch plus a completion; the writer thread
// takes everything pending, merges it into one Batch, commits it with one fsync, and hands
// the completions back: each to the loop that submitted it, all of one commit's completions
// for one loop in one task (one wake-up per loop per commit). The writer never runs
// completions itself (so it never does fan-out) except those of submitters that are not loop
// threads (tests, start-up, HTTP handlers on reader threads; in Redis mode those go to a
// completion thread instead, set_completion_thread). It starts the next commit as soon as it has handed them off, so
// prepare (on the loops), commit (here) and complete (on the loops) overlap.
//
// The commit window adapts to load by itself: while one fsync runs (~0.4 ms), every entry
// submitted meanwhile waits and goes into the next commit together; when idle, an entry is
// committed alone at once.
//
// Order: per conversation the completions run in the order its owning loop submitted them
// (seq order): the writer completes in submission order and a loop's mailbox is FIFO.
//
// Bounded: at most `queue_limit` pending entries; beyond that submit() rejects the entry: it
// runs the completion at once, on the caller's thread, with `overloaded`, and returns false.
// A failed commit is fatal for writes: every later submit fails with `internal` (seqs were
// handed out for the lost batch; continuing would leave gaps) and the operator restarts the
// node, which reloads heads from the store. Except `unavailable` (a shared store out of
// reach, docs/scaling.md): those entries fail and writing goes on; the sequencer reloads the
// heads of their conversations from the store before it hands out the next seq. And `exists`
// (a device that must be new is stored already, store::PutDevice): the entries are committed
// again one by one and only the entry holding that device fails.
//
// Thread-safety: submit() from any thread; completions must not block. Owns its thread;
// stop() drains and joins. Borrows the store and (optionally) the loops.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "base/ids.h"
#include "base/loops.h"
#include "base/result.h"
#include "store/store.h"

namespace tern::services {

class GroupCommitter {
 public:
  using Completion = std::function<void(const Result<void>&)>;

  // loops: where completions run (the submitter's loop); nullptr → on the writer thread.
  GroupCommitter(store::Store& store, bool sync, size_t queue_limit, size_t max_batch, Loops* loops = nullptr);
  ~GroupCommitter();

  // The error of an entry that appended to a conversation whose head in the store was ahead
  // of the submitter's (another node appended first, docs/scaling.md "Dense seqs across
  // nodes"): nothing of the entry was written as a message (no log entry, no idempotency
  // record), so its sends can be sequenced again on the reloaded head. Once a conversation was
  // found behind, every later entry appending to it fails the same way until its loop
  // reloaded the head (reloaded()): those were built on the old head, and committing one of
  // them could put a later send of a device before an earlier one.
  static constexpr std::string_view kBehind = "another node appended to this conversation first; retry";
  static bool is_behind(const Error& e);
  // The conversation's owning loop reloads its head (it reads it from the store: by the time
  // the loop gets round to it, the other node has usually appended more): its entries commit
  // again.
  void reloaded(const std::string& conversation_id);

  // A shared store over the network (Redis): a commit costs the store a round trip and an
  // fsync whatever it holds, so under load the writer waits until `gap` after the previous
  // commit started (or until max_batch entries are pending) and commits more at once. Idle, a
  // commit still starts at once (the gap has long passed). 0 (the default, RocksDB): no wait.
  //
  // The writer waits only while more entries are expected: entries name their source (the
  // device that sent or acked), and the writer holds a commit back only while a
  // source that submitted within the last kBusyGaps gaps has nothing pending or being
  // committed (so it may submit again); when the last of those submits, the commit starts at
  // once. A lone client that waits for each `sent` before its next send is never held, and
  // two such clients are held only until both are in. Entries without a source (0) are
  // neither waited for nor counted. Set before start().
  void set_min_gap(std::chrono::microseconds gap) { min_gap_ = gap; }
  static constexpr int kBusyGaps = 10;

  // Completions of submitters that are not loop threads (an HTTP handler on a reader thread,
  // Presence's loader) run on a completion thread of the committer's own, one commit's at a
  // time in commit order, instead of on the writer thread: with a shared store over the
  // network such a completion may read it (a key upload answers with the device's key status,
  // an admin suspension reads the devices to disconnect), a round trip the next commit must
  // not wait for. At most kCompletionsWaiting commits' completions wait for that thread;
  // beyond that the writer waits for it (back-pressure). Off (the default, RocksDB): they run
  // on the writer thread, where a read is local. Set before start().
  void set_completion_thread(bool on) { completion_thread_on_ = on; }
  static constexpr size_t kCompletionsWaiting = 1024;

  void start();
  // Drains every pending entry (and, with the completion thread, runs their completions),
  // then stops the writer thread.
  void stop();

  // Queues the entry; false if rejected (the completion has then already run with the error).
  // source: the device it is for, for the commit gap (null: none; not kept).
  bool submit(store::Batch batch, Completion done, const DeviceRef* source = nullptr);
  // Whether the writer is holding a commit back for the gap right now (tests).
  bool holding_for_gap() {
    std::lock_guard lock(mu_);
    return in_gap_;
  }
  // Sources the commit gap keeps track of (tests: bounded by the window).
  size_t tracked_sources() {
    std::lock_guard lock(mu_);
    return sources_.size();
  }
  // Entries waiting for the writer (admin figures).
  size_t pending() {
    std::lock_guard lock(mu_);
    return pending_.size();
  }

 private:
  struct Entry {
    store::Batch batch;
    Completion done;
    size_t loop = Loops::kNone;  // where `done` runs
    uint64_t source = 0;         // for the commit gap: a hash of its device, 0 for none
  };
  // A recent source of entries (commit gap only), under mu_.
  struct Source {
    std::chrono::steady_clock::time_point last;  // its last submit
    uint32_t outstanding = 0;                    // its entries pending or being committed
  };
  using Completed = std::vector<std::pair<Completion, Result<void>>>;
  void run();
  // Writer thread: hands one commit's completions of non-loop submitters to the completion
  // thread (waiting while kCompletionsWaiting are queued).
  void hand_off(Completed done);
  void run_completions();
  // Commits the entries (failed[i] set for those found behind); the result of the others.
  Result<void> commit_entries(std::vector<Entry>& work, std::vector<std::optional<Error>>& failed);
  // Conversations a commit found behind: their later entries fail until reloaded().
  void note_behind(const store::Store::Behind& b);
  // After a merged commit was refused with `exists` (PutDevice::must_be_new,
  // PutConversation::expected): each live entry
  // alone, in order; failed[i] set for those refused (or behind).
  Result<void> commit_one_by_one(const std::vector<size_t>& live, store::Batch& merged,
                                 const std::vector<std::pair<size_t, size_t>>& ranges,
                                 std::vector<std::optional<Error>>& failed);

  store::Store& store_;
  const bool sync_;
  const size_t queue_limit_;
  const size_t max_batch_;
  Loops* const loops_;
  std::chrono::microseconds min_gap_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> pending_;
  bool stopping_ = false;
  bool failed_ = false;
  bool in_gap_ = false;  // the writer waits out min_gap_ (submit() wakes it only when full or idle_ is 0)
  // With a gap, under mu_: the sources that submitted within the last kBusyGaps gaps or have
  // entries outstanding; their submits in order, to age them out (each step O(1) amortized:
  // a wave of acks from many devices must not cost the writer a scan per commit); and how
  // many of them have nothing outstanding (idle_: they may submit again, so a commit is held
  // for them). Both bounded: by the submits of the last kBusyGaps gaps plus the queue.
  std::unordered_map<uint64_t, Source> sources_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, uint64_t>> recent_;
  size_t idle_ = 0;
  // Forgets the sources that are idle and whose last submit is kBusyGaps gaps old.
  void age_sources(std::chrono::steady_clock::time_point now);
  // After a commit: the entry's source has one entry fewer outstanding.
  void settle_source(uint64_t source, std::chrono::steady_clock::time_point now);
  std::unordered_set<std::string> behind_;  // conversations found behind, until reloaded()
  std::atomic<size_t> behind_count_{0};
  std::thread thread_;
  // The completion thread (set_completion_thread) and its queue, under completions_mu_.
  bool completion_thread_on_ = false;
  std::mutex completions_mu_;
  std::condition_variable completions_cv_;  // queued, or room again, or stopping
  std::deque<Completed> completions_;
  bool completions_stopping_ = false;
  std::thread completion_thread_;
};

}  // namespace tern::services
