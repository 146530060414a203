#include "services/sequencer_core.h"

#include <algorithm>

#include "base/metrics.h"
#include "proto/frames.h"
#include "services/blocks.h"
#include "services/live_fanout.h"
#include "services/push_notifier.h"

namespace tern::services {
namespace {

Counter& head_hints = MetricsRegistry::global().counter(
    "tern_head_hints_applied_total",
    "cached conversation heads moved forward by another node's committed message (a bus head hint)");
Gauge& states_held = MetricsRegistry::global().gauge(
    "tern_sequencer_conversation_states",
    "conversation states (head, recent senders, receipt marks) held by the loops: at most --conversation-cache per loop");

}  // namespace

SequencerCore::SequencerCore(Loops& loops_, store::Store& store_, StoreReads& reads_, GroupCommitter& committer_, Directory& directory_,
                             bus::Bus& bus_, const ServiceOptions& options_)
    : loops(loops_), store(store_), reads(reads_), committer(committer_), directory(directory_), bus(bus_), options(options_) {
  for (size_t i = 0; i < loops.size(); ++i) shards_.push_back(std::make_unique<Shard>(i, options.conversation_cache));
}

SequencerCore::~SequencerCore() {
  for (const auto& shard : shards_) states_held.add(-static_cast<int64_t>(shard->conversations.size()));
}

size_t SequencerCore::owner(const std::string& conversation_id) const {
  return std::hash<std::string>{}(conversation_id) % shards_.size();
}

Result<ConvState*> SequencerCore::state(Shard& shard, const std::string& conversation_id) {
  ConvState* cached = shard.conversations.find(conversation_id);
  if (cached && !(cached->stale && cached->in_flight == 0)) return cached;
  // Read now rather than taking the head a commit found behind (GroupCommitter::reloaded):
  // while this loop got round to it, the other node has usually appended again.
  committer.reloaded(conversation_id);
  auto head = store.head(conversation_id);
  if (!head) return head.error();
  // A membership snapshot read since a failed commit may be older than this head.
  if (cached) directory.forget_conversation(conversation_id);
  return install_head(shard, conversation_id, *head);
}

ConvState* SequencerCore::install_head(Shard& shard, const std::string& conversation_id, Seq head) {
  if (ConvState* cached = shard.conversations.find(conversation_id)) {
    // After a failed commit the store decides: the head is what it has (the failed batch
    // applied or not); what the loop remembered about later seqs is dropped.
    std::unique_ptr<ChannelState> channel = std::move(cached->channel);
    *cached = ConvState{};
    cached->channel = std::move(channel);
    cached->id = conversation_id;
    cached->head = head;
    cached->senders_from = head + 1;
    return cached;
  }
  ConvState fresh;
  fresh.id = conversation_id;
  fresh.head = head;
  fresh.senders_from = head + 1;
  const size_t before = shard.conversations.size();
  ConvState& installed = shard.conversations.emplace(conversation_id, std::move(fresh));
  states_held.add(static_cast<int64_t>(shard.conversations.size()) - static_cast<int64_t>(before));
  return &installed;
}

void SequencerCore::drop_state(Shard& shard, const std::string& conversation_id) {
  const size_t before = shard.conversations.size();
  shard.conversations.erase(conversation_id);
  states_held.add(static_cast<int64_t>(shard.conversations.size()) - static_cast<int64_t>(before));
}

bool SequencerCore::warm(Shard& shard, const std::string& conversation_id, bool receipts,
                         std::shared_ptr<const WarmHold>* seen) {
  const ConvState* cs = shard.conversations.find(conversation_id);
  if (!cs || (cs->stale && cs->in_flight == 0)) return false;
  ConversationPtr c = directory.cached_conversation(conversation_id);
  if (!c) return false;
  if (receipts && !cs->receipts_loaded && c->type != store::ConvType::kChannel) return false;
  // What the work reads from the caches that evict on their own (as warm_up reads them), kept
  // in `hold` as it is found, flat: the members' devices (the check lists them anyway) and
  // their registration ids, no map built (WarmHold::checked_devices).
  auto hold = std::make_shared<WarmHold>();
  hold->conversation_id = conversation_id;
  hold->conversation_read = true;
  hold->conversation = c;
  if (!c->fanout_on_read) {
    if (!directory.devices_cached(*c, &hold->checked_devices)) return false;
    if (registration_cached && !registration_cached(hold->checked_devices, &hold->checked_registrations))
      return false;
  }
  if (blocks && c->type == store::ConvType::kDirect && c->members.size() == 2) {
    const std::string& a = c->members[0].user;
    const std::string& b = c->members[1].user;
    for (const auto& [blocker, other] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
      const std::optional<bool> blocked = blocks->cached_blocks(*blocker, *other);
      if (!blocked) return false;
      hold->blocked[{*blocker, *other}] = *blocked;
    }
  }
  *seen = std::move(hold);
  return true;
}

void SequencerCore::warm_up(Shard& shard, const std::string& conversation_id, bool receipts,
                            std::function<void(const Error*)> work) {
  const ConvState* cs = shard.conversations.find(conversation_id);
  const bool need_head = !cs || (cs->stale && cs->in_flight == 0);
  if (need_head) {
    committer.reloaded(conversation_id);  // as state() does before its read
    // The snapshot is read after the head below, so it is not older than the head.
    if (cs) directory.forget_conversation(conversation_id);
  }
  const bool need_receipts = receipts && (need_head || !cs->receipts_loaded);
  struct Warm {
    std::optional<Seq> head;
    std::optional<std::vector<store::ReceiptState>> receipts;
    // With a fresh head for an ack: the senders of the last kWarmSenders messages, so that
    // the ack's receipt finds them in memory (Receipts::senders) instead of reading the log.
    Seq senders_from = 0;
    std::deque<std::pair<Seq, std::string>> senders;
    std::shared_ptr<WarmHold> hold = std::make_shared<WarmHold>();  // what the work reads from caches
  };
  read_then<Warm>(
      shard, conversation_id,
      [this, conversation_id, need_head, need_receipts]() -> Result<Warm> {
        // A reader thread: the store and the directory's (thread-safe) caches only.
        Warm w;
        if (need_head) {
          auto head = store.head(conversation_id);
          if (!head) return head.error();
          w.head = *head;
        }
        auto c = directory.conversation(conversation_id);
        if (!c) return c.error();
        w.hold->conversation_id = conversation_id;
        w.hold->conversation_read = true;
        w.hold->conversation = *c;
        if (!*c) return w;  // no such conversation: the work answers that itself
        if (!(*c)->fanout_on_read) {
          // Every member's device list, then every device's registration id (the stale-device
          // check of per-device bodies, sender.cc, reads these): one store call each for all
          // members (pipelined on Redis), not a round trip per member and per device.
          std::vector<std::string> users;
          for (const auto& m : (*c)->members)
            if (m.active()) users.push_back(m.user);
          if (auto p = directory.prefetch_devices(users); !p) return p.error();
          std::vector<DeviceRef> all;
          for (const auto& u : users) {
            auto devices = directory.devices(u);  // cached now (unless evicted meanwhile)
            if (!devices) return devices.error();
            for (uint32_t d : *devices) all.push_back(DeviceRef{u, d});
            w.hold->devices.emplace(u, std::move(*devices));
          }
          if (registration_prefetch)
            if (auto p = registration_prefetch(all); !p) return p.error();
          if (registration_id)
            for (const auto& d : all) {
              auto r = registration_id(d);
              if (!r) return r.error();
              w.hold->registrations.emplace(d.key(), *r);
            }
        }
        // A direct send checks both users' block lists (send_safety.h): into Blocks' cache.
        if (blocks && (*c)->type == store::ConvType::kDirect && (*c)->members.size() == 2) {
          const std::string& a = (*c)->members[0].user;
          const std::string& b = (*c)->members[1].user;
          w.hold->blocked[{a, b}] = blocks->blocks(a, b);
          w.hold->blocked[{b, a}] = blocks->blocks(b, a);
        }
        if (need_receipts && (*c)->type != store::ConvType::kChannel) {
          auto r = store.receipts(conversation_id);
          if (!r) return r.error();
          w.receipts = std::move(*r);
          if (w.head) {
            const Seq after = *w.head > kWarmSenders ? *w.head - kWarmSenders : 0;
            auto recent = store.read_messages(conversation_id, after, kWarmSenders);
            if (!recent) return recent.error();
            w.senders_from = after + 1;
            for (const auto& m : *recent)
              if (m.seq <= *w.head)
                if (auto meta = proto::stored_meta(m.frame); meta && !meta->system)
                  w.senders.emplace_back(m.seq, std::move(meta->sender));
          }
        }
        return w;
      },
      [this, &shard, conversation_id, work = std::move(work)](Result<Warm> w) {
        if (!w) return work(&w.error());
        ConvState* cs = shard.conversations.find(conversation_id);
        // Only gated work touched the conversation meanwhile, so nothing else loaded it.
        if (w->head && (!cs || (cs->stale && cs->in_flight == 0))) {
          cs = install_head(shard, conversation_id, *w->head);
          if (w->senders_from > 0) {
            cs->recent_senders = std::move(w->senders);
            cs->senders_from = w->senders_from;
          }
        }
        if (w->receipts && cs && !cs->receipts_loaded) {
          for (auto& rs : *w->receipts) cs->receipts[rs.user] = rs;
          cs->receipts_loaded = true;
        }
        // read_then's callback runs this, so the gate is there; its work uses what was read.
        std::shared_ptr<const WarmHold> hold = std::move(w->hold);
        shard.gates[conversation_id].held = hold;
        WarmHold::Scope scope(hold);
        work(nullptr);
      });
}

void SequencerCore::drain(Shard& shard, const std::string& conversation_id) {
  for (;;) {
    auto g = shard.gates.find(conversation_id);
    if (g == shard.gates.end() || g->second.reading) return;
    if (g->second.waiting.empty()) {
      forget_if_absent(shard, conversation_id, g->second.held.get());
      shard.gates.erase(g);
      return;
    }
    Shard::GatedWork next = std::move(g->second.waiting.front());
    g->second.waiting.pop_front();
    const std::shared_ptr<const WarmHold> held = g->second.held;  // the work may erase the gate
    WarmHold::Scope scope(held);
    // Earlier work may have left the conversation cold again (a failed commit made it stale).
    if (std::shared_ptr<const WarmHold> seen; warm(shard, conversation_id, next.receipts, &seen)) {
      WarmHold::Scope seen_scope(std::move(seen));
      next.run(nullptr);
    } else {
      warm_up(shard, conversation_id, next.receipts, std::move(next.run));
    }
  }
}

// The warm-up installed a state (head 0) for a conversation the store does not have: a send
// to a made-up id, or a direct one refused for an unknown user. Its work answered and created
// nothing (no snapshot put, no batch in flight), so the state is dropped, as an eviction
// would: else each made-up id would hold ~1 KB until the LRU's capacity, on the Redis path only.
void SequencerCore::forget_if_absent(Shard& shard, const std::string& conversation_id, const WarmHold* held) {
  if (!held || !held->conversation_read || held->conversation) return;
  const ConvState* cs = shard.conversations.find(conversation_id);
  if (!cs || cs->head != 0 || cs->in_flight > 0) return;
  if (directory.cached_conversation(conversation_id)) return;  // created meanwhile
  drop_state(shard, conversation_id);
}

void SequencerCore::resume(Shard& shard, const std::string& conversation_id, bool receipts,
                           std::function<void(const Error*)> work) {
  if (std::shared_ptr<const WarmHold> seen; warm(shard, conversation_id, receipts, &seen)) {
    WarmHold::Scope scope(std::move(seen));
    return work(nullptr);
  }
  // Ahead of the work that waited behind this one: it keeps its place in the order.
  shard.gates[conversation_id].waiting.push_front(Shard::GatedWork{receipts, std::move(work)});
}

void SequencerCore::run_first(Shard& shard, const std::string& conversation_id,
                              std::vector<std::function<void(const Error*)>> work) {
  if (!reads.offloaded()) {
    for (auto& f : work) f(nullptr);
    return;
  }
  Shard::Gate& gate = shard.gates[conversation_id];
  const uint64_t epoch = ++gate.epoch;
  for (auto it = work.rbegin(); it != work.rend(); ++it)
    gate.waiting.push_front(Shard::GatedWork{false, std::move(*it), /*first=*/true, epoch});
  drain(shard, conversation_id);
}

void SequencerCore::observe_head(Shard& shard, const std::string& conversation_id, Seq seq, const std::string* frame) {
  ConvState* cs = shard.conversations.find(conversation_id);
  // An append in flight: this node's own batch is already on a head that the store will
  // judge; stale: the head reloads from the store anyway. Neither may be moved from outside.
  // An ack in flight appends nothing: the hint applies. (It used to wait for every batch: on
  // an acking node, whose acks are in flight most of the time, the next hint then found a
  // gap, the senders were read from the log again, and an ack of the message the hint
  // announced was refused as beyond the head.)
  if (!cs || cs->appends_in_flight > 0 || cs->stale || seq <= cs->head) return;
  std::optional<proto::StoredMeta> meta;
  if (frame)
    if (auto m = proto::stored_meta(*frame)) meta = std::move(*m);
  move_head(*cs, seq, meta ? &*meta : nullptr);
  head_hints.inc();
}

void SequencerCore::observe_sent(Shard& shard, const std::string& conversation_id, Seq seq, const std::string& sender) {
  ConvState* cs = shard.conversations.find(conversation_id);
  if (!cs || cs->appends_in_flight > 0 || cs->stale || seq <= cs->head) return;
  proto::StoredMeta meta;
  meta.sender = sender;
  move_head(*cs, seq, &meta);
}

void SequencerCore::move_head(ConvState& state, Seq seq, const proto::StoredMeta* meta) {
  if (seq == state.head + 1 && meta) {
    // The next message: receipts keep finding its sender in memory.
    if (!meta->system) remember_sender(state, seq, meta->sender);
  } else {
    // A gap (messages this node did not hear of): their senders are read from the log.
    state.recent_senders.clear();
    state.senders_from = seq + 1;
  }
  state.head = seq;
}

void SequencerCore::remember_sender(ConvState& state, Seq seq, const std::string& user) {
  state.recent_senders.emplace_back(seq, user);
  if (state.recent_senders.size() > kRecentSenders) {
    state.senders_from = state.recent_senders.front().first + 1;
    state.recent_senders.pop_front();
  }
}

bool SequencerCore::submit(ConvState& state, store::Batch batch, GroupCommitter::Completion done,
                           const DeviceRef* source) {
  const bool appends = std::any_of(batch.ops.begin(), batch.ops.end(), [](const store::Op& op) {
    return std::holds_alternative<store::AppendMessage>(op);
  });
  ++state.in_flight;
  if (appends) ++state.appends_in_flight;
  // Pinned entries are never evicted, so the pointer stays valid until the completion,
  // which runs on this loop (the committer hands completions back to the submitting loop).
  return committer.submit(std::move(batch), [this, s = &state, appends, done = std::move(done)](const Result<void>& r) {
    --s->in_flight;
    if (appends) --s->appends_in_flight;
    if (!r && (r.error().code == ErrorCode::kUnavailable || r.error().code == ErrorCode::kExists)) {
      // The store may not have this batch (or refused it: a record it was computed from
      // changed, PutConversation::expected): the head and a membership snapshot put before the
      // commit (Directory::put_conversation) are reloaded from the store on next use.
      s->stale = true;
      directory.forget_conversation(s->id);
    }
    done(r);
    if (s->in_flight == 0 && !(s->retry.empty() && s->parked.empty())) {
      // The head reloads on the first of these (ConvState::stale): the sends to sequence
      // again in their first order, then those that arrived meanwhile.
      std::vector<std::function<void(const Error*)>> work = std::move(s->retry);
      s->retry.clear();
      for (auto& f : s->parked) work.push_back(std::move(f));
      s->parked.clear();
      const std::string id = s->id;  // the entry may be evicted while the work runs
      run_first(*shards_[owner(id)], id, std::move(work));
    }
  }, source);
}

bool SequencerCore::sequence_again(Result<void>& committed, int attempt) {
  // Behind (another node appended first), or refused because the channel record it was
  // computed from changed (a timer change of a channel: PutConversation::expected).
  if (committed || !(GroupCommitter::is_behind(committed.error()) || committed.error().code == ErrorCode::kExists))
    return false;
  if (attempt + 1 < kMaxAttempts) return true;
  committed = make_error(ErrorCode::kUnavailable, "other nodes kept appending to this conversation; retry");
  return false;
}

Result<std::vector<DeviceRef>> SequencerCore::recipients(const store::Conversation& c, Seq seq,
                                                         const DeviceRef* skip) {
  std::vector<DeviceRef> out;
  for (const auto& m : c.members) {
    // Active members, plus a member removed by exactly this message (it sees its removal).
    if (!(m.active() || m.left_seq == seq) || m.joined_seq > seq) continue;
    auto devices = directory.devices(m.user);
    if (!devices) return devices.error();
    for (uint32_t d : *devices) {
      if (skip && skip->user == m.user && skip->device == d) continue;
      out.push_back(DeviceRef{m.user, d});
    }
  }
  return out;
}

void SequencerCore::publish_conversation(const std::string& conversation_id, Seq seq,
                                         std::shared_ptr<const std::string> frame, int64_t started_us,
                                         const DeviceRef& origin, bool per_device) {
  if (!fanout) return;
  auto n = std::make_shared<bus::Notification>();
  n->kind = bus::Notification::Kind::kMessage;
  n->conversation_id = conversation_id;
  n->seq = seq;
  n->frame = std::move(frame);
  n->send_started_us = started_us;
  n->origin = origin;
  n->per_device = per_device;
  bus.publish_conversation(n);  // the sessions following it on other nodes (a no-op on one node)
  fanout->publish(std::move(n));
}

void SequencerCore::publish_message(const std::vector<DeviceRef>& to, const std::string& conversation_id, Seq seq,
                                    std::shared_ptr<const std::string> frame, bool per_device, int64_t started_us,
                                    bool system) {
  auto n = std::make_shared<bus::Notification>();
  n->kind = bus::Notification::Kind::kMessage;
  n->conversation_id = conversation_id;
  n->seq = seq;
  n->per_device = per_device;
  n->system = system;
  n->frame = std::move(frame);
  n->send_started_us = started_us;
  std::shared_ptr<const bus::Notification> shared = std::move(n);
  for (const auto& d : to)
    if (!bus.publish(d, shared) && push && !system) push->offline(d);  // issue 12: wake it

}

}  // namespace tern::services
