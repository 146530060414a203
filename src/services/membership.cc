#include "services/membership.h"

#include <algorithm>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "proto/frames.h"
#include "services/conversation_ids.h"
#include "services/presence.h"

namespace tern::services {
namespace json = boost::json;
namespace {

Counter& changes_resequenced = MetricsRegistry::global().counter(
    "tern_membership_changes_resequenced_total",
    "membership and timer changes sequenced again because another node had appended to the conversation first");

std::string user_list_json(const std::vector<std::string>& users) {
  json::array a;
  for (const auto& u : users) a.emplace_back(u);
  return json::serialize(a);
}

// SequencerCore::sequence_again for a change whose request is copied into `again`: queues
// `again(attempt + 1, error)` on the conversation's retry list when the batch was behind.
bool queued_again(ConvState& cs, Result<void>& committed, int attempt, std::function<void(int, const Error*)> again) {
  if (!SequencerCore::sequence_again(committed, attempt)) return false;
  changes_resequenced.inc();
  cs.retry.push_back([again = std::move(again), attempt](const Error* e) { again(attempt + 1, e); });
  return true;
}

std::vector<std::string> active_members(const store::Conversation& c) {
  std::vector<std::string> out;
  for (const auto& m : c.members)
    if (m.active()) out.push_back(m.user);
  return out;
}

}  // namespace

bool Membership::reads_fan_out(const store::Conversation& c) const {
  if (c.type == store::ConvType::kChannel) return true;
  if (c.type != store::ConvType::kGroup) return false;
  const auto n = static_cast<size_t>(
      std::count_if(c.members.begin(), c.members.end(), [](const store::Member& m) { return m.active(); }));
  return n >= core_.options.fanout_read_threshold;
}

void Membership::create(Shard& shard, DeviceRef creator, proto::CreateConversationRequest request, std::string id,
                        CreateDone done) {
  std::erase(request.members, creator.user);
  if (request.channel) request.members.clear();  // a channel starts with its owner only
  if (!request.group && !request.self && request.members.empty())
    return done(make_error(ErrorCode::kInvalidArgument, "a direct conversation needs another user"));
  if (request.members.size() + 1 > core_.options.limits.max_members_per_group)
    return done(make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(core_.options.limits.max_members_per_group) +
                                                          " members per group"));
  for (const auto& u : request.members) {
    auto devices = core_.directory.devices(u);
    if (!devices) return done(devices.error());
    if (devices->empty()) return done(make_error(ErrorCode::kNotFound, "no such user: " + u));
  }
  auto existing = core_.directory.conversation(id);
  if (!existing) return done(existing.error());
  if (*existing) return done(ConversationInfo{id, false});  // direct: same pair, same id

  auto conv = std::make_shared<store::Conversation>();
  conv->id = id;
  conv->type = request.channel ? store::ConvType::kChannel
               : request.group ? store::ConvType::kGroup
                               : store::ConvType::kDirect;
  conv->name = request.name;
  conv->created_ts = core_.bus.clock_ms();
  conv->members.push_back(store::Member{creator.user, 1, 0, request.group});
  for (const auto& u : request.members) conv->members.push_back(store::Member{u, 1, 0, false});
  conv->fanout_on_read = reads_fan_out(*conv);
  if (request.channel) {
    conv->is_public = request.is_public;
    conv->subscribers = 1;  // the owner
  }

  store::Batch batch;
  batch.add(store::PutConversation{*conv});
  std::vector<DeviceRef> to;
  std::shared_ptr<const std::string> frame;
  ConvState* cs = nullptr;
  if (request.group && !request.channel) {
    // A group's life starts with a system message (seq 1) that names its members. A channel
    // starts empty: its subscribers come and go without seqs.
    auto st = core_.state(shard, id);
    if (!st) return done(st.error());
    cs = *st;
    json::object sys{{"action", "create"}, {"by", creator.user}, {"name", request.name},
                     {"users", json::parse(user_list_json(active_members(*conv)))}};
    frame = system_message(batch, *conv, 1, creator, json::serialize(sys), to);
    if (frame) cs->head = 1;
  }
  ConversationPtr snapshot = conv;
  core_.directory.put_conversation(snapshot);
  if (core_.presence) core_.presence->membership_changed(nullptr, *snapshot);
  auto completion = [this, id, to, frame, done](const Result<void>& committed) {
    if (!committed) return done(committed.error());
    if (frame) core_.publish_message(to, id, 1, frame, false, mono_us(), /*system=*/true);
    else core_.bus.announce_created(id);  // the other nodes' presence learns who shares it
    spdlog::info("event=conversation_created conversation={}", id);
    done(ConversationInfo{id, true});
  };
  const bool accepted = cs ? core_.submit(*cs, std::move(batch), std::move(completion))
                           : core_.committer.submit(std::move(batch), std::move(completion));
  if (!accepted) {
    core_.directory.forget_conversation(id);
    if (core_.presence) core_.presence->conversation_dropped(*snapshot);
    if (frame) core_.drop_state(shard, id);
  }
}

