// SequencerCore: what the three sequencing paths (send, membership, receipts) share.
//
// Ownership model (thread-per-core): every conversation has one owning loop,
// owner(conversation_id) = hash % loops. That loop's Shard holds, for the conversations it
// owns, everything the hot path needs in memory: the head seq, the senders of the recent
// seqs, the receipt marks, the in-flight idempotency keys. Only code running on the owning
// loop reads or changes a Shard, so there is no lock and no read-modify-write in the store:
// the loop already knows the current values and writes the new ones blind.
//
// Bounded: each Shard keeps at most `conversation_cache` conversations, evicting the least
// recently used one that has nothing in flight (a conversation with an uncommitted batch is
// pinned: its in-memory head is ahead of the store). An evicted conversation is reloaded
// from the store (one head read) on its next touch.
//
// Thread-safety: shard(i) and everything reached through it only on loop i. The rest
// (owner(), recipients(), publish_message()) from any thread. Owned by Sequencer; borrows
// the loops, store, committer, directory and bus.
#pragma once
#include <cassert>
#include <deque>
#include <map>
#include <tuple>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/loops.h"
#include "base/lru_map.h"
#include "bus/bus.h"
#include "proto/frames.h"
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/rate_limiter.h"
#include "services/service_options.h"
#include "services/store_reads.h"
#include "services/warm_hold.h"

namespace tern::services {

class Presence;
class LiveFanout;
class Media;
class Blocks;
class PresencePrivacy;
class PushNotifier;

struct SentInfo {
  std::string client_msg_id;
  std::string conversation_id;
  Seq seq = 0;
  int64_t ts = 0;
};

struct ConversationInfo {
  std::string conversation_id;
  bool created = false;
};

using SendDone = std::function<void(Result<SentInfo>)>;
// A device's current registration id (0: no keys). Any thread.
using RegistrationLookup = std::function<Result<uint32_t>(const DeviceRef&)>;
// Reads the registration ids of several devices into the lookup's cache at once (warm-up).
using RegistrationPrefetch = std::function<Result<void>(const std::vector<DeviceRef>&)>;
// Whether the registration ids of those devices are all cached (never reads the store); if
// so, `ids` gets them in the order of the devices when given (warm()'s hold).
using RegistrationCached = std::function<bool(const std::vector<DeviceRef>&, std::vector<uint32_t>* ids)>;

// What the owning loop keeps for a channel only (allocated on first use: most conversations
// are not channels, and every cached conversation has a ConvState).
struct ChannelState {
  // Subscriptions submitted but not yet in the store (user → joined_seq, 0 for a leave), so
  // that a second join or leave of the same user in the meantime sees the first.
  std::unordered_map<std::string, Seq> pending_subscriptions;
  // Views of the most recent posts (seq → readers whose read mark reached it) and each
  // reader's last read seq: in memory only, so approximate across restarts.
  std::deque<std::pair<Seq, uint64_t>> views;
  std::unordered_map<std::string, Seq> last_read;
  // Posts per second into the channel, all admins together: one post reaches every online
  // subscriber, so the channel's rate bounds the delivery work its admins can cause.
  std::optional<TokenBucket> posts;
};

// The owning loop's view of one conversation.
struct ConvState {
  Seq head = 0;            // last seq assigned (committed or in flight)
  size_t in_flight = 0;    // batches submitted and not yet completed; > 0 pins the entry
  // Those of them that append (sends, membership changes, timers): their seqs are the store's
  // to judge, so a head hint from another node must not move the head under them. Acks in
  // flight append nothing and do not stop hints (observe_head).
  size_t appends_in_flight = 0;
  // A batch of this conversation failed with `unavailable` (a shared store that may or may
  // not have applied it): once nothing is in flight, the next touch reloads the head.
  bool stale = false;
  std::string id;  // the conversation's id (to drop its directory snapshot after such a failure)
  // Work waiting for the head reload of a stale conversation, run on this loop once nothing
  // is in flight: first `retry` (sends and membership changes whose batch was behind, in the
  // order they were sequenced, since completions come in commit order), then `parked` (those
  // that arrived meanwhile). Two lists, because a send can arrive before an earlier send's
  // completion says that it must be sequenced again; one list in arrival order would put it
  // first. Each re-runs from the start: its checks see the reloaded head and membership.
  // Called with a non-null Error when the reload failed (offloaded reads): answer with it.
  std::vector<std::function<void(const Error*)>> retry;
  std::vector<std::function<void(const Error*)>> parked;
  bool receipts_loaded = false;
  // Who sent the most recent messages (at most kRecentSenders): a receipt goes to the
  // senders of the messages it covers, not to every member (members² frames per message in
  // a large group). Older senders are found in the log, bounded.
  std::deque<std::pair<Seq, std::string>> recent_senders;
  Seq senders_from = 1;  // recent_senders holds every non-system sender from this seq on
  std::unordered_map<std::string, store::ReceiptState> receipts;  // by user, when loaded
  std::unique_ptr<ChannelState> channel;  // channels only
  ChannelState& channel_state() {
    if (!channel) channel = std::make_unique<ChannelState>();
    return *channel;
  }
};

struct PendingSend {
  SentInfo info;
  std::vector<SendDone> waiters;  // retries of the same client_msg_id while in flight
};

struct Shard {
  Shard(size_t loop_index, size_t capacity)
      : loop(loop_index), conversations(capacity, [](const ConvState& s) { return s.in_flight > 0; }) {}
  const size_t loop;  // the index of the loop that owns this shard
  LruMap<std::string, ConvState> conversations;
  std::unordered_map<std::string, PendingSend> pending;  // device key + '\n' + client_msg_id
  // Receipts of read-side conversations waiting for the receipt window (see receipts.h):
  // (target user, conversation, reader, is read) → highest seq. Bounded by what one window's
  // acks can add; flushed whole.
  std::map<std::tuple<std::string, std::string, std::string, bool>, Seq> pending_receipts;
  bool receipts_armed = false;
  // Sends handed to the node that owns their conversation and not yet answered: conversation
  // → (that node, how many). Later sends of the conversation follow them there.
  std::unordered_map<std::string, std::pair<std::string, size_t>> forwarding;
  // Conversations with a store read on a reader thread (SequencerCore::when_warm; only when
  // StoreReads is offloaded, i.e. Redis): the work that arrived meanwhile waits here, in
  // arrival order, and runs on this loop when the read is back. Bounded by the conversation's
  // callers (each connection's in-flight sends and frames are bounded).
  struct GatedWork {
    bool receipts;  // the work acknowledges: it needs the receipt marks in memory too
    std::function<void(const Error*)> run;  // non-null Error: a read failed, answer with it
    bool first = false;  // sequenced before and to be sequenced again (run_first)
    uint64_t epoch = 0;  // for `first` work: which run_first queued it (Gate::epoch)
  };
  struct Gate {
    bool reading = false;
    uint64_t epoch = 0;  // run_first calls so far
    std::deque<GatedWork> waiting;
    // What the last warm-up of the conversation read, for the work of this gate: a cache
    // entry evicted since is answered from it, not read on the loop (warm_hold.h).
    std::shared_ptr<const WarmHold> held;
  };
  std::unordered_map<std::string, Gate> gates;
};

class SequencerCore {
 public:
  static constexpr size_t kRecentSenders = 1024;
  // How often one change that appends to a conversation (a send, a membership change, a
  // timer) is sequenced at most when other nodes appended to the conversation first
  // (GroupCommitter::kBehind); after that it answers `unavailable`. High because a node whose
  // conflict reserved the next seq (redis_scripts.h) makes the others' attempts fail until
  // its own append lands (milliseconds; 250 ms at most if it died meanwhile).
  static constexpr int kMaxAttempts = 64;
  // Messages whose senders an ack's warm-up reads with a fresh head (when_warm).
  static constexpr Seq kWarmSenders = 32;

