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
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/rate_limiter.h"
#include "services/service_options.h"
#include "services/store_reads.h"

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
  std::vector<std::function<void()>> retry;
  std::vector<std::function<void()>> parked;
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

  SequencerCore(Loops& loops, store::Store& store, StoreReads& reads, GroupCommitter& committer, Directory& directory, bus::Bus& bus,
                const ServiceOptions& options);

  size_t owner(const std::string& conversation_id) const;
  Shard& shard(size_t loop) { return *shards_[loop]; }

  // The conversation's state on its owning loop, loaded (head from the store) on first touch.
  Result<ConvState*> state(Shard& shard, const std::string& conversation_id);

  // Another node committed `seq` (`frame`: the stored message, may be null): a cached,
  // settled conversation whose head is below it moves there. Nothing else changes: a
  // conversation with work in flight or not cached learns its head from the store as before.
  void observe_head(Shard& shard, const std::string& conversation_id, Seq seq, const std::string* frame);

  // Records the sender of a new message (bounded: the oldest is forgotten).
  static void remember_sender(ConvState& state, Seq seq, const std::string& user);

  // Submits a batch for a conversation of this shard; the state stays pinned until `done`
  // ran (on this loop). Returns false if the committer refused it (done already ran).
  bool submit(ConvState& state, store::Batch batch, GroupCommitter::Completion done);
  // For the completion of a change on its `attempt`-th sequencing (0 for the first): true if
  // its batch was behind (nothing of it was stored) and it may be sequenced again; the caller
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
  Media* media = nullptr;        // checks the media a send names (issue 11); null: media refused
  Blocks* blocks = nullptr;             // issue 12: blocked direct sends are withheld (send_safety.h)
  PresencePrivacy* privacy = nullptr;   // issue 12: a send accepts a direct conversation
  PushNotifier* push = nullptr;         // issue 12: messages stored for offline devices wake them

 private:
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace tern::services
