// Group commit: the one writer of the store. Producers (the sequencer shards) submit
// entries, each a store Batch plus a completion; the writer thread takes everything pending,
// merges it into one Batch, commits it with one fsync, then runs the completions in
// submission order. Durability therefore costs one fsync per batch, not per message, and the
// order of completions per conversation is the order its shard submitted them (seq order).
//
// Bounded: at most `queue_limit` pending entries; beyond that submit() rejects the entry: it
// runs the completion at once, on the caller's thread, with `overloaded`, and returns false. A failed commit is fatal for writes: every later submit fails with
// `internal` (seqs were handed out for the lost batch; continuing would leave gaps) and the
// operator restarts the node, which reloads heads from the store.
//
// Thread-safety: submit() from any thread; completions run on the writer thread and must not
// block (they post to strands). Owns its thread; stop() drains and joins.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "base/result.h"
#include "store/store.h"

namespace tern::services {

class GroupCommitter {
 public:
  using Completion = std::function<void(const Result<void>&)>;

  GroupCommitter(store::Store& store, bool sync, size_t queue_limit, size_t max_batch);
  ~GroupCommitter();

  void start();
  // Drains every pending entry, then stops the writer thread.
  void stop();

  // Queues the entry; false if rejected (the completion has then already run with the error).
  bool submit(store::Batch batch, Completion done);

 private:
  struct Entry {
    store::Batch batch;
    Completion done;
  };
  void run();

  store::Store& store_;
  const bool sync_;
  const size_t queue_limit_;
  const size_t max_batch_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> pending_;
  bool stopping_ = false;
  bool failed_ = false;
  std::thread thread_;
};

}  // namespace tern::services
