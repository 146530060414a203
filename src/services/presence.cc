#include "services/presence.h"

#include <limits>

#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "base/thread_name.h"
#include "proto/frames.h"
#include "services/conversation_ids.h"

namespace tern::services {
namespace {

constexpr int64_t kRecentMs = 5000;      // membership changes remembered for loads in progress
constexpr size_t kRecentMax = 4096;
constexpr size_t kTypingPruneAt = 4096;  // typing entries before stale ones are swept
// Users whose last presence order is kept: an evicted user's next change passes whatever its
// order (as after a restart), so only a change overtaken within these many users' changes is
// not caught.
constexpr size_t kOrdersKept = 100000;
constexpr int64_t kNever = std::numeric_limits<int64_t>::min() / 2;
Counter& presence_overtaken = MetricsRegistry::global().counter(
    "tern_presence_overtaken_total", "presence changes dropped because a later one of the same user was passed on first");
Counter& typing_dropped = MetricsRegistry::global().counter(
    "tern_typing_dropped_total", "typing frames dropped on a cache miss because Presence's loader queue was full");

// `seq`: a presence change's order (bus.h Counted; a frame's seq is not sent to clients).
std::shared_ptr<const bus::Notification> frame_notification(std::string frame, bool droppable, uint64_t seq = 0) {
  auto n = std::make_shared<bus::Notification>();
  n->seq = seq;
  n->kind = bus::Notification::Kind::kFrame;
  n->droppable = droppable;
  n->frame = std::make_shared<const std::string>(std::move(frame));
  return n;
}

size_t active_count(const store::Conversation& c) {
  size_t n = 0;
  for (const auto& m : c.members) n += m.active() ? 1 : 0;
  return n;
}

}  // namespace

Presence::Presence(boost::asio::io_context& io, store::Store& store, GroupCommitter& committer, Directory& directory,
                   bus::Bus& bus, const ServiceOptions& options)
    : io_(io),
      store_(store),
      committer_(committer),
      directory_(directory),
      bus_(bus),
      options_(options),
      contacts_(options.presence_index_entries),
      orders_(kOrdersKept),
      typing_timer_(io) {
  // Changes decided on other nodes, for the subscribers here (bus.h publish_presence).
  bus_.set_presence_sink([this](const std::string& user, std::shared_ptr<const bus::Notification> n) {
    changed_elsewhere(user, n);
  });
  loader_ = std::thread([this] {
    set_thread_name("tern-presence");
    loader();
  });
}

Presence::~Presence() { stop(); }

void Presence::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  load_cv_.notify_all();
  if (loader_.joinable()) loader_.join();
}

std::shared_ptr<const bus::Notification> Presence::presence_frame(const std::string& user, bool online,
                                                                  int64_t last_seen, uint64_t order) {
  return frame_notification(proto::encode_presence(user, online, last_seen), /*droppable=*/true, order);
}

bool Presence::latest(const std::string& user, uint64_t order) {
  if (order == 0) return true;
  std::lock_guard lock(mu_);
  if (uint64_t* last = orders_.find(user)) {
    if (*last >= order) {
      presence_overtaken.inc();
      return false;
    }
    *last = order;
    return true;
  }
  orders_.emplace(user, order);
  return true;
}

void Presence::broadcast(const std::string& user, bool online, int64_t last_seen, uint64_t order) {
  if (!latest(user, order)) return;  // another node's later change was passed on already
  auto n = presence_frame(user, online, last_seen, order);  // the order, for the other nodes' latest()
  to_watchers(user, n);
  bus_.publish_presence(user, n);
}

void Presence::changed_elsewhere(const std::string& user, const std::shared_ptr<const bus::Notification>& n) {
  if (!latest(user, n->seq)) return;
  to_watchers(user, n);
}

