#include "services/channels.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "base/metrics.h"
#include "services/channel_views.h"

namespace tern::services {

thread_local const Channels::Prefetched* Channels::prefetched_ = nullptr;
namespace {

Counter& joins = MetricsRegistry::global().counter("tern_channel_subscriptions_total", "channel subscriptions made");

Error unknown_channel() { return make_error(ErrorCode::kNotFound, "unknown channel"); }

bool is_owner(const store::Conversation& c, const std::string& user) {
  return !c.members.empty() && c.members.front().user == user;
}

bool is_admin(const store::Conversation& c, const std::string& user) {
  const auto* m = find_member(c, user);
  return m && m->active() && m->admin;
}

std::shared_ptr<const bus::Notification> membership_notice(const std::string& channel_id) {
  auto n = std::make_shared<bus::Notification>();
  n->kind = bus::Notification::Kind::kMembership;
  n->conversation_id = channel_id;
  return n;
}

}  // namespace

bool Channels::Change::subscribing(const std::string& u) const {
  return std::any_of(subscribe.begin(), subscribe.end(), [&](const auto& p) { return p.first == u; });
}

Result<ConversationPtr> Channels::channel(const std::string& channel_id) {
  auto conv = core_.directory.conversation(channel_id);
  if (!conv) return conv.error();
  if (!*conv || (*conv)->type != store::ConvType::kChannel) return unknown_channel();
  return *conv;
}

Error Channels::refusal(const store::Conversation& c, const std::string& user, const char* why) {
  // A subscriber learns it may not; anyone else learns nothing about the channel.
  if (prefetched_ && prefetched_->channel_id == c.id)
    if (auto it = prefetched_->rows.find(user); it != prefetched_->rows.end())
      return it->second ? make_error(ErrorCode::kForbidden, why) : unknown_channel();
  auto m = core_.directory.member(c, user);
  if (!m) return m.error();
  if (!*m) return unknown_channel();
  return make_error(ErrorCode::kForbidden, why);
}

std::optional<Error> Channels::unknown_user(const std::string& user) {
  if (prefetched_)
    if (auto it = prefetched_->devices.find(user); it != prefetched_->devices.end()) {
      if (it->second.empty()) return make_error(ErrorCode::kNotFound, "no such user: " + user);
      return std::nullopt;
    }
  auto devices = core_.directory.devices(user);
  if (!devices) return devices.error();
  if (devices->empty()) return make_error(ErrorCode::kNotFound, "no such user: " + user);
  return std::nullopt;
}

Result<Seq> Channels::subscribed(ConvState& cs, const store::Conversation& c, const std::string& user) {
  if (cs.channel) {
    auto it = cs.channel->pending_subscriptions.find(user);
    if (it != cs.channel->pending_subscriptions.end()) return it->second;
  }
  if (prefetched_ && prefetched_->channel_id == c.id)
    if (auto it = prefetched_->rows.find(user); it != prefetched_->rows.end())
      return it->second && it->second->active() ? it->second->joined_seq : Seq{0};
  auto m = core_.directory.member(c, user);
  if (!m) return m.error();
  return *m && (*m)->active() ? (*m)->joined_seq : Seq{0};
}

void Channels::apply(ConvState& cs, ConversationPtr before, std::shared_ptr<store::Conversation> next, Change change,
                     std::function<void(Result<void>)> done) {
  const std::string id = next->id;
  store::Batch batch;
  // The snapshot first: it drops the index rows of admins no longer listed; the subscription
  // rows after it (a later op on the same key wins) keep a demoted admin subscribed. The
  // change counts from `before`: a store shared by several nodes refuses it with `exists` if
  // the record is another by then (Sequencer::change_channel makes it again).
  batch.add(store::PutConversation{*next, *before});
  auto& pending = cs.channel_state().pending_subscriptions;
  std::vector<std::pair<std::string, Seq>> marks;
  for (const auto& [u, from] : change.subscribe) {
    const Seq joined = from ? from : cs.head + 1;
    batch.add(store::PutSubscription{u, store::UserConversation{id, joined, 0, true}});
    marks.emplace_back(u, joined);
  }
  for (const auto& u : change.unsubscribe) {
    batch.add(store::DeleteSubscription{u, id});
    marks.emplace_back(u, 0);
  }
  for (const auto& [u, joined] : marks) pending[u] = joined;
  core_.directory.put_conversation(next);
  auto finish = [this, s = &cs, id, marks, done = std::move(done)](const Result<void>& committed) {
    auto& p = s->channel_state().pending_subscriptions;
    for (const auto& [u, joined] : marks)
      if (auto it = p.find(u); it != p.end() && it->second == joined) p.erase(it);
    if (!committed) {
      core_.directory.forget_conversation(id);  // read again from the store
      if (committed.error().code == ErrorCode::kExists) {
        // Another node changed the channel first (PutConversation::expected). The caller
        // makes the change again (Sequencer::change_channel), but only once none of this
        // node's changes of the channel is in flight: each of them counted from this one, so
        // made again now it would count from the stored record without them, and be refused.
        s->retry.push_back([done, error = committed.error()](const Error*) { done(error); });
        return;
      }
      return done(committed.error());
    }
    auto notice = membership_notice(id);
    for (const auto& [u, _] : marks) core_.bus.publish_user(u, notice);
    // No system message tells the other nodes (a channel change takes no seq): their snapshot,
    // with the old count and admins, would answer and be written back until evicted.
    core_.bus.announce_created(id);
    done({});
  };
  if (!core_.submit(cs, std::move(batch), std::move(finish))) core_.directory.put_conversation(std::move(before));
}

void Channels::settle(ConvState& cs, ConversationPtr conv, std::function<void(Result<void>)> done) {
  if (!core_.store.finishes_changes_later()) return done({});
  auto same = std::make_shared<store::Conversation>(*conv);
  apply(cs, std::move(conv), std::move(same), Change{}, std::move(done));
}

Result<size_t> Channels::count_following(store::Store& store, const std::string& user) {
  auto rows = store.user_conversations(user);
  if (!rows) return rows.error();
  return static_cast<size_t>(std::count_if(
      rows->begin(), rows->end(), [](const store::UserConversation& r) { return r.fanout_on_read && !r.left_seq; }));
}

bool Channels::is_pending(const ConvState& cs, const std::string& user) {
  return cs.channel && cs.channel->pending_subscriptions.count(user) != 0;
}

void Channels::join(Shard& shard, const DeviceRef& actor, const std::string& channel_id, JoinDone done) {
  if (prefetch(
          shard, channel_id, actor, {}, true, [this, &shard, actor, channel_id, done] { join(shard, actor, channel_id, done); },
          [done](const Error& e) { done(e); }))
    return;
  auto conv = channel(channel_id);
  if (!conv) return done(conv.error());
  const store::Conversation& c = **conv;
  auto st = core_.state(shard, channel_id);
  if (!st) return done(st.error());
  ConvState& cs = **st;
  auto joined = subscribed(cs, c, actor.user);
  if (!joined) return done(joined.error());
  if (*joined) {
    const SubscriptionInfo info{*joined, c.subscribers};
    return settle(cs, *conv, [info, done](Result<void> r) { r ? done(info) : done(r.error()); });
  }
  if (!c.is_public) return done(unknown_channel());  // private: only an admin's add
  // Every read-side conversation costs its user a head read at each connect: the number a
  // user may follow is capped like the conversations it may create.
  const bool counted = prefetched_ && prefetched_->channel_id == channel_id && prefetched_->following;
  auto following = counted ? Result<size_t>(*prefetched_->following) : count_following(core_.store, actor.user);
  if (!following) return done(following.error());
  if (*following >= core_.options.max_conversations_per_user)
    return done(make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(core_.options.max_conversations_per_user) +
                                                          " channels and large groups per user"));
  if (c.subscribers >= core_.options.max_subscribers)
    return done(make_error(ErrorCode::kLimitExceeded,
                           "at most " + std::to_string(core_.options.max_subscribers) + " subscribers per channel"));
  auto next = std::make_shared<store::Conversation>(c);
  ++next->subscribers;
  const SubscriptionInfo info{cs.head + 1, next->subscribers};
  apply(cs, *conv, next, Change{{{actor.user, 0}}, {}}, [info, done](Result<void> r) {
    if (!r) return done(r.error());
    joins.inc();
    done(info);
  });
}