std::shared_ptr<const std::string> Membership::system_message(store::Batch& batch, const store::Conversation& c,
                                                             Seq seq, const DeviceRef& actor,
                                                             const std::string& system_json,
                                                             std::vector<DeviceRef>& to) {
  proto::MessageRecord m;
  m.conversation_id = c.id;
  m.seq = seq;
  m.sender = actor.user;
  m.sender_device = actor.device;
  m.ts = core_.bus.clock_ms();
  m.body = std::string();
  m.system_json = system_json;
  auto frame = std::make_shared<const std::string>(proto::encode_message(m));
  batch.add(store::AppendMessage{c.id, seq, *frame});
  // System messages reach every member device, the acting one included.
  auto r = core_.recipients(c, seq, nullptr);
  if (r) to = std::move(*r);
  for (const auto& d : to) batch.add(store::InboxMark{d, c.id, seq});
  return frame;
}

void Membership::change(Shard& shard, const DeviceRef& actor, const std::string& conversation_id,
                        const proto::MembersRequest& request, MembersDone done, int attempt) {
  // The head first: its reload after a failed commit drops the membership snapshot too
  // (SequencerCore::state), so the checks below see the conversation as the store has it.
  ConvState* settled = core_.settled_state(
      shard, conversation_id, [&](const Error& e) { done(e); },
      [&]() -> std::function<void(const Error*)> {
        return [this, &shard, actor, conversation_id, request, done, attempt](const Error* e) {
          if (e) return done(*e);
          change(shard, actor, conversation_id, request, done, attempt);
        };
      });
  if (!settled) return;
  ConvState& cs = *settled;
  auto conv = core_.directory.conversation(conversation_id);
  if (!conv) return done(conv.error());
  if (!*conv) return done(make_error(ErrorCode::kNotFound, "unknown conversation"));
  const auto* me = find_member(**conv, actor.user);
  if (!me || !me->active()) return done(make_error(ErrorCode::kForbidden, "not a member of this conversation"));
  if ((*conv)->type != store::ConvType::kGroup)
    return done(make_error(ErrorCode::kInvalidArgument, "members of a direct conversation cannot change"));
  // (Channels are routed to Channels::change_subscribers before this.)
  if (!me->admin) return done(make_error(ErrorCode::kForbidden, "only a group admin can change its members"));

  auto next = std::make_shared<store::Conversation>(**conv);
  std::vector<std::string> to_add, to_remove;
  for (const auto& u : request.add) {
    if (is_active_member(*next, u)) continue;
    auto devices = core_.directory.devices(u);
    if (!devices) return done(devices.error());
    if (devices->empty()) return done(make_error(ErrorCode::kNotFound, "no such user: " + u));
    to_add.push_back(u);
  }
  for (const auto& u : request.remove)
    if (is_active_member(*next, u)) to_remove.push_back(u);
  if (active_members(*next).size() + to_add.size() > core_.options.limits.max_members_per_group + to_remove.size())
    return done(make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(core_.options.limits.max_members_per_group) +
                                                          " members per group"));
  if (to_add.empty() && to_remove.empty()) return done(active_members(*next));

  store::Batch batch;
  struct Out { Seq seq; std::shared_ptr<const std::string> frame; std::vector<DeviceRef> to; };
  std::vector<Out> outs;
  Seq seq = cs.head;
  if (!to_add.empty()) {
    ++seq;
    for (const auto& u : to_add) {
      if (auto* m = const_cast<store::Member*>(find_member(*next, u))) {
        *m = store::Member{u, seq, 0, false};  // re-added: a new era starts at this seq
      } else {
        next->members.push_back(store::Member{u, seq, 0, false});
      }
    }
    json::object sys{{"action", "add"}, {"by", actor.user}, {"users", json::parse(user_list_json(to_add))}};
    Out o{seq, nullptr, {}};
    o.frame = system_message(batch, *next, seq, actor, json::serialize(sys), o.to);
    outs.push_back(std::move(o));
  }
  if (!to_remove.empty()) {
    ++seq;
    for (const auto& u : to_remove) {
      auto* m = const_cast<store::Member*>(find_member(*next, u));
      m->left_seq = seq;
      m->admin = false;
    }
    // A group never loses its last admin: the longest-standing remaining member takes over.
    const bool has_admin = std::any_of(next->members.begin(), next->members.end(),
                                       [](const store::Member& m) { return m.active() && m.admin; });
    if (!has_admin) {
      store::Member* heir = nullptr;
      for (auto& m : next->members)
        if (m.active() && (!heir || m.joined_seq < heir->joined_seq)) heir = &m;
      if (heir) heir->admin = true;
    }
    json::object sys{{"action", "remove"}, {"by", actor.user}, {"users", json::parse(user_list_json(to_remove))}};
    Out o{seq, nullptr, {}};
    o.frame = system_message(batch, *next, seq, actor, json::serialize(sys), o.to);
    outs.push_back(std::move(o));
  }
  // Crossing --fanout-read-threshold either way flips the flag here and in every member's
  // index row (PutConversation rewrites them): the next send uses the other side. The change's
  // own system messages still get inbox marks, so every device learns of it either way.
  next->fanout_on_read = reads_fan_out(*next);
  batch.add(store::PutConversation{*next});
  cs.head = seq;
  core_.directory.put_conversation(next);
  if (core_.presence) core_.presence->membership_changed(conv->get(), *next);
  const auto members = active_members(*next);
  const size_t appended = outs.size();
  const bool accepted = core_.submit(
      cs, std::move(batch),
      [this, &shard, s = &cs, actor, conversation_id, request, outs = std::move(outs), members, done,
       attempt](const Result<void>& result) {
        // Behind: nothing of it was stored; it runs again on the reloaded head and members.
        Result<void> committed = result;
        if (queued_again(*s, committed, attempt, [this, &shard, actor, conversation_id, request, done](int next, const Error* e) {
              if (e) return done(*e);
              change(shard, actor, conversation_id, request, done, next);
            }))
          return;
        if (!committed) return done(committed.error());
        for (const auto& o : outs)
          core_.publish_message(o.to, conversation_id, o.seq, o.frame, false, mono_us(), /*system=*/true);
        done(members);
      });
  if (!accepted) {
    cs.head -= appended;
    core_.directory.put_conversation(*conv);
    if (core_.presence) core_.presence->membership_changed(next.get(), **conv);
  }
}

