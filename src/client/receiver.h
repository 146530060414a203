// The receive pipeline of one device: turns the `message` frames of any number of
// connections (replays, repeats, reorders after a reconnect) into what the application is
// owed: every message of each conversation once, in seq order, with no gap it could fill.
//
// Per conversation it keeps `last`, the highest seq handed over (or accounted for), and a
// bounded reorder buffer above it:
//  - a seq <= last, or one already buffered, is a repeat and is dropped (but re-acked);
//  - seq == last+1 is handed over, then everything contiguous in the buffer after it;
//  - a seq further on waits in the buffer; after `gap_grace_ms` (the hole often fills by
//    itself, e.g. our own `sent` racing a later message) the hole is filled by backfill
//    (GET …/messages?after_seq=last), page after page, retried with backoff on transient
//    errors. A hole the server cannot fill is accepted, never waited on forever: backfill
//    starting after the hole (messages before a member's join seq are never served), an
//    empty or short page that does not reach the buffered message, or a permanent error
//    (403 after removal, 404).
//  - The base: a conversation's `last` is unknown until its first message is seen (or a
//    persisted cursor is loaded with set_cursor). The server replays everything after our
//    last ack before anything new, in order, so the first message seen starts the sequence.
//  - Our own sends: the sending device never receives its messages, so each `sent` fills
//    its slot (on_own_sent), and own-device messages met in backfill fill theirs without
//    being handed over (the application learnt of them from send()). System messages are
//    always handed over, the acting device included.
//  - Replies (reply_to = X): hold-back is implied by in-order hand-over: X < seq is handed
//    before the reply; X at or below the base (older than anything the application had
//    from us) is not waited for; X >= seq can never precede it and is not waited for.
//  - Acks: every conversation whose `last` moved, or that saw a repeat, is marked; the
//    owner collects them with take_acks() (coalescing: one ack per conversation per flush).
//
// Not thread-safe: one thread (the Client's io strand) calls everything, and the hooks are
// called on that thread, re-entrantly never (deliver may not call back into the Receiver).
// Buffer bound: max_buffered messages per conversation; past it a new out-of-order message
// is dropped and fetched again by backfill (its seq is remembered as a hole to fill).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "client/backoff.h"
#include "client/types.h"

namespace tern::client {

struct ReceiverOptions {
  std::string self_user;
  uint32_t self_device = 0;
  size_t backfill_page = 200;
  size_t max_buffered = 10'000;  // per conversation
  int64_t gap_grace_ms = 50;     // 0: backfill at once
  BackoffPolicy backfill_retry{200, 5'000, 8};  // after the attempts, retried on retry_gaps()
};

struct ReceiverHooks {
  std::function<void(const Message&)> deliver;
  // GET /v1/conversations/{conv}/messages?after_seq=&limit=; the callback may run later
  // (on the same thread) or at once.
  std::function<void(const std::string& conversation_id, Seq after_seq, size_t limit, Callback<HistoryPage>)> backfill;
  // Runs fn after delay_ms on the same thread. Needed when gap_grace_ms > 0 or to retry.
  std::function<void(int64_t delay_ms, std::function<void()> fn)> schedule;
  // Called when the first conversation becomes due for an ack since the last take_acks().
  std::function<void()> ack_pending;
  std::function<uint64_t()> random;  // for retry jitter; a fixed sequence when absent
};

struct ReceiverStats {
  uint64_t delivered = 0;
  uint64_t duplicates = 0;
  uint64_t own_filled = 0;       // slots of our own sends
  uint64_t backfills = 0;        // backfill requests made
  uint64_t backfill_errors = 0;
  uint64_t gaps_accepted = 0;    // holes the server could not fill
  uint64_t overflow_dropped = 0;
};

class Receiver {
 public:
  Receiver(ReceiverOptions options, ReceiverHooks hooks);
  ~Receiver();
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // A persisted cursor: everything up to seq was handed over in an earlier life.
  void set_cursor(const std::string& conversation_id, Seq seq);
  void on_message(Message message);
  void on_own_sent(const std::string& conversation_id, Seq seq);
  // After a reconnect: holes whose backfill gave up or waits on a retry timer go now.
  void retry_gaps();
  // (conversation, last) for every conversation due for an ack; clears the marks.
  std::vector<std::pair<std::string, Seq>> take_acks();

  std::optional<Seq> last_handed(const std::string& conversation_id) const;
  size_t buffered(const std::string& conversation_id) const;
  const ReceiverStats& stats() const { return stats_; }

 private:
  enum class GapState { kIdle, kGrace, kInFlight, kRetryWait, kStalled };
  struct Conv {
    bool known = false;
    Seq last = 0;
    std::map<Seq, std::optional<Message>> buffer;  // nullopt: a slot accounted for (own send)
    std::set<Seq> early_own;                       // own seqs seen before the base was known
    Seq seen_max = 0;  // highest seq known to exist (dropped on overflow included)
    GapState gap = GapState::kIdle;
    int failures = 0;
  };

  Conv& conv(const std::string& id);
  // A hole: something below the buffer, or above `last` after an overflow drop, is missing.
  static bool has_hole(const Conv& c) { return !c.buffer.empty() || c.last < c.seen_max; }
  // The highest seq of the hole (what accepting it moves `last` to).
  static Seq hole_top(const Conv& c) { return c.buffer.empty() ? c.seen_max : c.buffer.begin()->first - 1; }
  bool is_own(const Message& m) const;
  void insert(const std::string& id, Conv& c, Message m, bool force);
  void drain(const std::string& id, Conv& c, bool start_gap = true);
  void mark_ack(const std::string& id);
  void accept_gap(const std::string& id, Conv& c, Seq up_to);
  void request_backfill(const std::string& id);
  void on_backfill(const std::string& id, Seq after, Result<HistoryPage> page);
  void schedule(int64_t delay_ms, std::function<void(Receiver&)> fn);

  ReceiverOptions opts_;
  ReceiverHooks hooks_;
  std::map<std::string, Conv> convs_;  // node-based: references stay valid across inserts
  std::set<std::string> ack_due_;
  ReceiverStats stats_;
  uint64_t rng_state_ = 0x9e3779b97f4a7c15ULL;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);  // scheduled work checks it
};

}  // namespace tern::client