void Presence::to_watchers(const std::string& user, const std::shared_ptr<const bus::Notification>& n) {
  std::vector<std::shared_ptr<bus::Endpoint>> targets;
  {
    std::lock_guard lock(mu_);
    auto it = watchers_.find(user);
    if (it == watchers_.end()) return;
    for (auto& [_, weak] : it->second)
      if (auto e = weak.lock()) targets.push_back(std::move(e));
  }
  for (auto& t : targets) t->notify(n);
}

void Presence::device_attached(const std::string& user, size_t devices_online, uint64_t order, bool added) {
  if (devices_online == 1 && added) broadcast(user, true, 0, order);
}

void Presence::device_detached(const std::string& user, size_t devices_online, uint64_t order) {
  if (devices_online != 0) return;
  const int64_t now = bus_.clock_ms() / 60000 * 60000;  // last seen is kept to the minute
  store::Batch batch;
  batch.add(store::SetLastSeen{user, now});
  committer_.submit(std::move(batch), nullptr);  // best effort: last_seen is not a guarantee
  broadcast(user, false, now, order);
}

// ---------------------------------------------------------------- the contact index

bool Presence::load_async(const std::string& user, std::function<void(bool ok)> done, bool contacts) {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || loads_.size() >= kMaxPendingLoads) return false;
    loads_.push_back(Load{user, std::move(done), contacts});
  }
  load_cv_.notify_one();
  return true;
}

void Presence::loader() {
  for (;;) {
    Load next;
    {
      std::unique_lock lock(mu_);
      load_cv_.wait(lock, [&] { return stopping_ || !loads_.empty(); });
      if (loads_.empty()) return;  // stopping, nothing left
      next = std::move(loads_.front());
      loads_.pop_front();
      if (stopping_) {
        lock.unlock();
        next.done(false);
        continue;
      }
    }
    next.done(next.contacts ? load(next.user) : true);
  }
}

// Reads the user's conversations (the store's user index, then each snapshot from the
// directory) off the I/O threads. Membership changes that happen meanwhile, or that were
// sequenced shortly before but may not be committed yet, are applied again afterwards with
// their latest snapshot (idempotent).
bool Presence::load(const std::string& user) {
  {
    std::lock_guard lock(mu_);
    if (contacts_.loaded(user)) return true;
    auto& changed = loading_[user];
    for (const auto& r : recent_)
      if (find_member(*r.after, user)) changed.insert(r.after->id);
  }
  auto rows = store_.user_conversations(user);
  std::vector<ConversationPtr> snapshots;
  if (rows) {
    for (const auto& row : *rows) {
      if (row.left_seq != 0) continue;
      auto c = directory_.conversation(row.conversation_id);
      if (!c) {
        rows = c.error();
        break;
      }
      if (*c) snapshots.push_back(std::move(*c));
    }
  }
  if (!rows) {
    std::lock_guard lock(mu_);
    loading_.erase(user);
    return false;
  }
  {
    std::lock_guard lock(mu_);
    contacts_.install(user, snapshots);
  }
  for (int round = 0; round < 4; ++round) {
    std::set<std::string> changed;
    {
      std::lock_guard lock(mu_);
      auto it = loading_.find(user);
      if (it == loading_.end() || it->second.empty() || round == 3) {
        loading_.erase(user);
        return true;
      }
      changed.swap(it->second);
    }
    std::vector<std::pair<std::string, ConversationPtr>> latest;
    for (const auto& id : changed) {
      auto c = directory_.conversation(id);
      latest.emplace_back(id, c ? *c : ConversationPtr{});
    }
    std::lock_guard lock(mu_);
    for (const auto& [id, snap] : latest) contacts_.apply(user, id, snap, nullptr);
  }
  return true;
}

