// Sender: the send path, on the conversation's owning loop. Checks membership, answers
// retries (idempotency by client_msg_id), checks per-device `bodies` against the member
// devices, assigns `seq = head + 1`, encodes the message frame once (those bytes are stored
// and shared by every recipient) and submits one batch: the log append, the idempotency
// record and an inbox mark per recipient device, all blind writes. The commit's completion
// (back on this loop) answers the sender and publishes the message to every recipient device.
// On a store shared by several nodes, a commit that found another node's append first comes
// back as GroupCommitter::kBehind: the send is sequenced again on the reloaded head (nothing
// was announced yet), at most kMaxAttempts times. When the store's commit checks the
// client_msg_id itself (Store::commit_checks_idempotency, Redis), a first attempt
// skips the idempotency read: a duplicate comes back as kBehind and the next attempt reads it.
//
// Thread-safety: send() only on the owning loop of the frame's conversation (Sequencer routes
// there). `done` runs on that loop. Owned by Sequencer; borrows the core.
#pragma once
#include "proto/frames.h"
#include "services/media_leases.h"
#include "services/sequencer_core.h"

namespace tern::services {

class Sender {
 public:
  explicit Sender(SequencerCore& core) : core_(core) {}

  // How often one send is sequenced at most (SequencerCore::kMaxAttempts).
  static constexpr int kMaxAttempts = SequencerCore::kMaxAttempts;

  // `attempt`: how often this send was sequenced before (0 for a new one). With offloaded
  // reads (Redis) it runs gated (SequencerCore::when_warm), and its reads go to a reader
  // thread (SequencerCore::read_then), after which it runs again from the start with what
  // they found: `idempotency_read`: the client_msg_id's step is done (the store had no
  // record, or with Store::commit_checks_idempotency `done` already reads it on failure);
  // `media_lease`: non-null, the media the frame names were checked (Media::check_send).
  void send(Shard& shard, DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done,
            int attempt = 0, bool idempotency_read = false, MediaLeases::Lease media_lease = nullptr);

 private:
  // After a read on a reader thread (read_then's `then`): runs the send again from the start,
  // its idempotency step done, through SequencerCore::resume (a conversation that must be
  // reloaded meanwhile is read off the loop, the send staying first).
  void again(Shard& shard, DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done, int attempt,
             MediaLeases::Lease media_lease);
  // Finishes the in-flight entry of `key`: answers the retries that waited for it.
  static void settle(Shard& shard, const std::string& key, const Result<void>& committed);

  SequencerCore& core_;
};

}  // namespace tern::services
