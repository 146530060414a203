// Membership: creating conversations and changing a group's members, on the conversation's
// owning loop. A change is sequenced like a send: it becomes a system message with its own
// seq, and the in-memory conversation snapshot is swapped at that moment, so every send
// sequenced afterwards sees the new membership (membership eras: joined_seq / left_seq).
// A group never loses its last admin: the longest-standing remaining member takes over.
// On a store shared by several nodes, a change whose commit found another node's append
// first (GroupCommitter::kBehind) is run again from the start once the head and the
// conversation are reloaded, like a send (SequencerCore::sequence_again): its checks see what
// the other node changed, so e.g. removing a member it already removed answers as on one node.
//
// Thread-safety: every method only on the owning loop of the conversation (Sequencer routes
// there); callbacks run on that loop. Owned by Sequencer; borrows the core.
#pragma once
#include <string>
#include <vector>

#include "proto/http_shapes.h"
#include "services/sequencer_core.h"

namespace tern::services {

class Membership {
 public:
  using CreateDone = std::function<void(Result<ConversationInfo>)>;
  using MembersDone = std::function<void(Result<std::vector<std::string>>)>;
  using TimerDone = std::function<void(Result<int64_t>)>;

  explicit Membership(SequencerCore& core) : core_(core) {}

  void create(Shard& shard, DeviceRef creator, proto::CreateConversationRequest request, std::string id,
              CreateDone done);
  void change(Shard& shard, const DeviceRef& actor, const std::string& conversation_id,
              const proto::MembersRequest& request, MembersDone done, int attempt = 0);
  // The disappearing-messages timer (issue 11; 0 = off): set by a member of a direct
  // conversation or an admin of a group, sequenced as a system message
  // {"action":"timer","by":…,"seconds":N}; sends sequenced after it get the ttl.
  // `attempt`: how often this change was sequenced before (0 for a new one).
  void set_timer(Shard& shard, const DeviceRef& actor, const std::string& conversation_id, int64_t seconds,
                 TimerDone done, int attempt = 0);

  // Channels always fan out on read; groups at or above --fanout-read-threshold members.
  bool reads_fan_out(const store::Conversation& c) const;

 private:
  // Appends a system message to the batch (reaching every member device, the acting one
  // included); returns its frame and fills `to`.
  std::shared_ptr<const std::string> system_message(store::Batch& batch, const store::Conversation& c, Seq seq,
                                                    const DeviceRef& actor, const std::string& system_json,
                                                    std::vector<DeviceRef>& to);

  SequencerCore& core_;
};

}  // namespace tern::services