void Channels::leave(Shard& shard, const DeviceRef& actor, const std::string& channel_id, CountDone done) {
  if (prefetch(
          shard, channel_id, actor, {}, false, [this, &shard, actor, channel_id, done] { leave(shard, actor, channel_id, done); },
          [done](const Error& e) { done(e); }))
    return;
  auto conv = channel(channel_id);
  if (!conv) return done(conv.error());
  const store::Conversation& c = **conv;
  if (is_owner(c, actor.user))
    return done(make_error(ErrorCode::kInvalidArgument, "the owner cannot leave a channel"));
  auto st = core_.state(shard, channel_id);
  if (!st) return done(st.error());
  ConvState& cs = **st;
  auto joined = subscribed(cs, c, actor.user);
  if (!joined) return done(joined.error());
  if (!*joined)  // not subscribed: nothing changes
    return settle(cs, *conv, [count = c.subscribers, done](Result<void> r) { r ? done(count) : done(r.error()); });
  auto next = std::make_shared<store::Conversation>(c);
  next->subscribers = next->subscribers > 0 ? next->subscribers - 1 : 0;
  std::erase_if(next->members, [&](const store::Member& m) { return m.user == actor.user; });
  const uint64_t count = next->subscribers;
  apply(cs, *conv, next, Change{{}, {actor.user}}, [count, done](Result<void> r) {
    r ? done(count) : done(r.error());
  });
}