  SequencerCore(Loops& loops, store::Store& store, StoreReads& reads, GroupCommitter& committer, Directory& directory, bus::Bus& bus,
                const ServiceOptions& options);
  ~SequencerCore();  // takes its loops' states out of tern_sequencer_conversation_states

  size_t owner(const std::string& conversation_id) const;
  Shard& shard(size_t loop) { return *shards_[loop]; }

  // Drops the conversation's state on its owning loop (as an eviction would), keeping
  // tern_sequencer_conversation_states true. The next touch loads it again.
  void drop_state(Shard& shard, const std::string& conversation_id);
  // The conversation's state on its owning loop, loaded (head from the store) on first touch.
  // With offloaded reads (Redis) the work was gated by when_warm, so this finds it in memory.
  Result<ConvState*> state(Shard& shard, const std::string& conversation_id);

  // Runs `work` on this loop (the conversation's owner) once what the sequencing paths read
  // of the conversation is in memory: its state (head), its directory snapshot, the device
  // lists of its members (fan-out on write), and with `receipts` its receipt marks. With the
  // embedded store reads are inline and `work` runs at once. Otherwise, when something is
  // missing, one read on a reader thread (StoreReads) fetches all of it while this loop goes
  // on; work for the conversation that arrives meanwhile waits behind it (Shard::gates), so
  // the conversation's order is kept. `work(error)` with a non-null error: the read failed,
  // answer the caller with it. Any thread may have queued the call; `work` runs on the loop.
  // A template so that the common case (in memory, or the embedded store) runs `work`
  // without wrapping it in a std::function.
  template <typename Work>
  void when_warm(Shard& shard, const std::string& conversation_id, bool receipts, Work&& work) {
    if (!reads.offloaded()) return work(nullptr);
    if (auto g = shard.gates.find(conversation_id); g != shard.gates.end()) {
      g->second.waiting.push_back(Shard::GatedWork{receipts, std::function<void(const Error*)>(std::forward<Work>(work))});
      return;
    }
    if (std::shared_ptr<const WarmHold> seen; warm(shard, conversation_id, receipts, &seen)) {
      WarmHold::Scope scope(std::move(seen));
      return work(nullptr);
    }
    warm_up(shard, conversation_id, receipts, std::function<void(const Error*)>(std::forward<Work>(work)));
  }
  // Within gated work: runs `read` on a reader thread, then `then` on this loop, holding the
  // conversation's later work back until `then` ran (idempotency, media, older senders; see resume()).
  // Only with offloaded reads, and not while a read of the conversation is out.
  template <typename T>
  void read_then(Shard& shard, const std::string& conversation_id, std::function<Result<T>()> read,
                 std::function<void(Result<T>)> then) {
    Shard::Gate& gate = shard.gates[conversation_id];
    assert(!gate.reading);
    gate.reading = true;
    const uint64_t seen = gate.epoch;
    reads.run<T>(shard.loop, std::move(read), [this, &shard, conversation_id, then, seen](Result<T> r) {
      auto g = shard.gates.find(conversation_id);
      assert(g != shard.gates.end());
      g->second.reading = false;
      const std::shared_ptr<const WarmHold> held = g->second.held;
      WarmHold::Scope scope(held);
      // Work to sequence again was queued meanwhile (run_first, at the front): it was
      // sequenced before this work, which has not been stored yet, so `then` waits behind it.
      auto& waiting = g->second.waiting;
      auto after = waiting.begin();
      while (after != waiting.end() && after->first && after->epoch > seen) ++after;
      if (after != waiting.begin()) {
        waiting.insert(after, Shard::GatedWork{false, [then, r = std::make_shared<Result<T>>(std::move(r))](
                                                          const Error*) { then(std::move(*r)); }});
      } else {
        then(std::move(r));
      }
      drain(shard, conversation_id);
    });
  }
  // Within read_then's `then` (offloaded reads): runs `work` now if what the sequencing paths
  // read of the conversation is still in memory (when_warm's check), else first in its gate,
  // behind a warm-up read on a reader thread: meanwhile a batch of the conversation failed
  // (ConvState::stale, its snapshot dropped) or its state was evicted, and neither is then
  // reloaded on this loop. read_then drains the gate once `then` returned.
  void resume(Shard& shard, const std::string& conversation_id, bool receipts,
              std::function<void(const Error*)> work);
  // Work to run before anything else waiting for the conversation (sends sequenced again,
  // in their order): through the gate when reads are offloaded, so a reload is not inline.
  void run_first(Shard& shard, const std::string& conversation_id,
                 std::vector<std::function<void(const Error*)>> work);