void Presence::membership_changed(const store::Conversation* before, const store::Conversation& after) {
  if (after.type == store::ConvType::kChannel) return;  // channels share no presence
  ConversationPtr snap;
  if (auto cached = directory_.conversation(after.id); cached && *cached && cached->get() == &after) snap = *cached;
  else snap = std::make_shared<const store::Conversation>(after);
  std::vector<const std::string*> users;
  for (const auto& m : after.members) users.push_back(&m.user);
  if (before)
    for (const auto& m : before->members)
      if (!find_member(after, m.user)) users.push_back(&m.user);

  const int64_t now = mono_us() / 1000;
  std::vector<std::string> held;  // members others hold subscriptions to: they may share now
  {
    std::lock_guard lock(mu_);
    recent_.push_back(Recent{now, snap});
    while (!recent_.empty() && (recent_.size() > kRecentMax || recent_.front().at_ms < now - kRecentMs))
      recent_.pop_front();
    std::vector<std::string> unshared;
    for (const std::string* u : users) {
      if (auto l = loading_.find(*u); l != loading_.end()) l->second.insert(after.id);
      if (held_by_.count(*u)) held.push_back(*u);
      if (!contacts_.loaded(*u)) continue;
      unshared.clear();
      contacts_.apply(*u, after.id, snap, &unshared);
      for (const auto& other : unshared) drop_pair_locked(*u, other);
    }
  }
  for (const auto& u : held) grant_later(u);
}

void Presence::membership_changed_elsewhere(const std::string& conversation_id) {
  if (conversation_id.rfind("ch-", 0) == 0) return;  // channels share no presence
  const bool queued = load_async(
      conversation_id,
      [this, conversation_id](bool) {
        auto c = directory_.conversation(conversation_id);
        if (!c || !*c) return;  // unreadable now: the index learns it when the users load again
        if ((*c)->type == store::ConvType::kDirect && privacy_)
          for (const auto& m : (*c)->members) privacy_->forget(m.user);
        membership_changed(nullptr, **c);
      },
      /*contacts=*/false);
  if (!queued) spdlog::warn("event=presence_membership_dropped reason=loader_queue_full");
}

void Presence::conversation_dropped(const store::Conversation& c) {
  std::lock_guard lock(mu_);
  std::vector<std::string> unshared;
  for (const auto& m : c.members) {
    if (auto l = loading_.find(m.user); l != loading_.end()) l->second.insert(c.id);
    if (!contacts_.loaded(m.user)) continue;
    unshared.clear();
    contacts_.apply(m.user, c.id, nullptr, &unshared);
    for (const auto& other : unshared) drop_pair_locked(m.user, other);
  }
}

void Presence::conversation_count(const std::string& user, std::function<void(Result<size_t>)> done) {
  {
    std::unique_lock lock(mu_);
    if (contacts_.loaded(user)) {
      const size_t n = contacts_.conversations(user);
      lock.unlock();
      return done(n);
    }
  }
  auto shared_done = std::make_shared<std::function<void(Result<size_t>)>>(std::move(done));
  const bool queued = load_async(user, [this, user, shared_done](bool ok) {
    if (!ok) return (*shared_done)(make_error(ErrorCode::kInternal, "store unavailable"));
    size_t n;
    {
      std::lock_guard lock(mu_);
      n = contacts_.conversations(user);
    }
    (*shared_done)(n);
  });
  if (!queued) (*shared_done)(make_error(ErrorCode::kOverloaded, "server busy; retry later"));
}

// ---------------------------------------------------------------- subscriptions

