#include "services/sequencer.h"

#include <algorithm>
#include <cassert>
#include <future>
#include <random>

#include <boost/asio/steady_timer.hpp>

#include "base/clock.h"
#include "base/metrics.h"
#include "services/channel_forwarding.h"
#include "services/conversation_ids.h"
#include "services/send_forwarding.h"
#include "services/token.h"

namespace tern::services {
namespace {

Counter& sends_forwarded = MetricsRegistry::global().counter(
    "tern_sends_forwarded_total", "sends handed to the node that sequences their conversation");
Counter& sends_served = MetricsRegistry::global().counter(
    "tern_sends_served_total", "sends another node handed to this one to sequence");
Counter& channel_changes_forwarded = MetricsRegistry::global().counter(
    "tern_channel_changes_forwarded_total", "channel joins, leaves and admin changes handed to the node that sequences the channel");
Counter& channel_changes_served = MetricsRegistry::global().counter(
    "tern_channel_changes_served_total", "channel changes another node handed to this one");
Counter& channel_changes_retried = MetricsRegistry::global().counter(
    "tern_channel_changes_retried_total", "channel changes made again because another node had changed the channel first");

}  // namespace

Sequencer::Sequencer(Loops& loops, store::Store& store, StoreReads& reads, GroupCommitter& committer,
                     Directory& directory, bus::Bus& bus, const ServiceOptions& options)
    : core_(loops, store, reads, committer, directory, bus, options),
      sender_(core_),
      membership_(core_),
      views_(core_),
      receipts_(core_, views_),
      channels_(core_) {}

std::string Sequencer::direct_conversation_id(const std::string& a, const std::string& b) {
  return keyed_direct_conversation_id(a, b);
}

// Runs fn(shard, error) on the owning loop of `id`, once the conversation is in memory there
// (SequencerCore::when_warm; `receipts`: its receipt marks too). A non-null error: the read
// failed; fn answers its caller with it.
template <typename Fn>
void Sequencer::on_owner(const std::string& id, bool receipts, Fn fn) {
  const size_t owner = core_.owner(id);
  core_.loops.run(owner, [this, owner, id, receipts, fn = std::move(fn)]() mutable {
    Shard& shard = core_.shard(owner);
    core_.when_warm(shard, id, receipts, [&shard, fn = std::move(fn)](const Error* e) mutable { fn(shard, e); });
  });
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
    // The embedded store reads inline: no gate, and no copy of the id for it on this path.
    if (!core_.reads.offloaded()) return sender_.send(shard, std::move(device), std::move(frame), started_us, std::move(done));
    const std::string id = frame.conversation_id;  // before the frame moves into the closure
    core_.when_warm(shard, id, false, [this, &shard, device = std::move(device), frame = std::move(frame), started_us,
                                       done = std::move(done)](const Error* e) mutable {
      if (e) return done(*e);
      sender_.send(shard, std::move(device), std::move(frame), started_us, std::move(done));
    });
  });
}

void Sequencer::forward(Shard& shard, std::string node, DeviceRef device, proto::SendFrame frame, SendDone done) {
  sends_forwarded.inc();
  std::string conv = frame.conversation_id;
  auto& entry = shard.forwarding[conv];
  entry.first = node;
  ++entry.second;
  core_.bus.request(node, send_forwarding::encode_request(device, frame),
                    [this, &shard, conv = std::move(conv), sender = device.user,
                     done = std::move(done)](Result<std::string> answer) mutable {
                      Result<SentInfo> r =
                          answer ? send_forwarding::decode_response(*answer) : Result<SentInfo>(answer.error());
                      // The owner is stopping (it refused before the others left it out of
                      // their rings): this node is not, so its client is told to retry.
                      if (!r && r.error().code == ErrorCode::kDraining)
                        r = make_error(ErrorCode::kUnavailable, "the node that sequences this conversation is stopping; retry");
                      // Back on the conversation's owning loop, as a local send answers.
                      core_.loops.run(shard.loop, [this, &shard, conv = std::move(conv), sender = std::move(sender),
                                                   r = std::move(r), done = std::move(done)]() mutable {
                        if (auto f = shard.forwarding.find(conv); f != shard.forwarding.end() && --f->second.second == 0)
                          shard.forwarding.erase(f);
                        // This node's head learns its own message, which no hint may bring.
                        if (r) core_.observe_sent(shard, conv, r->seq, sender);
                        done(std::move(r));
                      });
                    });
}

