// Sequencer: the one place that changes a conversation, and the router to it. Every
// conversation has one owning loop (SequencerCore::owner); each public method runs its work
// there: inline when the caller already is on that loop, else through the loops' batched
// mailbox (one wake-up per batch). The work itself is in three parts, one file each:
//   Sender      send path (seq, idempotency, per-device bodies, fan-out on commit)
//   Membership  create conversations, add/remove members (system messages, eras)
//   Receipts    cumulative acks and read markers (cursor, inbox, durable receipts)
//   Channels    subscriptions (join, leave, an admin's add/remove), admins
//   ChannelViews views of a channel's recent posts (counted by its sequencing node)
// Each change becomes one store Batch of blind writes handed to the GroupCommitter, whose
// completion comes back to the owning loop to answer the caller and publish on the bus.
//
// Thread-safety: public methods from any thread. Callbacks run on the conversation's owning
// loop; callers hop to their own loop if they need to. Owned by TernService; borrows the
// loops, store, committer (built with these loops), directory and bus.
#pragma once
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "proto/frames.h"
#include "proto/http_shapes.h"
#include "services/channel_forwarding.h"
#include "services/channel_views.h"
#include "services/channels.h"
#include "services/membership.h"
#include "services/receipts.h"
#include "services/sender.h"
#include "services/sequencer_core.h"

namespace tern::services {

class Sequencer {
 public:
  using CreateDone = Membership::CreateDone;
  using MembersDone = Membership::MembersDone;
  using AckDone = Receipts::AckDone;
  using TimerDone = Membership::TimerDone;

  Sequencer(Loops& loops, store::Store& store, StoreReads& reads, GroupCommitter& committer, Directory& directory, bus::Bus& bus,
            const ServiceOptions& options);

  // Sequenced here, or on the node that owns the conversation if that is another one (the
  // bus's route(); send_forwarding.h): `done` runs on this node's owning loop either way.
  void send(DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done);
  // A send or channel change forwarded by another node (the bus's request sink): made here,
  // never forwarded again; `respond` gets the encoded answer (on the owning loop).
  void serve_forwarded(std::string payload, std::function<void(std::string)> respond);
  void create_conversation(DeviceRef creator, proto::CreateConversationRequest request, CreateDone done);
  void change_members(DeviceRef actor, std::string conversation_id, proto::MembersRequest request, MembersDone done);
  // Channels (see channels.h). A change is made on the node that sequences the channel: here,
  // or handed to it (channel_forwarding.h); `done` runs on this node's owning loop either way.
  void join_channel(DeviceRef actor, std::string channel_id, Channels::JoinDone done);
  void leave_channel(DeviceRef actor, std::string channel_id, Channels::CountDone done);
  void change_subscribers(DeviceRef actor, std::string channel_id, proto::MembersRequest request,
                          Channels::CountDone done);
  void change_admins(DeviceRef actor, std::string channel_id, proto::MembersRequest request,
                     Channels::AdminsDone done);
  // The channel's record and head from here; its views from the node that sequences it
  // (this node's own, none, if that node does not answer).
  void channel_info(std::string channel_id, Channels::InfoDone done);
  void set_timer(DeviceRef actor, std::string conversation_id, int64_t seconds, TimerDone done);
  // Cumulative ack (read=false) or read marker (read=true) of a device. `following`: the
  // device's session follows the conversation in LiveFanout (it verified the subscription
  // when it followed), so a channel ack needs no store read of the membership row.
  // `channel_row`: the user's channel membership as the session read it off the loop (a
  // former subscriber's row, left_seq set), used instead of reading the row again.
  void acknowledge(DeviceRef device, std::string conversation_id, Seq seq, bool read, AckDone done,
                   bool following = false, std::optional<store::Member> channel_row = std::nullopt);