Result<void> Presence::subscribe(uint64_t subscriber_id, const std::string& subscriber_user,
                                 const std::shared_ptr<bus::Endpoint>& subscriber,
                                 const std::vector<std::string>& users) {
  bool loaded;
  {
    std::lock_guard lock(mu_);
    // A connection's subscriptions are answered in order: behind one waiting for the loader,
    // the next waits too.
    loaded = contacts_.loaded(subscriber_user) && !in_flight_.count(subscriber_id);
  }
  loaded = loaded && policies_cached(subscriber_user, users);
  // With Redis (reader threads) the answer itself reads: each user's registry entry
  // (Bus::online) and last seen, one round trip each. The loader thread makes them.
  loaded = loaded && options_.read_threads == 0;
  if (!loaded) {
    std::lock_guard lock(mu_);
    ++in_flight_[subscriber_id];
  }
  if (loaded) return finish_subscribe(subscriber_id, subscriber_user, subscriber, users);  // the common case
  {
    std::weak_ptr<bus::Endpoint> weak = subscriber;
    const bool queued = load_async(subscriber_user, [this, subscriber_id, subscriber_user, weak, users](bool ok) {
      ok = ok && load_policies(subscriber_user, users);
      auto endpoint = weak.lock();
      bool skip;
      {
        std::lock_guard lock(mu_);
        skip = gone_.count(subscriber_id) != 0 || !endpoint;
      }
      Result<void> r;
      // Answered before in_flight_ drops, so a later subscription of this connection cannot
      // overtake it (finish_subscribe checks gone_ again under the lock).
      if (!skip) r = ok ? finish_subscribe(subscriber_id, subscriber_user, endpoint, users)
                        : Result<void>(make_error(ErrorCode::kInternal, "store unavailable"));
      {
        std::lock_guard lock(mu_);
        if (--in_flight_[subscriber_id] <= 0) {
          in_flight_.erase(subscriber_id);
          gone_.erase(subscriber_id);
        }
      }
      if (!skip && !r) endpoint->notify(frame_notification(proto::encode_error(r.error(), {}), false));
    });
    if (queued) return {};
    std::lock_guard lock(mu_);
    if (--in_flight_[subscriber_id] <= 0) in_flight_.erase(subscriber_id);
    return make_error(ErrorCode::kOverloaded, "server busy; retry later");
  }
}

Result<void> Presence::finish_subscribe(uint64_t subscriber_id, const std::string& subscriber_user,
                                        const std::shared_ptr<bus::Endpoint>& subscriber,
                                        const std::vector<std::string>& users) {
  std::vector<std::string> fresh;
  {
    std::lock_guard lock(mu_);
    if (gone_.count(subscriber_id)) return {};
    if (!contacts_.loaded(subscriber_user))  // evicted in between (rare): the client retries
      return make_error(ErrorCode::kOverloaded, "server busy; retry later");
    auto& sub = subscribers_[subscriber_id];
    sub.user = subscriber_user;
    sub.endpoint = subscriber;
    std::set<std::string> asked(users.begin(), users.end());
    std::vector<std::string> hidden;  // not visible now: held (below, once the frame is taken)
    for (const auto& u : asked) {
      if (sub.watching.count(u)) continue;
      if (contacts_.shares(subscriber_user, u) && (!privacy_ || privacy_->allowed(u, subscriber_user)))
        fresh.push_back(u);
      else
        hidden.push_back(u);
    }
    if (sub.watching.size() + fresh.size() > options_.max_presence_subscriptions)
      return make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(options_.max_presence_subscriptions) +
                                                       " presence subscriptions per connection");
    auto& mine = by_user_[subscriber_user];
    if (mine.first + fresh.size() > options_.max_presence_subscriptions_per_user) {
      if (mine.first == 0 && mine.second.empty()) by_user_.erase(subscriber_user);
      return make_error(ErrorCode::kLimitExceeded, "at most " +
                                                       std::to_string(options_.max_presence_subscriptions_per_user) +
                                                       " presence subscriptions per user");
    }
    for (const auto& u : hidden) hold_locked(subscriber_id, sub, u);
    if (fresh.empty()) {
      if (mine.first == 0 && mine.second.empty()) by_user_.erase(subscriber_user);
      return {};
    }
    if (mine.first == 0) contacts_.pin(subscriber_user);
    mine.first += fresh.size();
    mine.second.insert(subscriber_id);
    for (const auto& u : fresh) {
      unhold_locked(subscriber_id, sub, u);
      sub.watching.insert(u);
      watchers_[u][subscriber_id] = subscriber;
    }
  }
  for (const auto& u : fresh)
    if (auto frame = current(u)) subscriber->notify(frame);
  return {};
}

