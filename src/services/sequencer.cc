#include "services/sequencer.h"

#include <algorithm>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "services/conversation_ids.h"
#include "services/presence.h"
#include "services/token.h"

namespace tern::services {
namespace json = boost::json;
namespace {

Counter& messages_stored_metric = MetricsRegistry::global().counter("tern_messages_stored_total", "messages durably stored");
Counter& messages_stored() { return messages_stored_metric; }
Histogram& send_to_durable_metric = MetricsRegistry::global().histogram(
      "tern_send_to_durable_seconds", "from a send frame's arrival to its durable commit", latency_buckets());
Histogram& send_to_durable() { return send_to_durable_metric; }

std::string pending_key(const DeviceRef& d, const std::string& cmid) { return d.key() + '\n' + cmid; }

constexpr size_t kRecentSenders = 1024;

std::string user_list_json(const std::vector<std::string>& users) {
  json::array a;
  for (const auto& u : users) a.emplace_back(u);
  return json::serialize(a);
}

std::vector<std::string> active_members(const store::Conversation& c) {
  std::vector<std::string> out;
  for (const auto& m : c.members)
    if (m.active()) out.push_back(m.user);
  return out;
}

}  // namespace

Sequencer::Sequencer(boost::asio::io_context& io, store::Store& store, GroupCommitter& committer,
                     Directory& directory, bus::Bus& bus, const ServiceOptions& options, size_t shards)
    : io_(io), store_(store), committer_(committer), directory_(directory), bus_(bus), options_(options) {
  for (size_t i = 0; i < std::max<size_t>(1, shards); ++i) shards_.push_back(std::make_unique<Shard>(io_));
}

std::string Sequencer::direct_conversation_id(const std::string& a, const std::string& b) {
  return keyed_direct_conversation_id(a, b);
}

Sequencer::Shard& Sequencer::shard_of(const std::string& conversation_id) {
  return *shards_[std::hash<std::string>{}(conversation_id) % shards_.size()];
}

Result<Sequencer::ConvState*> Sequencer::state(Shard& shard, const std::string& conversation_id) {
  auto it = shard.conversations.find(conversation_id);
  if (it != shard.conversations.end()) return &it->second;
  auto head = store_.head(conversation_id);
  if (!head) return head.error();
  auto& s = shard.conversations[conversation_id];
  s.head = *head;
  return &s;
}

Result<Seq> Sequencer::committed_head(const std::string& conversation_id) { return store_.head(conversation_id); }

Result<std::vector<DeviceRef>> Sequencer::recipients(const store::Conversation& c, Seq seq, const DeviceRef* skip) {
  std::vector<DeviceRef> out;
  for (const auto& m : c.members) {
    // Active members, plus a member removed by exactly this message (it sees its removal).
    if (!(m.active() || m.left_seq == seq) || m.joined_seq > seq) continue;
    auto devices = directory_.devices(m.user);
    if (!devices) return devices.error();
    for (uint32_t d : *devices) {
      if (skip && skip->user == m.user && skip->device == d) continue;
      out.push_back(DeviceRef{m.user, d});
    }
  }
  return out;
}

void Sequencer::publish_message(const std::vector<DeviceRef>& to, const std::string& conversation_id, Seq seq,
                                std::shared_ptr<const std::string> frame, bool per_device, int64_t started_us) {
  auto n = std::make_shared<bus::Notification>();
  n->kind = bus::Notification::Kind::kMessage;
  n->conversation_id = conversation_id;
  n->seq = seq;
  n->per_device = per_device;
  n->frame = std::move(frame);
  n->send_started_us = started_us;
  std::shared_ptr<const bus::Notification> shared = std::move(n);
  for (const auto& d : to) bus_.publish(d, shared);
}

// ---------------------------------------------------------------- send

void Sequencer::send(DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done) {
  auto& shard = shard_of(frame.conversation_id);
  boost::asio::post(shard.strand, [this, &shard, device = std::move(device), frame = std::move(frame), started_us,
                                   done = std::move(done)]() mutable {
    do_send(shard, std::move(device), std::move(frame), started_us, std::move(done));
  });
}

void Sequencer::do_send(Shard& shard, DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done) {
  const std::string& conv_id = frame.conversation_id;
  auto conv = directory_.conversation(conv_id);
  if (!conv) return done(conv.error());
  if (!*conv) return done(conversation_access_error());
  const store::Conversation& c = **conv;
  if (!is_active_member(c, device.user)) return done(make_error(ErrorCode::kForbidden, "not a member of this conversation"));

  // Idempotency: a retry while the first is in flight waits for it; after, the store answers.
  const std::string key = pending_key(device, frame.client_msg_id);
  if (auto p = shard.pending.find(key); p != shard.pending.end()) {
    p->second.waiters.push_back(std::move(done));
    return;
  }
  auto seen = store_.idempotency(device, frame.client_msg_id, now_ms());
  if (!seen) return done(seen.error());
  if (*seen) {
    return done(SentInfo{frame.client_msg_id, (*seen)->conversation_id, (*seen)->seq, (*seen)->ts});
  }

  auto st = state(shard, conv_id);
  if (!st) return done(st.error());
  ConvState& cs = **st;
  if (frame.reply_to && *frame.reply_to > cs.head)
    return done(make_error(ErrorCode::kInvalidArgument, "reply_to refers to a seq that does not exist yet"));

  const Seq seq = cs.head + 1;
  auto to = recipients(c, seq, &device);
  if (!to) return done(to.error());

  if (!frame.bodies.empty()) {
    // Per-device payloads must address exactly the current recipient devices.
    std::set<std::string> expected, given;
    for (const auto& d : *to) expected.insert(d.key());
    for (const auto& [k, _] : frame.bodies) given.insert(k);
    if (expected != given) {
      json::array missing, extra;
      for (const auto& k : expected)
        if (!given.count(k)) missing.emplace_back(k);
      for (const auto& k : given)
        if (!expected.count(k)) extra.emplace_back(k);
      Error e = make_error(ErrorCode::kDeviceMismatch, "bodies do not match the member devices");
      e.detail_json = json::serialize(json::object{{"missing", missing}, {"extra", extra}});
      return done(std::move(e));
    }
  }

  const int64_t ts = now_ms();
  proto::MessageRecord m;
  m.conversation_id = conv_id;
  m.seq = seq;
  m.sender = device.user;
  m.sender_device = device.device;
  m.ts = ts;
  m.body = std::move(frame.body);
  m.bodies = std::move(frame.bodies);
  m.reply_to = frame.reply_to;
  if (frame.ttl_seconds) m.expires_at = ts + *frame.ttl_seconds * 1000;
  const bool per_device = !m.bodies.empty();
  auto stored = std::make_shared<const std::string>(proto::encode_message(m));

  store::Batch batch;
  batch.ops.reserve(2 + to->size());
  batch.add(store::AppendMessage{conv_id, seq, *stored});
  batch.add(store::PutIdempotency{device, frame.client_msg_id,
                                  store::IdempotencyRecord{conv_id, seq, ts, ts + options_.idempotency_ttl_ms}});
  for (const auto& d : *to) batch.add(store::InboxMark{d, conv_id, seq});

  SentInfo info{frame.client_msg_id, conv_id, seq, ts};
  shard.pending.emplace(key, PendingSend{info, {}});
  cs.head = seq;
  cs.recent_senders.emplace_back(seq, device.user);
  if (cs.recent_senders.size() > kRecentSenders) cs.recent_senders.pop_front();
  const bool accepted = committer_.submit(
      std::move(batch), [this, &shard, key, info, to = std::move(*to), stored, per_device, started_us,
                         done = std::move(done)](const Result<void>& committed) mutable {
        if (committed) {
          messages_stored().inc();
          send_to_durable().observe(static_cast<double>(mono_us() - started_us) / 1e6);
          done(info);
          publish_message(to, info.conversation_id, info.seq, stored, per_device, started_us);
        } else {
          done(committed.error());
        }
        boost::asio::post(shard.strand, [&shard, key, committed] {
          auto p = shard.pending.find(key);
          if (p == shard.pending.end()) return;
          auto waiters = std::move(p->second.waiters);
          const SentInfo info = p->second.info;
          shard.pending.erase(p);
          for (auto& w : waiters) committed ? w(info) : w(committed.error());
        });
      });
  // Rejected (queue full or draining): nothing was queued, so the seq is still free. The
  // completion already answered and will drop the pending entry.
  if (!accepted) cs.head = seq - 1;
}

// ---------------------------------------------------------------- conversations

void Sequencer::create_conversation(DeviceRef creator, proto::CreateConversationRequest request, CreateDone done) {
  std::string id = request.group ? "g-" + random_hex(12)
                                 : direct_conversation_id(creator.user, request.members.front());
  auto& shard = shard_of(id);
  boost::asio::post(shard.strand, [this, &shard, creator = std::move(creator), request = std::move(request),
                                   id = std::move(id), done = std::move(done)]() mutable {
    do_create(shard, std::move(creator), std::move(request), std::move(id), std::move(done));
  });
}

void Sequencer::do_create(Shard& shard, DeviceRef creator, proto::CreateConversationRequest request, std::string id,
                          CreateDone done) {
  std::erase(request.members, creator.user);
  if (!request.group && request.members.empty())
    return done(make_error(ErrorCode::kInvalidArgument, "a direct conversation needs another user"));
  if (request.members.size() + 1 > options_.limits.max_members_per_group)
    return done(make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(options_.limits.max_members_per_group) +
                                                          " members per group"));
  for (const auto& u : request.members) {
    auto devices = directory_.devices(u);
    if (!devices) return done(devices.error());
    if (devices->empty()) return done(make_error(ErrorCode::kNotFound, "no such user: " + u));
  }
  auto existing = directory_.conversation(id);
  if (!existing) return done(existing.error());
  if (*existing) return done(ConversationInfo{id, false});  // direct: same pair, same id