  // The state of a conversation that may be changed now, or null: the read failed (`fail`
  // ran with the error), or a batch of it failed and is still in flight (ConvState::stale),
  // so `again()` (a std::function<void(const Error*)>, built only then) was parked and runs
  // once the head reloaded, with the calling work's request hold if any. The checks of the
  // caller then see the store's head and members.
  template <typename Fail, typename Again>
  ConvState* settled_state(Shard& shard, const std::string& conversation_id, Fail&& fail, Again&& again) {
    auto st = state(shard, conversation_id);
    if (!st) {
      fail(st.error());
      return nullptr;
    }
    if ((*st)->stale && (*st)->in_flight > 0) {
      // A membership change keeps its request's hold (warm_hold.h): it runs again after the
      // reload, under that warm-up's hold, and the device lists it named may be evicted by then.
      std::function<void(const Error*)> work = again();
      if (auto hold = WarmHold::request_hold())
        work = [hold = std::move(hold), work = std::move(work)](const Error* e) {
          WarmHold::Scope scope(hold);
          work(e);
        };
      (*st)->parked.push_back(std::move(work));
      return nullptr;
    }
    return *st;
  }

  // Another node committed `seq` (`frame`: the stored message, may be null): a cached,
  // settled conversation whose head is below it moves there. Nothing else changes: a
  // conversation with work in flight or not cached learns its head from the store as before.
  void observe_head(Shard& shard, const std::string& conversation_id, Seq seq, const std::string* frame);
  // The same for this node's own send that another node sequenced (the answer to a forwarded
  // send): `sender` sent `seq`. No hint of it may come (its recipients may all be on the
  // sequencing node): without this the next hint finds a gap, and the next ack here reads
  // the senders from the log.
  void observe_sent(Shard& shard, const std::string& conversation_id, Seq seq, const std::string& sender);