// `watcher_user` no longer shares a conversation with `watched`: every subscription of its
// connections to `watched` ends.
void Presence::drop_pair_locked(const std::string& watcher_user, const std::string& watched) {
  auto mine = by_user_.find(watcher_user);
  if (mine == by_user_.end()) return;
  for (uint64_t sid : mine->second.second) {
    auto s = subscribers_.find(sid);
    if (s == subscribers_.end() || !s->second.watching.erase(watched)) continue;
    if (auto w = watchers_.find(watched); w != watchers_.end()) {
      w->second.erase(sid);
      if (w->second.empty()) watchers_.erase(w);
    }
    if (--mine->second.first == 0) contacts_.unpin(watcher_user);
  }
}

void Presence::unwatch_locked(uint64_t sid, const std::string& watched) {
  auto s = subscribers_.find(sid);
  if (s == subscribers_.end() || !s->second.watching.erase(watched)) return;
  if (auto w = watchers_.find(watched); w != watchers_.end()) {
    w->second.erase(sid);
    if (w->second.empty()) watchers_.erase(w);
  }
  auto mine = by_user_.find(s->second.user);
  if (mine != by_user_.end() && mine->second.first > 0 && --mine->second.first == 0) contacts_.unpin(s->second.user);
}

bool Presence::policies_cached(const std::string& subscriber_user, const std::vector<std::string>& users) {
  if (!privacy_) return true;
  if (!privacy_->cached(subscriber_user)) return false;
  for (const auto& u : users)
    if (!privacy_->cached(u)) return false;
  return true;
}

// On the loader thread: the policies (and block lists) the subscription will consult.
bool Presence::load_policies(const std::string& subscriber_user, const std::vector<std::string>& users) {
  if (!privacy_) return true;
  if (!privacy_->load(subscriber_user)) return false;
  for (const auto& u : users) {
    if (!privacy_->load(u)) return false;
    if (blocks_) blocks_->blocks(u, subscriber_user);  // warms the block cache
  }
  return true;
}

void Presence::revalidate(const std::string& user) {
  end_refused(user);
  grant_later(user);
}

void Presence::end_refused(const std::string& user) {
  if (!privacy_) return;
  std::lock_guard lock(mu_);
  std::vector<uint64_t> drop;
  if (auto w = watchers_.find(user); w != watchers_.end())
    for (const auto& [sid, _] : w->second)
      if (auto s = subscribers_.find(sid); s != subscribers_.end() && privacy_->denied(user, s->second.user))
        drop.push_back(sid);
  for (uint64_t sid : drop) unwatch_locked(sid, user);
  // A user who hides its presence sees nobody's.
  auto mine = by_user_.find(user);
  if (mine == by_user_.end()) return;
  for (uint64_t sid : std::vector<uint64_t>(mine->second.second.begin(), mine->second.second.end())) {
    auto s = subscribers_.find(sid);
    if (s == subscribers_.end()) continue;
    for (const auto& watched : std::vector<std::string>(s->second.watching.begin(), s->second.watching.end()))
      if (privacy_->denied(watched, user)) unwatch_locked(sid, watched);
  }
}

void Presence::revalidate_later(const std::string& user) {
  if (!privacy_) return;
  const bool queued = load_async(
      user,
      [this, user](bool) {
        std::set<std::string> others;
        {
          std::lock_guard lock(mu_);
          if (auto w = watchers_.find(user); w != watchers_.end())
            for (const auto& [sid, _] : w->second)
              if (auto s = subscribers_.find(sid); s != subscribers_.end()) others.insert(s->second.user);
          if (auto mine = by_user_.find(user); mine != by_user_.end())
            for (uint64_t sid : mine->second.second)
              if (auto s = subscribers_.find(sid); s != subscribers_.end())
                others.insert(s->second.watching.begin(), s->second.watching.end());
        }
        (void)privacy_->load(user);  // a failed read leaves it uncached: nothing ends on a guess
        for (const auto& o : others) (void)privacy_->load(o);
        end_refused(user);
        grant_held(user);  // e.g. a consent given on another node
      },
      /*contacts=*/false);
  if (!queued) spdlog::warn("event=presence_revalidation_dropped reason=loader_queue_full");
}