  // The highest ack of the device for the conversation that is not yet in the store (0 if
  // none): a device that acks, disconnects and reconnects at once must not replay what it acked.
  Seq pending_ack(const DeviceRef& device, const std::string& conversation_id) {
    return receipts_.pending_ack(device, conversation_id);
  }

  // Another node committed `seq` of the conversation (a bus head hint, bus.h set_head_sink):
  // moves the cached head there if nothing of this node is in flight for it, so that the next
  // send from here is not behind. `frame` (the stored message) names its sender for receipts.
  void observe_head(const std::string& conversation_id, Seq seq, std::shared_ptr<const std::string> frame);

  // Work of the conversation parked until its head reloads after a failed batch
  // (ConvState::parked): for tests and diagnostics. Blocks; call it off the loops.
  size_t parked(const std::string& conversation_id);

  // Keyed with the server's secret (conversation_ids.h): a third party cannot derive it.
  static std::string direct_conversation_id(const std::string& a, const std::string& b);
  // Presence keeps an index of who shares a conversation with whom; set before serving.
  void set_presence(Presence* presence) { core_.presence = presence; }
  // Live delivery of read-side conversations; set before serving.
  void set_fanout(LiveFanout* fanout) { core_.fanout = fanout; }
  // Where the send path reads a device's current registration id (the stale-device check).
  void set_registration_lookup(RegistrationLookup lookup, RegistrationPrefetch prefetch = nullptr,
                               RegistrationCached cached = nullptr) {
    core_.registration_id = std::move(lookup);
    core_.registration_prefetch = std::move(prefetch);
    core_.registration_cached = std::move(cached);
  }
  // Media checks the media ids a send names (issue 11); set before serving.
  void set_media(Media* media) { core_.media = media; }
  void set_push(PushNotifier* push) { core_.push = push; }
  void set_safety(Blocks* blocks, PresencePrivacy* privacy) {
    core_.blocks = blocks;
    core_.privacy = privacy;
  }

 private:
  template <typename Fn>
  void on_owner(const std::string& id, bool receipts, Fn fn);
  // Null unless called off the loops with offloaded reads (see sequencer.cc).
  std::shared_ptr<const WarmHold> prefetch_devices(const std::vector<std::string>& users);
  // On the owning loop: hands the send to `node` (send_forwarding.h) and answers `done` there.
  void forward(Shard& shard, std::string node, DeviceRef device, proto::SendFrame frame, SendDone done);
  // A channel change (or kReads, kViews of its views): handed to the channel's sequencing node
  // if that is another one (unless `served`: another node handed it here), else made on the
  // owning loop; `done` runs there. A change refused because the channel's record changed
  // meanwhile (another node made a change of it too while the two took themselves for its
  // sequencing node: store::PutConversation::expected), or because the store holds the
  // channel's changes (a Redis Cluster's change lease of a node that died mid-change), is made
  // again from the record read again, once none of this node's changes of the channel is in
  // flight (Channels::apply): from the third attempt on after a random pause (up to 10 ms per
  // attempt made; 125 to 250 ms from kChannelAttempts on), until
  // ServiceOptions::channel_change_retry_ms since the first attempt have passed, then answered
  // `unavailable`. A served change gives up sooner (channel_change_served_retry_ms, below the
  // bus's request timeout) and answers `exists`: the node that handed it makes it again.
  using ChannelDone = std::function<void(Result<channel_forwarding::Answer>)>;
  static constexpr int kChannelAttempts = 8;
  static constexpr unsigned kChannelLongPauseMs = 250;
  void change_channel(channel_forwarding::Request request, bool served, ChannelDone done, int attempt = 1,
                      std::chrono::steady_clock::time_point deadline = {});
  void forward_channel(std::string node, channel_forwarding::Request request, ChannelDone done);

  SequencerCore core_;
  Sender sender_;
  Membership membership_;
  ChannelViews views_;  // before receipts_, which counts reads into it
  Receipts receipts_;
  Channels channels_;
};

}  // namespace tern::services
