// What blocks and presence consent (issue 12) add to a send into a direct conversation,
// decided on the conversation's owning loop before the seq is taken (see blocks.h for the
// rules). Groups are unaffected. Stateless; the Blocks and PresencePrivacy it consults are
// thread-safe.
#pragma once
#include <string>
#include <vector>

#include "base/ids.h"
#include "base/result.h"
#include "store/store.h"

namespace tern::bus {
class Bus;
}

namespace tern::services {

class Blocks;
class PresencePrivacy;

struct SendSafety {
  std::string withheld_from;  // the blocker, when the sender is blocked: its devices get nothing
  bool record_accept = false;  // first send of this user here (as far as memory knows): write accept/<conv>
  std::string other;           // the counterpart of a direct conversation

  // Refused (`forbidden`, told only to the blocker) when the sender blocks the other member.
  static Result<SendSafety> check(Blocks* blocks, PresencePrivacy* privacy, const store::Conversation& c,
                                  const std::string& sender);
  // Drops the blocker's devices from the recipients (after the `bodies` check, so that a
  // device_mismatch cannot reveal the block).
  void filter(std::vector<DeviceRef>& to) const;
  // Adds the acceptance record to the message's batch.
  void add_ops(store::Batch& batch, const std::string& sender, const std::string& conversation_id) const;
  // After the commit: remembers the acceptance, and announces it, so that the other nodes
  // drop their copy of the sender's presence policy (else a node that cached it before
  // kept refusing the other user its presence until the copy went).
  void committed(PresencePrivacy* privacy, bus::Bus& bus, const std::string& sender,
                 const std::string& conversation_id) const;
};

}  // namespace tern::services
