#include "services/send_safety.h"

#include <algorithm>

#include "bus/bus.h"
#include "services/blocks.h"
#include "services/presence_privacy.h"
#include "services/user_records.h"

namespace tern::services {

Result<SendSafety> SendSafety::check(Blocks* blocks, PresencePrivacy* privacy, const store::Conversation& c,
                                     const std::string& sender) {
  SendSafety s;
  if (c.type != store::ConvType::kDirect) return s;
  for (const auto& m : c.members)
    if (m.user != sender) s.other = m.user;
  if (s.other.empty()) return s;
  if (blocks) {
    if (blocks->blocks(sender, s.other))
      return make_error(ErrorCode::kForbidden, "you blocked this user; unblock them to send");
    if (blocks->blocks(s.other, sender)) s.withheld_from = s.other;
  }
  s.record_accept = privacy && !privacy->known_accepted(sender, c.id);
  return s;
}

void SendSafety::filter(std::vector<DeviceRef>& to) const {
  if (withheld_from.empty()) return;
  std::erase_if(to, [&](const DeviceRef& d) { return d.user == withheld_from; });
}

void SendSafety::add_ops(store::Batch& batch, const std::string& sender, const std::string& conversation_id) const {
  if (record_accept) batch.add(store::PutUserRecord{sender, records::accept(conversation_id), other});
}

void SendSafety::committed(PresencePrivacy* privacy, bus::Bus& bus, const std::string& sender,
                           const std::string& conversation_id) const {
  if (!record_accept || !privacy) return;
  privacy->accepted(sender, conversation_id, other);
  // Only when the acceptance was not known here (known_accepted): not per send.
  bus.announce_user_changed(sender);
}

}  // namespace tern::services