void Membership::set_timer(Shard& shard, const DeviceRef& actor, const std::string& conversation_id, int64_t seconds,
                           TimerDone done, int attempt) {
  ConvState* settled = core_.settled_state(  // first, as in change()
      shard, conversation_id, [&](const Error& e) { done(e); },
      [&]() -> std::function<void(const Error*)> {
        return [this, &shard, actor, conversation_id, seconds, done, attempt](const Error* e) {
          if (e) return done(*e);
          set_timer(shard, actor, conversation_id, seconds, done, attempt);
        };
      });
  if (!settled) return;
  ConvState& cs = *settled;
  auto conv = core_.directory.conversation(conversation_id);
  if (!conv) return done(conv.error());
  const auto* me = *conv ? find_member(**conv, actor.user) : nullptr;
  if (!me || !me->active()) return done(conversation_access_error());
  if ((*conv)->type == store::ConvType::kGroup && !me->admin)
    return done(make_error(ErrorCode::kForbidden, "only a group admin can set the timer"));
  if ((*conv)->disappear_seconds == seconds) return done(seconds);  // no change, no message

  auto next = std::make_shared<store::Conversation>(**conv);
  next->disappear_seconds = seconds;
  const Seq seq = cs.head + 1;
  store::Batch batch;
  json::object sys{{"action", "timer"}, {"by", actor.user}, {"seconds", seconds}};
  std::vector<DeviceRef> to;
  auto frame = system_message(batch, *next, seq, actor, json::serialize(sys), to);
  // A channel's record also holds its count and admins, which change without a seq (channels.h):
  // computed from an old copy (two nodes both sequencing it), the store refuses it and it is
  // sequenced again (SequencerCore::sequence_again).
  std::optional<store::Conversation> expected;
  if (next->type == store::ConvType::kChannel) expected = **conv;
  batch.add(store::PutConversation{*next, std::move(expected)});
  cs.head = seq;
  core_.directory.put_conversation(next);
  const bool accepted = core_.submit(
      cs, std::move(batch),
      [this, &shard, s = &cs, actor, conversation_id, seq, frame, to, seconds, done,
       attempt](const Result<void>& result) {
        Result<void> committed = result;
        if (queued_again(*s, committed, attempt, [this, &shard, actor, conversation_id, seconds, done](int next, const Error* e) {
              if (e) return done(*e);
              set_timer(shard, actor, conversation_id, seconds, done, next);
            }))
          return;
        if (!committed) return done(committed.error());
        core_.publish_message(to, conversation_id, seq, frame, false, mono_us(), /*system=*/true);
        done(seconds);
      });
  if (!accepted) {
    cs.head = seq - 1;
    core_.directory.put_conversation(*conv);
  }
}

}  // namespace tern::services