void Presence::hold_locked(uint64_t subscriber_id, Subscriber& sub, const std::string& watched) {
  if (sub.held.count(watched) || sub.held.size() >= options_.max_presence_subscriptions) return;
  size_t& of_user = held_per_user_[sub.user];
  if (of_user >= options_.max_presence_subscriptions_per_user) return;
  ++of_user;
  sub.held.insert(watched);
  held_by_[watched].insert(subscriber_id);
}

void Presence::unhold_locked(uint64_t subscriber_id, Subscriber& sub, const std::string& watched) {
  if (!sub.held.erase(watched)) return;
  if (auto h = held_by_.find(watched); h != held_by_.end()) {
    h->second.erase(subscriber_id);
    if (h->second.empty()) held_by_.erase(h);
  }
  if (auto u = held_per_user_.find(sub.user); u != held_per_user_.end() && --u->second == 0) held_per_user_.erase(u);
}

void Presence::grant_later(const std::string& user) {
  {
    std::lock_guard lock(mu_);
    if (!held_by_.count(user)) return;
  }
  if (!load_async(user, [this, user](bool) { grant_held(user); }, /*contacts=*/false))
    spdlog::warn("event=presence_grant_dropped reason=loader_queue_full");
}

void Presence::grant_held(const std::string& watched) {
  // What the check consults is read here, on the loader thread; what cannot be read leaves
  // its subscriptions held. Anyone may hold a subscription to anyone, so what is read for
  // each holder is read only for those the watched user's own conversations and setting
  // admit (its side is read once): the work is the watched user's to cause, not the holders'.
  (void)load(watched);
  if (privacy_) (void)privacy_->load(watched);
  std::set<std::string> viewers;
  {
    std::lock_guard lock(mu_);
    auto h = held_by_.find(watched);
    if (h == held_by_.end()) return;
    for (uint64_t sid : h->second)
      if (auto s = subscribers_.find(sid); s != subscribers_.end() && contacts_.shares(watched, s->second.user) &&
                                           (!privacy_ || privacy_->setting_admits(watched, s->second.user)))
        viewers.insert(s->second.user);
  }
  if (viewers.empty()) return;
  for (const auto& v : viewers) {
    (void)load(v);  // its index is pinned while it watches, so its subscriptions end with the last shared conversation
    if (privacy_) (void)privacy_->load(v);
    if (blocks_) blocks_->blocks(watched, v);
  }
  std::vector<std::shared_ptr<bus::Endpoint>> granted;
  {
    std::lock_guard lock(mu_);
    auto h = held_by_.find(watched);
    if (h == held_by_.end()) return;
    for (uint64_t sid : std::vector<uint64_t>(h->second.begin(), h->second.end())) {
      auto s = subscribers_.find(sid);
      if (s == subscribers_.end()) continue;
      Subscriber& sub = s->second;
      if (!viewers.count(sub.user) || !contacts_.loaded(sub.user) || !contacts_.shares(sub.user, watched)) continue;
      if (privacy_ && !privacy_->allowed(watched, sub.user)) continue;
      auto endpoint = sub.endpoint.lock();
      if (!endpoint || sub.watching.size() >= options_.max_presence_subscriptions) continue;
      auto& mine = by_user_[sub.user];
      if (mine.first >= options_.max_presence_subscriptions_per_user) continue;
      unhold_locked(sid, sub, watched);
      if (mine.first == 0) contacts_.pin(sub.user);
      ++mine.first;
      mine.second.insert(sid);
      sub.watching.insert(watched);
      watchers_[watched][sid] = endpoint;
      granted.push_back(std::move(endpoint));
    }
  }
  if (granted.empty()) return;
  if (auto frame = current(watched))
    for (const auto& e : granted) e->notify(frame);
}

