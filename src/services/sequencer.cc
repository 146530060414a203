#include "services/sequencer.h"

#include "base/clock.h"
#include "base/metrics.h"
#include "services/conversation_ids.h"
#include "services/send_forwarding.h"
#include "services/token.h"

namespace tern::services {
namespace {

Counter& sends_forwarded = MetricsRegistry::global().counter(
    "tern_sends_forwarded_total", "sends handed to the node that sequences their conversation");
Counter& sends_served = MetricsRegistry::global().counter(
    "tern_sends_served_total", "sends another node handed to this one to sequence");

}  // namespace

Sequencer::Sequencer(Loops& loops, store::Store& store, StoreReads& reads, GroupCommitter& committer,
                     Directory& directory, bus::Bus& bus, const ServiceOptions& options)
    : core_(loops, store, reads, committer, directory, bus, options),
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
    Shard& shard = core_.shard(owner);
    // While earlier sends of the conversation are with a node, later ones follow them there
    // (even if the ring changed meanwhile), so a device's sends keep their order.
    std::string node;
    if (auto f = shard.forwarding.find(frame.conversation_id); f != shard.forwarding.end()) node = f->second.first;
    else node = core_.bus.route(frame.conversation_id);
    if (!node.empty()) return forward(shard, std::move(node), std::move(device), std::move(frame), std::move(done));
    sender_.send(shard, std::move(device), std::move(frame), started_us, std::move(done));
  });
}

void Sequencer::forward(Shard& shard, std::string node, DeviceRef device, proto::SendFrame frame, SendDone done) {
  sends_forwarded.inc();
  std::string conv = frame.conversation_id;
  auto& entry = shard.forwarding[conv];
  entry.first = node;
  ++entry.second;
  core_.bus.request(node, send_forwarding::encode_request(device, frame),
                    [this, &shard, conv = std::move(conv), done = std::move(done)](Result<std::string> answer) mutable {
                      Result<SentInfo> r =
                          answer ? send_forwarding::decode_response(*answer) : Result<SentInfo>(answer.error());
                      // Back on the conversation's owning loop, as a local send answers.
                      core_.loops.run(shard.loop, [&shard, conv = std::move(conv), r = std::move(r),
                                                   done = std::move(done)]() mutable {
                        if (auto f = shard.forwarding.find(conv); f != shard.forwarding.end() && --f->second.second == 0)
                          shard.forwarding.erase(f);
                        done(std::move(r));
                      });
                    });
}

void Sequencer::serve_forwarded(std::string payload, std::function<void(std::string)> respond) {
  auto request = send_forwarding::decode_request(payload);
  if (!request) return respond(send_forwarding::encode_response(request.error()));
  sends_served.inc();
  auto& [device, frame] = *request;
  // Sequenced here whatever this node's ring says: never forwarded twice.
  const int64_t started_us = mono_us();
  const size_t owner = core_.owner(frame.conversation_id);
  core_.loops.run(owner, [this, owner, device = std::move(device), frame = std::move(frame), started_us,
                          respond = std::move(respond)]() mutable {
    sender_.send(core_.shard(owner), std::move(device), std::move(frame), started_us,
                 [respond = std::move(respond)](Result<SentInfo> r) { respond(send_forwarding::encode_response(r)); });
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