Result<Channels::Edit> Channels::begin_edit(Shard& shard, const DeviceRef& actor, const std::string& channel_id,
                                            bool owner_only, const char* why) {
  auto conv = channel(channel_id);
  if (!conv) return conv.error();
  const store::Conversation& c = **conv;
  if (!(owner_only ? is_owner(c, actor.user) : is_admin(c, actor.user))) return refusal(c, actor.user, why);
  auto st = core_.state(shard, channel_id);
  if (!st) return st.error();
  return Edit{*conv, *st, std::make_shared<store::Conversation>(c)};
}

// Not on this loop: a reader thread reads the rows, then `again` runs here with them. A user
// with no change pending on this loop has every earlier change committed, so the read sees
// it; one with a pending change is answered by its mark (subscribed()), not read. The
// channel's later work waits meanwhile (read_then), so no new mark appears.
bool Channels::prefetch(Shard& shard, const std::string& channel_id, const DeviceRef& actor,
                        const proto::MembersRequest& request, bool count, std::function<void()> again,
                        std::function<void(const Error&)> fail) {
  if (!core_.reads.offloaded()) return false;
  const bool rerun = prefetched_ && prefetched_->channel_id == channel_id;
  auto conv = channel(channel_id);
  auto st = conv ? core_.state(shard, channel_id) : Result<ConvState*>(conv.error());
  if (!st) return false;  // answered by the work itself
  std::vector<std::string> users;
  auto want = [&](const std::string& u) {
    if (!is_pending(**st, u) && !(rerun && prefetched_->rows.count(u)) &&
        std::find(users.begin(), users.end(), u) == users.end())
      users.push_back(u);
  };
  want(actor.user);
  for (const auto* list : {&request.add, &request.remove})
    for (const auto& u : *list) want(u);
  if (rerun && users.empty()) return false;
  Prefetched base;  // a re-run keeps what the earlier read found
  if (rerun) base = *prefetched_;
  core_.read_then<Prefetched>(
      shard, channel_id,
      [core = &core_, snap = *conv, users = std::move(users), actor = actor.user, count,
       base = std::move(base)]() -> Result<Prefetched> {
        Prefetched out = base;
        out.channel_id = snap->id;
        for (const auto& u : users) {
          auto m = core->directory.member(*snap, u);
          if (!m) return m.error();
          if (count && u == actor && !(*m && (*m)->active()) && snap->is_public) {
            auto n = count_following(core->store, u);
            if (!n) return n.error();
            out.following = *n;
          }
          out.rows[u] = std::move(*m);
          if (u != actor)
            if (auto d = core->directory.devices(u)) out.devices[u] = std::move(*d);  // for unknown_user()
        }
        return out;
      },
      [this, again = std::move(again), fail = std::move(fail)](Result<Prefetched> read) {
        if (!read) return fail(read.error());
        const Prefetched* outer = prefetched_;  // none, unless another channel's work runs this
        prefetched_ = &*read;
        again();
        prefetched_ = outer;
      });
  return true;
}