  auto conv = std::make_shared<store::Conversation>();
  conv->id = id;
  conv->type = request.group ? store::ConvType::kGroup : store::ConvType::kDirect;
  conv->name = request.name;
  conv->created_ts = now_ms();
  conv->members.push_back(store::Member{creator.user, 1, 0, request.group});
  for (const auto& u : request.members) conv->members.push_back(store::Member{u, 1, 0, false});

  store::Batch batch;
  batch.add(store::PutConversation{*conv});
  std::vector<DeviceRef> to;
  std::shared_ptr<const std::string> frame;
  if (request.group) {
    // A group's life starts with a system message (seq 1) that names its members.
    auto st = state(shard, id);
    if (!st) return done(st.error());
    json::object sys{{"action", "create"}, {"by", creator.user}, {"name", request.name},
                     {"users", json::parse(user_list_json(active_members(*conv)))}};
    frame = system_message(batch, *conv, 1, creator, json::serialize(sys), to);
    if (frame) (*st)->head = 1;
  }
  ConversationPtr snapshot = conv;
  directory_.put_conversation(snapshot);
  if (presence_) presence_->membership_changed(nullptr, *snapshot);
  const bool accepted = committer_.submit(std::move(batch), [this, id, to, frame, done](const Result<void>& committed) {
    if (!committed) return done(committed.error());
    if (frame) publish_message(to, id, 1, frame, false, mono_us());
    spdlog::info("event=conversation_created conversation={}", id);
    done(ConversationInfo{id, true});
  });
  if (!accepted) {
    directory_.forget_conversation(id);
    if (presence_) presence_->conversation_dropped(*snapshot);
    if (frame) shard.conversations.erase(id);
  }
}