std::shared_ptr<const bus::Notification> Presence::current(const std::string& user) {
  bool reported = false;
  const bool online = bus_.online(user, &reported);
  // The bus found the user's last device record stale and reported it offline to every
  // watcher, those being answered included (registered before), or a later change came after
  // it: told.
  if (reported) return nullptr;
  int64_t last_seen = 0;
  if (!online) {
    auto ls = store_.last_seen(user);
    if (ls) last_seen = *ls / 60000 * 60000;  // stored to the minute; older records rounded here
  }
  return presence_frame(user, online, last_seen);
}

void Presence::unsubscribe_all(uint64_t subscriber_id) {
  std::lock_guard lock(mu_);
  if (in_flight_.count(subscriber_id)) gone_.insert(subscriber_id);
  auto it = subscribers_.find(subscriber_id);
  if (it == subscribers_.end()) return;
  for (const auto& u : std::vector<std::string>(it->second.held.begin(), it->second.held.end()))
    unhold_locked(subscriber_id, it->second, u);
  for (const auto& u : it->second.watching) {
    auto w = watchers_.find(u);
    if (w == watchers_.end()) continue;
    w->second.erase(subscriber_id);
    if (w->second.empty()) watchers_.erase(w);
  }
  if (auto mine = by_user_.find(it->second.user); mine != by_user_.end()) {
    const size_t n = it->second.watching.size();
    if (n && mine->second.first == n) contacts_.unpin(it->second.user);
    mine->second.first -= std::min(n, mine->second.first);
    mine->second.second.erase(subscriber_id);
    if (mine->second.second.empty()) by_user_.erase(mine);
  }
  subscribers_.erase(it);
}

// ---------------------------------------------------------------- typing

bool Presence::typing_cached(const std::string& user, const std::string& conversation_id) {
  if (options_.read_threads == 0) return true;  // the embedded store: reads are inline
  ConversationPtr c = directory_.cached_conversation(conversation_id);
  if (!c) return false;
  if (c->type != store::ConvType::kDirect || !blocks_ || !is_active_member(*c, user)) return true;
  if (!blocks_->cached(user)) return false;
  for (const auto& m : c->members)
    if (m.active() && m.user != user && !blocks_->cached(m.user)) return false;
  return true;
}

Result<void> Presence::typing(const DeviceRef& from, const std::string& conversation_id, bool active,
                              const std::weak_ptr<bus::Endpoint>& from_endpoint) {
  if (typing_cached(from.user, conversation_id)) return typing_now(from, conversation_id, active);
  // A cache miss in Redis mode: the loader thread reads what is missing (the snapshot, the
  // block lists), then handles the frame there, later than it came; an error goes back to
  // the typist's connection as a frame.
  const bool queued = load_async(
      from.user,
      [this, from, conversation_id, active, from_endpoint](bool ok) {
        if (!ok) return;  // stopping
        Result<void> r;
        auto conv = directory_.conversation(conversation_id);
        if (!conv) r = conv.error();
        else if (*conv && (*conv)->type == store::ConvType::kDirect && blocks_)
          for (const auto& m : (*conv)->members)
            if (!blocks_->cached(m.user)) (void)blocks_->blocks(m.user, from.user);  // warms the cache
        if (r) r = typing_now(from, conversation_id, active);
        if (r) return;
        if (auto e = from_endpoint.lock()) e->notify(frame_notification(proto::encode_error(r.error(), {}), false));
      },
      /*contacts=*/false);
  if (!queued) typing_dropped.inc();  // full: dropped (typing is lossy; the next one tries again)
  return {};
}