void Sequencer::serve_forwarded(std::string payload, std::function<void(std::string)> respond) {
  if (channel_forwarding::is_request(payload)) {
    auto change = channel_forwarding::decode_request(payload);
    if (!change) return respond(channel_forwarding::encode_response(change.error()));
    if (change->op != channel_forwarding::Op::kReads && change->op != channel_forwarding::Op::kViews)
      channel_changes_served.inc();
    return change_channel(std::move(*change), true, [respond = std::move(respond)](Result<channel_forwarding::Answer> r) {
      respond(channel_forwarding::encode_response(r));
    });
  }
  auto request = send_forwarding::decode_request(payload);
  if (!request) return respond(send_forwarding::encode_response(request.error()));
  sends_served.inc();
  auto& [device, frame] = *request;
  // Sequenced here whatever this node's ring says: never forwarded twice.
  const int64_t started_us = mono_us();
  const std::string id = frame.conversation_id;  // before the frame moves into the closure
  on_owner(id, false, [this, device = std::move(device), frame = std::move(frame), started_us,
                       respond = std::move(respond)](Shard& shard, const Error* e) mutable {
    SendDone done = [respond = std::move(respond)](Result<SentInfo> r) {
      respond(send_forwarding::encode_response(r));
    };
    if (e) return done(*e);
    sender_.send(shard, std::move(device), std::move(frame), started_us, std::move(done));
  });
}

// A caller off the loops (with Redis, an HTTP request runs on a reader thread) may block:
// it reads the device lists of the users a membership change names into the directory, and
// holds them for the change (warm_hold.h): one evicted before the change runs on the owning
// loop is not read there.
std::shared_ptr<const WarmHold> Sequencer::prefetch_devices(const std::vector<std::string>& users) {
  if (!core_.reads.offloaded() || core_.loops.here() != Loops::kNone) return nullptr;
  auto hold = std::make_shared<WarmHold>();
  for (const auto& u : users)
    if (auto d = core_.directory.devices(u)) hold->devices.emplace(u, std::move(*d));
  return hold;
}

void Sequencer::create_conversation(DeviceRef creator, proto::CreateConversationRequest request, CreateDone done) {
  std::vector<std::string> users = request.members;
  users.push_back(creator.user);  // a member too: its devices get the creation message
  auto hold = prefetch_devices(users);
  // A self conversation: "s-" and the keyed digest of (user, user), a pair no direct one has.
  std::string id = request.channel ? "ch-" + random_hex(12)
                   : request.group ? "g-" + random_hex(12)
                   : request.self  ? "s-" + direct_conversation_id(creator.user, creator.user).substr(2)
                                   : direct_conversation_id(creator.user, request.members.front());
  on_owner(id, false, [this, creator = std::move(creator), request = std::move(request), id, done = std::move(done),
                       hold = std::move(hold)](Shard& s, const Error* e) mutable {
    if (e) return done(*e);
    WarmHold::Scope scope(hold);
    membership_.create(s, std::move(creator), std::move(request), std::move(id), std::move(done));
  });
}

void Sequencer::change_members(DeviceRef actor, std::string conversation_id, proto::MembersRequest request,
                               MembersDone done) {
  auto hold = prefetch_devices(request.add);
  on_owner(conversation_id, false, [this, actor = std::move(actor), id = conversation_id, request = std::move(request),
                                    done = std::move(done), hold = std::move(hold)](Shard& s, const Error* e) mutable {
    if (e) return done(*e);
    WarmHold::Scope scope(hold);
    membership_.change(s, actor, id, request, std::move(done));
  });
}

size_t Sequencer::parked(const std::string& conversation_id) {
  assert(core_.loops.here() == Loops::kNone);
  std::promise<size_t> count;
  const size_t owner = core_.owner(conversation_id);
  core_.loops.run(owner, [this, owner, &conversation_id, &count] {
    ConvState* cs = core_.shard(owner).conversations.find(conversation_id);
    count.set_value(cs ? cs->parked.size() : 0);
  });
  return count.get_future().get();
}

void Sequencer::observe_head(const std::string& conversation_id, Seq seq, std::shared_ptr<const std::string> frame) {
  // No store read: a conversation not in memory ignores the hint (so no gate either).
  const size_t owner = core_.owner(conversation_id);
  core_.loops.run(owner, [this, owner, id = conversation_id, seq, frame = std::move(frame)]() {
    core_.observe_head(core_.shard(owner), id, seq, frame.get());
  });
}

void Sequencer::join_channel(DeviceRef actor, std::string channel_id, Channels::JoinDone done) {
  change_channel({channel_forwarding::Op::kJoin, std::move(actor), std::move(channel_id), {}, {}}, false,
                 [done = std::move(done)](Result<channel_forwarding::Answer> r) {
                   done(r ? Result<SubscriptionInfo>(r->info) : Result<SubscriptionInfo>(r.error()));
                 });
}