std::shared_ptr<const std::string> Sequencer::system_message(store::Batch& batch, const store::Conversation& c,
                                                             Seq seq, const DeviceRef& actor,
                                                             const std::string& system_json,
                                                             std::vector<DeviceRef>& to) {
  proto::MessageRecord m;
  m.conversation_id = c.id;
  m.seq = seq;
  m.sender = actor.user;
  m.sender_device = actor.device;
  m.ts = now_ms();
  m.body = std::string();
  m.system_json = system_json;
  auto frame = std::make_shared<const std::string>(proto::encode_message(m));
  batch.add(store::AppendMessage{c.id, seq, *frame});
  // System messages reach every member device, the acting one included.
  auto r = recipients(c, seq, nullptr);
  if (r) to = std::move(*r);
  for (const auto& d : to) batch.add(store::InboxMark{d, c.id, seq});
  return frame;
}

void Sequencer::change_members(DeviceRef actor, std::string conversation_id, proto::MembersRequest request,
                               MembersDone done) {
  auto& shard = shard_of(conversation_id);
  boost::asio::post(shard.strand, [this, &shard, actor = std::move(actor), id = std::move(conversation_id),
                                   request = std::move(request), done = std::move(done)]() mutable {
    do_change_members(shard, actor, id, request, std::move(done));
  });
}