void Channels::change_subscribers(Shard& shard, const DeviceRef& actor, const std::string& channel_id,
                                  const proto::MembersRequest& request, CountDone done) {
  if (prefetch(
          shard, channel_id, actor, request, false,
          [this, &shard, actor, channel_id, request, done] { change_subscribers(shard, actor, channel_id, request, done); },
          [done](const Error& e) { done(e); }))
    return;
  auto edit = begin_edit(shard, actor, channel_id, false, "only a channel admin can change its subscribers");
  if (!edit) return done(edit.error());
  const store::Conversation& c = *edit->conv;
  ConvState& cs = *edit->cs;
  auto& next = edit->next;
  Change change;
  for (const auto& u : request.add) {
    auto joined = subscribed(cs, c, u);
    if (!joined) return done(joined.error());
    if (*joined || change.subscribing(u)) continue;
    if (auto e = unknown_user(u)) return done(std::move(*e));
    change.subscribe.emplace_back(u, 0);
  }
  for (const auto& u : request.remove) {
    if (is_owner(c, u)) return done(make_error(ErrorCode::kInvalidArgument, "the owner cannot be removed"));
    if (is_admin(c, u) && !is_owner(c, actor.user))
      return done(make_error(ErrorCode::kForbidden, "only the owner can remove an admin"));
    auto joined = subscribed(cs, c, u);
    if (!joined) return done(joined.error());
    if (!*joined || std::count(change.unsubscribe.begin(), change.unsubscribe.end(), u)) continue;
    change.unsubscribe.push_back(u);
    std::erase_if(next->members, [&](const store::Member& m) { return m.user == u; });
  }
  if (next->subscribers + change.subscribe.size() > core_.options.max_subscribers + change.unsubscribe.size())
    return done(make_error(ErrorCode::kLimitExceeded,
                           "at most " + std::to_string(core_.options.max_subscribers) + " subscribers per channel"));
  next->subscribers = next->subscribers + change.subscribe.size() - change.unsubscribe.size();
  if (change.subscribe.empty() && change.unsubscribe.empty()) return done(c.subscribers);
  const uint64_t count = next->subscribers;
  apply(cs, edit->conv, next, std::move(change), [count, done](Result<void> r) { r ? done(count) : done(r.error()); });
}

void Channels::change_admins(Shard& shard, const DeviceRef& actor, const std::string& channel_id,
                             const proto::MembersRequest& request, AdminsDone done) {
  if (prefetch(
          shard, channel_id, actor, request, false,
          [this, &shard, actor, channel_id, request, done] { change_admins(shard, actor, channel_id, request, done); },
          [done](const Error& e) { done(e); }))
    return;
  auto edit = begin_edit(shard, actor, channel_id, true, "only the channel's owner can change its admins");
  if (!edit) return done(edit.error());
  const store::Conversation& c = *edit->conv;
  ConvState& cs = *edit->cs;
  auto& next = edit->next;
  Change change;
  for (const auto& u : request.add) {
    if (find_member(*next, u) || change.subscribing(u)) continue;
    if (auto e = unknown_user(u)) return done(std::move(*e));
    auto joined = subscribed(cs, c, u);
    if (!joined) return done(joined.error());
    if (!*joined) {
      if (next->subscribers >= core_.options.max_subscribers)
        return done(make_error(ErrorCode::kLimitExceeded, "the channel is full"));
      ++next->subscribers;
    }
    const Seq from = *joined ? *joined : cs.head + 1;
    next->members.push_back(store::Member{u, from, 0, true});
    change.subscribe.emplace_back(u, from);  // its row, with the list's joined_seq
  }
  for (const auto& u : request.remove) {
    if (is_owner(c, u)) return done(make_error(ErrorCode::kInvalidArgument, "the owner stays an admin"));
    const auto* m = find_member(*next, u);
    if (!m || change.subscribing(u)) continue;
    // Dropped from the list, still a subscriber: its row is written again after the snapshot.
    change.subscribe.emplace_back(u, m->joined_seq);
    std::erase_if(next->members, [&](const store::Member& x) { return x.user == u; });
  }
  std::vector<std::string> admins;
  for (const auto& m : next->members) admins.push_back(m.user);
  if (change.subscribe.empty()) return done(admins);
  apply(cs, edit->conv, next, std::move(change), [admins, done](Result<void> r) { r ? done(admins) : done(r.error()); });
}

void Channels::info(Shard& shard, const std::string& channel_id, InfoDone done) {
  auto conv = channel(channel_id);
  if (!conv) return done(conv.error());
  auto st = core_.state(shard, channel_id);
  if (!st) return done(st.error());
  ConvState& cs = **st;
  ChannelInfo out{*conv, cs.head, {}};
  out.views = ChannelViews::views(cs);
  done(std::move(out));
}

}  // namespace tern::services