void Sequencer::leave_channel(DeviceRef actor, std::string channel_id, Channels::CountDone done) {
  change_channel({channel_forwarding::Op::kLeave, std::move(actor), std::move(channel_id), {}, {}}, false,
                 [done = std::move(done)](Result<channel_forwarding::Answer> r) {
                   done(r ? Result<uint64_t>(r->info.subscribers) : Result<uint64_t>(r.error()));
                 });
}

void Sequencer::change_subscribers(DeviceRef actor, std::string channel_id, proto::MembersRequest request,
                                   Channels::CountDone done) {
  change_channel({channel_forwarding::Op::kSubscribers, std::move(actor), std::move(channel_id), std::move(request), {}},
                 false, [done = std::move(done)](Result<channel_forwarding::Answer> r) {
                   done(r ? Result<uint64_t>(r->info.subscribers) : Result<uint64_t>(r.error()));
                 });
}

void Sequencer::change_admins(DeviceRef actor, std::string channel_id, proto::MembersRequest request,
                              Channels::AdminsDone done) {
  change_channel({channel_forwarding::Op::kAdmins, std::move(actor), std::move(channel_id), std::move(request), {}}, false,
                 [done = std::move(done)](Result<channel_forwarding::Answer> r) {
                   done(r ? Result<std::vector<std::string>>(std::move(r->admins))
                          : Result<std::vector<std::string>>(r.error()));
                 });
}

void Sequencer::change_channel(channel_forwarding::Request request, bool served, ChannelDone done, int attempt,
                               std::chrono::steady_clock::time_point deadline) {
  using channel_forwarding::Answer;
  using channel_forwarding::Op;
  if (request.op != Op::kReads && request.op != Op::kViews) {
    // Two nodes that both took themselves for the channel's sequencing node (their live sets
    // differ for a moment) may both change it: the later commit finds the record changed and
    // is refused whole (Channels::apply). Channels dropped its copy; the change is made again,
    // from the owning loop's warm-up of the record as stored. A store may also hold the
    // channel's changes longer than such contention lasts (on a Redis Cluster: the change
    // lease of a node that died mid-change, redis_change_lease.h): the change is made again
    // until the hold ends (and the dead node's change with it) or the deadline passes.
    if (attempt == 1) {
      const int64_t window = served ? std::min(core_.options.channel_change_retry_ms,
                                               core_.options.channel_change_served_retry_ms)
                                    : core_.options.channel_change_retry_ms;
      deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(window);
    }
    done = [this, again = request, served, attempt, deadline, done = std::move(done)](Result<Answer> r) mutable {
      if (r || r.error().code != ErrorCode::kExists) return done(std::move(r));
      channel_changes_retried.inc();
      if (std::chrono::steady_clock::now() >= deadline) {
        // A change another node handed here goes back as refused: that node makes it again
        // (handing it here again, or to whichever node sequences the channel by then) until
        // its own deadline, so that none of its requests here outlives the bus's timeout.
        if (served) return done(make_error(ErrorCode::kExists, "the channel is held; hand the change again"));
        return done(make_error(ErrorCode::kUnavailable, "the channel kept changing meanwhile; retry"));
      }
      if (attempt < 2) return change_channel(std::move(again), served, std::move(done), attempt + 1, deadline);
      // Lost twice: two nodes keep changing the channel at once (each one's commits make the
      // other drop its copy). A random pause, longer at each attempt, lets one of them finish;
      // from kChannelAttempts on, 125 to 250 ms: the channel is held (above).
      thread_local std::minstd_rand jitter{std::random_device{}()};
      const unsigned cap = attempt < kChannelAttempts ? 10u * static_cast<unsigned>(attempt) : kChannelLongPauseMs;
      const unsigned floor = attempt < kChannelAttempts ? 1u : kChannelLongPauseMs / 2;
      const auto pause = std::chrono::milliseconds(floor + jitter() % (cap - floor + 1));
      const size_t loop = core_.owner(again.channel_id);
      auto timer = std::make_shared<boost::asio::steady_timer>(core_.loops.context(loop), pause);
      timer->async_wait([this, timer, again = std::move(again), served, attempt, deadline,
                         done = std::move(done)](const boost::system::error_code&) mutable {
        change_channel(std::move(again), served, std::move(done), attempt + 1, deadline);
      });
    };
  }
  // On the node that sequences the channel (the bus's route(), as for its posts), so that one
  // node writes its record: the channel's changes count from one copy, in one order. A change
  // another node handed here is made here whatever this node's ring says.
  if (!served) {
    if (std::string node = core_.bus.route(request.channel_id); !node.empty())
      return forward_channel(std::move(node), std::move(request), std::move(done));
  }
  const std::string id = request.channel_id;
  on_owner(id, false, [this, request = std::move(request), done = std::move(done)](Shard& s, const Error* e) mutable {
    if (e) return done(*e);
    const DeviceRef& actor = request.actor;
    const std::string& id = request.channel_id;
    switch (request.op) {
      case Op::kJoin:
        return channels_.join(s, actor, id, [done = std::move(done)](Result<SubscriptionInfo> r) {
          done(r ? Result<Answer>(Answer{*r, {}, {}}) : Result<Answer>(r.error()));
        });
      case Op::kLeave:
      case Op::kSubscribers: {
        Channels::CountDone counted = [done = std::move(done)](Result<uint64_t> r) {
          done(r ? Result<Answer>(Answer{SubscriptionInfo{0, *r}, {}, {}}) : Result<Answer>(r.error()));
        };
        if (request.op == Op::kLeave) return channels_.leave(s, actor, id, std::move(counted));
        return channels_.change_subscribers(s, actor, id, request.members, std::move(counted));
      }
      case Op::kAdmins:
        return channels_.change_admins(s, actor, id, request.members,
                                       [done = std::move(done)](Result<std::vector<std::string>> r) {
                                         done(r ? Result<Answer>(Answer{{}, std::move(*r), {}}) : Result<Answer>(r.error()));
                                       });
      case Op::kReads:
      case Op::kViews: {
        auto st = core_.state(s, id);
        if (!st) return done(st.error());
        if (request.op == Op::kReads) {
          ChannelViews::count_reads(**st, request.reads);
          return done(Answer{});
        }
        return done(Answer{{}, {}, ChannelViews::views(**st)});
      }
    }
  });
}