  // Records the sender of a new message (bounded: the oldest is forgotten).
  static void remember_sender(ConvState& state, Seq seq, const std::string& user);
  // Moves a cached head to `seq` (above it), keeping its sender when it is the next one
  // (`meta`: the message's, null if unknown); after a gap the senders are read from the log.
  static void move_head(ConvState& state, Seq seq, const proto::StoredMeta* meta);

  // Submits a batch for a conversation of this shard; the state stays pinned until `done`
  // ran (on this loop). Returns false if the committer refused it (done already ran).
  // source: the device it is for, for the commit gap (GroupCommitter::submit; null: none).
  bool submit(ConvState& state, store::Batch batch, GroupCommitter::Completion done,
              const DeviceRef* source = nullptr);
  // For the completion of a change on its `attempt`-th sequencing (0 for the first): true if
  // its batch was behind or refused for a changed record (nothing of it was stored: `exists`
  // from PutConversation::expected) and it may be sequenced again; the caller
  // then puts it on the conversation's `retry` list (ConvState) and answers nothing yet. After
  // the last attempt, `committed` becomes the `unavailable` answer for the client.
  static bool sequence_again(Result<void>& committed, int attempt);

  // Every device that receives a message of `c` with `seq`, except `skip` (the sender's).
  Result<std::vector<DeviceRef>> recipients(const store::Conversation& c, Seq seq, const DeviceRef* skip);
  // Read-side conversations: tells every session following the conversation (LiveFanout)
  // that `seq` is committed; `origin` is the sending device (not written back to it).
  void publish_conversation(const std::string& conversation_id, Seq seq, std::shared_ptr<const std::string> frame,
                            int64_t started_us, const DeviceRef& origin, bool per_device);
  // Tells each recipient device (through the bus) that `seq` is committed.
  void publish_message(const std::vector<DeviceRef>& to, const std::string& conversation_id, Seq seq,
                       std::shared_ptr<const std::string> frame, bool per_device, int64_t started_us, bool system = false);

  Loops& loops;
  store::Store& store;
  StoreReads& reads;  // where reads that may block run (store_reads.h)
  GroupCommitter& committer;
  Directory& directory;
  bus::Bus& bus;
  const ServiceOptions& options;
  Presence* presence = nullptr;  // told of membership changes (its who-shares-with-whom index)
  LiveFanout* fanout = nullptr;  // live delivery of read-side conversations; set before serving
  RegistrationLookup registration_id;  // the key directory's; unset: `registration_ids` are not checked
  RegistrationPrefetch registration_prefetch;  // the key directory's (with registration_id)
  RegistrationCached registration_cached;      // the key directory's (with registration_id)
  Media* media = nullptr;        // checks the media a send names (issue 11); null: media refused
  Blocks* blocks = nullptr;             // issue 12: blocked direct sends are withheld (send_safety.h)
  PresencePrivacy* privacy = nullptr;   // issue 12: a send accepts a direct conversation
  PushNotifier* push = nullptr;         // issue 12: messages stored for offline devices wake them

 private:
  // Everything `work` needs is in memory: the head, the snapshot, receipts if asked, and in
  // their caches (LRUs that evict on their own) the device lists and registration ids of the
  // members' devices (fan-out on write) and a direct conversation's two block lists. The
  // warm-up reads all of them and holds what it read for the gate's work (Gate::held), so an
  // eviction between the read and the work is not read again on the loop. Likewise, when the
  // answer is yes, `seen` gets what this check found in those caches, for the work the caller
  // runs next under it (WarmHold::Scope): another thread's insert may evict an entry, or a bus
  // invalidation drop it, between this check and its use, and then it is answered from there,
  // not read on the loop.
  bool warm(Shard& shard, const std::string& conversation_id, bool receipts, std::shared_ptr<const WarmHold>* seen);
  // The read behind when_warm; `work` runs when it is back (and after it the waiting work).
  void warm_up(Shard& shard, const std::string& conversation_id, bool receipts,
               std::function<void(const Error*)> work);
  // Runs waiting work of the conversation until a read is out again or none is left.
  void drain(Shard& shard, const std::string& conversation_id);
  // When the gate empties: drops the state its warm-up installed for a conversation the store
  // does not have (`held` says the read found none) if the work created nothing.
  void forget_if_absent(Shard& shard, const std::string& conversation_id, const WarmHold* held);
  // Sets the head read from the store: a fresh state, or the reset of a stale one.
  ConvState* install_head(Shard& shard, const std::string& conversation_id, Seq head);

  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace tern::services