void Sequencer::do_change_members(Shard& shard, DeviceRef actor, const std::string& conversation_id,
                                  const proto::MembersRequest& request, MembersDone done) {
  auto conv = directory_.conversation(conversation_id);
  if (!conv) return done(conv.error());
  if (!*conv) return done(make_error(ErrorCode::kNotFound, "unknown conversation"));
  const auto* me = find_member(**conv, actor.user);
  if (!me || !me->active()) return done(make_error(ErrorCode::kForbidden, "not a member of this conversation"));
  if ((*conv)->type != store::ConvType::kGroup)
    return done(make_error(ErrorCode::kInvalidArgument, "members of a direct conversation cannot change"));
  if (!me->admin) return done(make_error(ErrorCode::kForbidden, "only a group admin can change its members"));

  auto next = std::make_shared<store::Conversation>(**conv);
  std::vector<std::string> to_add, to_remove;
  for (const auto& u : request.add) {
    if (is_active_member(*next, u)) continue;
    auto devices = directory_.devices(u);
    if (!devices) return done(devices.error());
    if (devices->empty()) return done(make_error(ErrorCode::kNotFound, "no such user: " + u));
    to_add.push_back(u);
  }
  for (const auto& u : request.remove)
    if (is_active_member(*next, u)) to_remove.push_back(u);
  if (active_members(*next).size() + to_add.size() > options_.limits.max_members_per_group + to_remove.size())
    return done(make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(options_.limits.max_members_per_group) +
                                                          " members per group"));
  if (to_add.empty() && to_remove.empty()) return done(active_members(*next));

  auto st = state(shard, conversation_id);
  if (!st) return done(st.error());
  ConvState& cs = **st;
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
  batch.add(store::PutConversation{*next});
  cs.head = seq;
  directory_.put_conversation(next);
  if (presence_) presence_->membership_changed(conv->get(), *next);
  const auto members = active_members(*next);
  const size_t appended = outs.size();
  const bool accepted = committer_.submit(
      std::move(batch), [this, conversation_id, outs = std::move(outs), members, done](const Result<void>& committed) {
        if (!committed) return done(committed.error());
        for (const auto& o : outs) publish_message(o.to, conversation_id, o.seq, o.frame, false, mono_us());
        done(members);
      });
  if (!accepted) {
    cs.head -= appended;
    directory_.put_conversation(*conv);
    if (presence_) presence_->membership_changed(next.get(), **conv);
  }
}

// ---------------------------------------------------------------- acks and receipts

Seq Sequencer::pending_ack(const DeviceRef& device, const std::string& conversation_id) {
  std::lock_guard lock(acks_mu_);
  auto it = pending_acks_.find(device.key() + '\n' + conversation_id);
  return it == pending_acks_.end() ? 0 : it->second;
}

void Sequencer::acknowledge(DeviceRef device, std::string conversation_id, Seq seq, bool read, AckDone done) {
  auto& shard = shard_of(conversation_id);
  boost::asio::post(shard.strand, [this, &shard, device = std::move(device), id = std::move(conversation_id), seq, read,
                                   done = std::move(done)]() mutable {
    do_acknowledge(shard, device, id, seq, read, std::move(done));
  });
}