Result<void> Presence::typing_now(const DeviceRef& from, const std::string& conversation_id, bool active) {
  auto conv = directory_.conversation(conversation_id);
  if (!conv) return conv.error();
  if (*conv && (*conv)->type == store::ConvType::kChannel) return {};  // typing is off in channels
  if (!*conv || !is_active_member(**conv, from.user)) return conversation_access_error();
  const int64_t now = mono_us() / 1000;
  const int64_t interval = options_.typing_interval_ms;
  if (active_count(**conv) > options_.typing_max_members) {
    // A big group: coalesced per conversation, lossy. At most one relay per interval for the
    // whole conversation (whoever typed first in it); the rest is dropped, not deferred.
    {
      std::lock_guard lock(typing_mu_);
      if (conversation_typing_.size() >= kTypingPruneAt)
        std::erase_if(conversation_typing_, [&](const auto& kv) { return now - kv.second >= interval; });
      auto [it, inserted] = conversation_typing_.try_emplace(conversation_id, kNever);
      if (!inserted && now - it->second < interval) return {};
      it->second = now;
    }
    relay_typing(from.user, conversation_id, active);
    return {};
  }
  bool relay = false;
  {
    std::lock_guard lock(typing_mu_);
    if (typing_.size() >= kTypingPruneAt)
      std::erase_if(typing_, [&](const auto& kv) { return !kv.second.pending && now - kv.second.last_relay_ms >= interval; });
    auto [it, inserted] = typing_.try_emplace(from.user + '\n' + conversation_id);
    TypingState& s = it->second;
    if (inserted) s.last_relay_ms = kNever;
    if (now - s.last_relay_ms >= interval) {
      if (s.pending) --typing_pending_;
      s.pending = false;
      s.last_relay_ms = now;
      s.relayed_active = active;
      relay = true;
    } else if (active != s.relayed_active) {  // a change: relayed when the interval ends
      if (!s.pending) ++typing_pending_;
      s.pending = true;
      s.pending_active = active;
      arm_typing_timer();
    } else if (s.pending) {  // back to what was relayed last: nothing to tell
      s.pending = false;
      --typing_pending_;
    }
  }
  if (relay) relay_typing(from.user, conversation_id, active);
  return {};
}

void Presence::relay_typing(const std::string& user, const std::string& conversation_id, bool active) {
  // A relay deferred to the end of its interval (flush_typing, on a loop) finds the snapshot
  // and block lists evicted only rarely: in Redis mode it is then dropped, not read there.
  if (!typing_cached(user, conversation_id)) return;
  auto conv = directory_.conversation(conversation_id);
  if (!conv || !*conv || !is_active_member(**conv, user)) return;
  auto n = frame_notification(proto::encode_typing(conversation_id, user, active), /*droppable=*/true);
  const bool direct = (*conv)->type == store::ConvType::kDirect;
  for (const auto& m : (*conv)->members)
    if (m.active() && m.user != user && !(direct && blocks_ && blocks_->either(user, m.user)))
      bus_.publish_user(m.user, n);
}

// typing_mu_ held.
void Presence::arm_typing_timer() {
  if (typing_timer_armed_) return;
  typing_timer_armed_ = true;
  typing_timer_.expires_after(std::chrono::milliseconds(std::max<int64_t>(20, options_.typing_interval_ms / 4)));
  typing_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) flush_typing();
  });
}

void Presence::flush_typing() {
  struct Out { std::string user, conversation; bool active; };
  std::vector<Out> out;
  {
    std::lock_guard lock(typing_mu_);
    typing_timer_armed_ = false;
    const int64_t now = mono_us() / 1000;
    const int64_t interval = options_.typing_interval_ms;
    for (auto it = typing_.begin(); it != typing_.end();) {
      TypingState& s = it->second;
      if (s.pending && now - s.last_relay_ms >= interval) {
        const auto nl = it->first.find('\n');
        out.push_back(Out{it->first.substr(0, nl), it->first.substr(nl + 1), s.pending_active});
        s.pending = false;
        --typing_pending_;
        s.last_relay_ms = now;
        s.relayed_active = s.pending_active;
      }
      if (!s.pending && now - s.last_relay_ms >= interval) it = typing_.erase(it);
      else ++it;
    }
    if (typing_pending_ > 0) arm_typing_timer();
  }
  for (const auto& o : out) relay_typing(o.user, o.conversation, o.active);
}

}  // namespace tern::services
