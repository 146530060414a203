#include "services/sequencer.h"

#include "services/conversation_ids.h"
#include "services/token.h"

namespace tern::services {

Sequencer::Sequencer(Loops& loops, store::Store& store, GroupCommitter& committer, Directory& directory,
                     bus::Bus& bus, const ServiceOptions& options)
    : core_(loops, store, committer, directory, bus, options),
      sender_(core_),
      membership_(core_),
      receipts_(core_),
      channels_(core_) {}

std::string Sequencer::direct_conversation_id(const std::string& a, const std::string& b) {
  return keyed_direct_conversation_id(a, b);
}

void Sequencer::send(DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done) {
  const size_t owner = core_.owner(frame.conversation_id);
  core_.loops.run(owner, [this, owner, device = std::move(device), frame = std::move(frame), started_us,
                          done = std::move(done)]() mutable {
    sender_.send(core_.shard(owner), std::move(device), std::move(frame), started_us, std::move(done));
  });
}

void Sequencer::create_conversation(DeviceRef creator, proto::CreateConversationRequest request, CreateDone done) {
  // A self conversation: "s-" and the keyed digest of (user, user), a pair no direct one has.
  std::string id = request.channel ? "ch-" + random_hex(12)
                   : request.group ? "g-" + random_hex(12)
                   : request.self  ? "s-" + direct_conversation_id(creator.user, creator.user).substr(2)
                                   : direct_conversation_id(creator.user, request.members.front());
  const size_t owner = core_.owner(id);
  core_.loops.run(owner, [this, owner, creator = std::move(creator), request = std::move(request), id = std::move(id),
                          done = std::move(done)]() mutable {
    membership_.create(core_.shard(owner), std::move(creator), std::move(request), std::move(id), std::move(done));
  });
}

void Sequencer::change_members(DeviceRef actor, std::string conversation_id, proto::MembersRequest request,
                               MembersDone done) {
  const size_t owner = core_.owner(conversation_id);
  core_.loops.run(owner, [this, owner, actor = std::move(actor), id = std::move(conversation_id),
                          request = std::move(request), done = std::move(done)]() mutable {
    membership_.change(core_.shard(owner), actor, id, request, std::move(done));
  });
}

// Runs fn(shard) on the owning loop of `id`.
template <typename Fn>
void Sequencer::on_owner(const std::string& id, Fn fn) {
  const size_t owner = core_.owner(id);
  core_.loops.run(owner, [this, owner, fn = std::move(fn)]() mutable { fn(core_.shard(owner)); });
}

void Sequencer::observe_head(const std::string& conversation_id, Seq seq, std::shared_ptr<const std::string> frame) {
  on_owner(conversation_id, [this, id = conversation_id, seq, frame = std::move(frame)](Shard& s) {
    core_.observe_head(s, id, seq, frame.get());
  });
}

void Sequencer::join_channel(DeviceRef actor, std::string channel_id, Channels::JoinDone done) {
  on_owner(channel_id, [this, actor = std::move(actor), id = channel_id, done = std::move(done)](Shard& s) mutable {
    channels_.join(s, actor, id, std::move(done));
  });
}

void Sequencer::leave_channel(DeviceRef actor, std::string channel_id, Channels::CountDone done) {
  on_owner(channel_id, [this, actor = std::move(actor), id = channel_id, done = std::move(done)](Shard& s) mutable {
    channels_.leave(s, actor, id, std::move(done));
  });
}

void Sequencer::change_subscribers(DeviceRef actor, std::string channel_id, proto::MembersRequest request,
                                   Channels::CountDone done) {
  on_owner(channel_id, [this, actor = std::move(actor), id = channel_id, request = std::move(request),
                        done = std::move(done)](Shard& s) mutable {
    channels_.change_subscribers(s, actor, id, request, std::move(done));
  });
}

void Sequencer::change_admins(DeviceRef actor, std::string channel_id, proto::MembersRequest request,
                              Channels::AdminsDone done) {
  on_owner(channel_id, [this, actor = std::move(actor), id = channel_id, request = std::move(request),
                        done = std::move(done)](Shard& s) mutable {
    channels_.change_admins(s, actor, id, request, std::move(done));
  });
}

void Sequencer::channel_info(std::string channel_id, Channels::InfoDone done) {
  on_owner(channel_id, [this, id = channel_id, done = std::move(done)](Shard& s) mutable {
    channels_.info(s, id, std::move(done));
  });
}

void Sequencer::set_timer(DeviceRef actor, std::string conversation_id, int64_t seconds, TimerDone done) {
  const size_t owner = core_.owner(conversation_id);
  core_.loops.run(owner, [this, owner, actor = std::move(actor), id = std::move(conversation_id), seconds,
                          done = std::move(done)]() mutable {
    membership_.set_timer(core_.shard(owner), actor, id, seconds, std::move(done));
  });
}

void Sequencer::acknowledge(DeviceRef device, std::string conversation_id, Seq seq, bool read, AckDone done,
                            bool following) {
  const size_t owner = core_.owner(conversation_id);
  core_.loops.run(owner, [this, owner, device = std::move(device), id = std::move(conversation_id), seq, read,
                          done = std::move(done), following]() mutable {
    receipts_.acknowledge(core_.shard(owner), device, id, seq, read, std::move(done), following);
  });
}

}  // namespace tern::services