void Sequencer::do_acknowledge(Shard& shard, DeviceRef device, const std::string& conversation_id, Seq seq, bool read,
                               AckDone done) {
  auto conv = directory_.conversation(conversation_id);
  if (!conv) return done(conv.error());
  if (!*conv) return done(conversation_access_error());
  const auto* me = find_member(**conv, device.user);
  if (!me) return done(make_error(ErrorCode::kForbidden, "not a member of this conversation"));
  auto st = state(shard, conversation_id);
  if (!st) return done(st.error());
  ConvState& cs = **st;
  if (seq > cs.head) return done(make_error(ErrorCode::kInvalidArgument, "seq is beyond the conversation's head"));
  if (!me->active()) seq = std::min(seq, me->left_seq);  // a removed member's view ends at its removal
  const std::string ack_key = device.key() + '\n' + conversation_id;
  {
    std::lock_guard lock(acks_mu_);
    auto& pending = pending_acks_[ack_key];
    pending = std::max(pending, seq);
  }

  if (!cs.receipts_loaded) {
    auto r = store_.receipts(conversation_id);
    if (!r) return done(r.error());
    for (auto& rs : *r) cs.receipts[rs.user] = rs;
    cs.receipts_loaded = true;
  }
  auto& rs = cs.receipts[device.user];
  rs.user = device.user;
  const bool delivered_up = seq > rs.delivered;
  const bool read_up = read && seq > rs.read;
  // The senders of the messages this receipt newly covers: (previous mark, seq].
  const Seq covered_from = std::min(delivered_up ? rs.delivered : seq, read_up ? rs.read : seq);
  std::set<std::string> senders;
  for (auto it = cs.recent_senders.rbegin(); it != cs.recent_senders.rend() && it->first > covered_from; ++it)
    if (it->first <= seq && it->second != device.user) senders.insert(it->second);
  // Older than what the shard remembers (e.g. sent before a restart): ask the log, bounded.
  const Seq remembered_from = cs.recent_senders.empty() ? cs.head + 1 : cs.recent_senders.front().first;
  if ((delivered_up || read_up) && covered_from + 1 < remembered_from) {
    const Seq to = std::min(seq, remembered_from - 1);
    const Seq from = to - covered_from > kRecentSenders ? to - kRecentSenders : covered_from;
    if (auto older = store_.read_messages(conversation_id, from, to - from)) {
      for (const auto& m : *older)
        if (auto meta = proto::stored_meta(m.frame); meta && !meta->system && meta->sender != device.user)
          senders.insert(meta->sender);
    }
  }
  if (delivered_up) rs.delivered = seq;
  if (read_up) rs.read = seq;

  store::Batch batch;
  batch.add(store::SetCursor{device, conversation_id, seq});
  batch.add(store::InboxClear{device, conversation_id, seq});
  std::vector<std::shared_ptr<const bus::Notification>> receipts;
  if (delivered_up || read_up) {
    batch.add(store::SetReceipt{conversation_id, device.user, rs.delivered, rs.read});
    auto make = [&](const char* status) {
      auto n = std::make_shared<bus::Notification>();
      n->kind = bus::Notification::Kind::kFrame;
      n->frame = std::make_shared<const std::string>(proto::encode_receipt(conversation_id, device.user, status, seq));
      receipts.push_back(std::move(n));
    };
    if (delivered_up) make("delivered");
    if (read_up) make("read");
  }
  std::vector<std::string> others;
  if (!receipts.empty())
    for (const auto& u : senders)
      if (is_active_member(**conv, u)) others.push_back(u);
  const bool accepted = committer_.submit(std::move(batch), [this, receipts, others, done, ack_key,
                                                              seq](const Result<void>& committed) {
    {
      std::lock_guard lock(acks_mu_);
      auto it = pending_acks_.find(ack_key);
      if (it != pending_acks_.end() && it->second <= seq) pending_acks_.erase(it);
    }
    if (committed)
      for (const auto& u : others)
        for (const auto& n : receipts) bus_.publish_user(u, n);
    done(committed);
  });
  if (!accepted) {  // the advanced receipt state was not stored: reload it next time
    cs.receipts.clear();
    cs.receipts_loaded = false;
  }
}

}  // namespace tern::services