void Sequencer::forward_channel(std::string node, channel_forwarding::Request request, ChannelDone done) {
  if (request.op != channel_forwarding::Op::kViews) channel_changes_forwarded.inc();
  const size_t owner = core_.owner(request.channel_id);
  core_.bus.request(node, channel_forwarding::encode_request(request),
                    [this, owner, done = std::move(done)](Result<std::string> answer) mutable {
                      auto r = answer ? channel_forwarding::decode_response(*answer)
                                      : Result<channel_forwarding::Answer>(answer.error());
                      if (!r && r.error().code == ErrorCode::kDraining)
                        r = make_error(ErrorCode::kUnavailable, "the node that sequences this channel is stopping; retry");
                      // On the channel's owning loop, as a change made here answers.
                      core_.loops.run(owner, [r = std::move(r), done = std::move(done)]() mutable { done(std::move(r)); });
                    });
}

void Sequencer::channel_info(std::string channel_id, Channels::InfoDone done) {
  on_owner(channel_id, false, [this, id = channel_id, done = std::move(done)](Shard& s, const Error* e) mutable {
    if (e) return done(*e);
    channels_.info(s, id, [this, id, done = std::move(done)](Result<ChannelInfo> r) mutable {
      std::string node = r ? core_.bus.route(id) : std::string();
      if (node.empty()) return done(std::move(r));
      forward_channel(std::move(node), {channel_forwarding::Op::kViews, {}, id, {}, {}},
                      [info = std::move(*r), done = std::move(done)](Result<channel_forwarding::Answer> a) mutable {
                        if (a) info.views = std::move(a->views);
                        done(std::move(info));
                      });
    });
  });
}

void Sequencer::set_timer(DeviceRef actor, std::string conversation_id, int64_t seconds, TimerDone done) {
  on_owner(conversation_id, false, [this, actor = std::move(actor), id = conversation_id, seconds,
                                    done = std::move(done)](Shard& s, const Error* e) mutable {
    if (e) return done(*e);
    membership_.set_timer(s, actor, id, seconds, std::move(done));
  });
}

void Sequencer::acknowledge(DeviceRef device, std::string conversation_id, Seq seq, bool read, AckDone done,
                            bool following, std::optional<store::Member> channel_row) {
  on_owner(conversation_id, true, [this, device = std::move(device), id = conversation_id, seq, read,
                                   done = std::move(done), following,
                                   channel_row = std::move(channel_row)](Shard& s, const Error* e) mutable {
    if (e) return done(*e);
    receipts_.acknowledge(s, device, id, seq, read, std::move(done), following, nullptr, std::move(channel_row));
  });
}

}  // namespace tern::services
