// Test support for the services' unit tests: a MemoryStore whose commit() can be held at a
// gate, so a test decides when the group committer's commits go through (and sees the writer
// inside one), and which counts the commits that reached the store. Used by
// group_committer_test.cc and, through seqnodes::GatedStore, the several-node tests.
// Thread-safety: commit() runs on the committer's writer thread, the rest on the test
// thread (its own mutex and atomics).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <variant>

#include "store/memory/memory_store.h"

namespace tern::services::testing {

class CommitGatedStore : public store::MemoryStore {
 public:
  using MemoryStore::MemoryStore;
  // While the gate is closed each commit waits until the test lets it through (one at a time
  // with release_one, all with open). With set_unavailable, nothing of a batch is applied
  // (a shared store out of reach).
  Result<void> commit(const store::Batch& batch, bool sync) override {
    {
      std::unique_lock lock(mu_);
      if (closed_) {
        const int me = arrived_++;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !closed_ || released_ > me; });
      }
      if (unavailable_) return make_error(ErrorCode::kUnavailable, "injected: store out of reach");
      if (!held_id_.empty() && std::chrono::steady_clock::now() < held_until_)
        for (const auto& op : batch.ops)
          if (const auto* put = std::get_if<store::PutConversation>(&op);
              put && put->expected && put->conversation.id == held_id_) {
            ++held_refusals;
            return make_error(ErrorCode::kExists, "injected: the conversation's changes are held");
          }
    }
    ++commits;
    return MemoryStore::commit(batch, sync);
  }
  // Until `until`, a batch with a change of conversation `id` from an expected record is
  // refused as one from an old record is (`exists`): as a Redis Cluster refuses it while a
  // dead node's change lease holds the conversation (redis_change_lease.h).
  void hold_changes(std::string id, std::chrono::steady_clock::time_point until) {
    std::lock_guard lock(mu_);
    held_id_ = std::move(id);
    held_until_ = until;
  }
  // As a Redis Cluster's store says (store::Store::finishes_changes_later).
  bool finishes_changes_later() const override { return finishes_later_.load(); }
  void set_finishes_later(bool on) { finishes_later_ = on; }
  void set_unavailable(bool on) {
    std::lock_guard lock(mu_);
    unavailable_ = on;
  }
  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  void open() {
    std::lock_guard lock(mu_);
    closed_ = false;
    cv_.notify_all();
  }
  // Lets the oldest held commit through.
  void release_one() {
    std::lock_guard lock(mu_);
    ++released_;
    cv_.notify_all();
  }
  // Whether `n` commits reached the closed gate within 10 s.
  bool await_arrived(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return arrived_ >= n; });
  }
  // Commits that reached the store (applied, or failed by the store itself).
  std::atomic<int> commits{0};
  // Batches refused by hold_changes.
  std::atomic<int> held_refusals{0};

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  bool unavailable_ = false;
  int arrived_ = 0;
  int released_ = 0;
  std::atomic<bool> finishes_later_{false};
  std::string held_id_;
  std::chrono::steady_clock::time_point held_until_{};
};

}  // namespace tern::services::testing
