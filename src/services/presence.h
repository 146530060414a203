// Presence and typing: ephemeral, never stored as events, never replayed. A user is online
// while at least one of its devices is connected; when the last one leaves, last_seen is set
// (kept in the store so it survives a restart) and subscribers are told.
//
// Presence is visible only to users who share a conversation with the user and whom the
// user's privacy setting admits (PresencePrivacy: contacts by default, everyone, nobody;
// never to a user it blocks); last_seen is kept to the minute. Sharing is decided
// by the ContactIndex (user → counterpart → shared conversations), so a subscription costs
// O(users in the frame), whatever the number of the subscriber's conversations. The index
// learns membership changes through membership_changed() (called by the sequencer as it
// sequences them); when two users stop sharing any conversation, their subscriptions to each
// other end. A user not in the index yet is loaded on Presence's own loader thread (a store
// read of its conversation list), never on an I/O thread; the subscription then completes
// there. Only newly added subscriptions are answered with the current presence. A user asked
// for who is not visible to the subscriber yet (no shared conversation, or its setting does
// not admit the subscriber: a message request not answered yet) is held, silently, and
// answered and watched once it is: when a conversation comes to be shared, or the user's
// consent or setting changes, here or on another node (grant_later). So a subscription made
// just before the consent, or on another node than the one that saw it, is not lost.
//
// Typing is relayed to the other active members, coalesced per (typist, conversation): at most
// one relay per typing_interval_ms (a change of state within the interval is relayed at its
// end, with the latest state); in conversations above typing_max_members coalesced per
// conversation instead (one relay per interval for the whole conversation, the rest dropped,
// so a hot group's typing costs at most members frames per interval); and marked
// droppable (a session above half its write queue drops it first). Presence frames are
// droppable too.
//
// Bounds: max_presence_subscriptions per connection, max_presence_subscriptions_per_user over
// a user's connections (limit_exceeded); held subscriptions, as many per connection and per
// user (beyond them a user asked for is not held); the index (presence_index_entries); the loader queue
// (kMaxPendingLoads, beyond it `overloaded`); typing state (one entry per recently active
// typist and conversation, pruned after an interval).
//
// Thread-safe: one mutex guards the index and the subscriptions, another the typing state;
// frames go out through the bus (each endpoint hops to its own loop). Owned by TernService.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "base/lru_map.h"
#include "bus/bus.h"
#include "services/contact_index.h"
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/presence_privacy.h"
#include "services/service_options.h"

namespace tern::services {

class Presence {
 public:
  static constexpr size_t kMaxPendingLoads = 1024;

  Presence(boost::asio::io_context& io, store::Store& store, GroupCommitter& committer, Directory& directory,
           bus::Bus& bus, const ServiceOptions& options);
  ~Presence();
  void stop();

  // Called by sessions after Bus::attach / Bus::detach with the returned device count. A
  // change (the user's first device online, its last one gone) goes to this node's
  // subscribers of the user and, through the bus, to the other nodes' (Bus::publish_presence;
  // the counts cover every node, so exactly one node decides each change). `order` is the
  // count's (Bus::Counted): a change older than the last one this node passed on for the
  // user, decided here or elsewhere, is dropped (two nodes' changes may arrive in either
  // order); 0 is never dropped. `added` false (Bus::Counted): the device counted already, so
  // the user was online already: nothing to report.
  void device_attached(const std::string& user, size_t devices_online, uint64_t order = 0, bool added = true);
  void device_detached(const std::string& user, size_t devices_online, uint64_t order = 0);
  // A change decided on another node (the bus's presence sink): `n`, its presence frame
  // (`n->seq`: its order), goes to this node's subscribers of the user unless older than the
  // last one passed on. Any thread.
  void changed_elsewhere(const std::string& user, const std::shared_ptr<const bus::Notification>& n);

  // Subscribes `subscriber` (an endpoint of `subscriber_user`, with a stable id) to users,
  // answering each newly visible user's current presence. Users who share no conversation
  // with the subscriber are ignored (as if unknown: no information leaks). When the
  // subscriber's contacts must be loaded first, this returns at once and the answer (or an
  // error frame) comes later through the endpoint.
  Result<void> subscribe(uint64_t subscriber_id, const std::string& subscriber_user,
                         const std::shared_ptr<bus::Endpoint>& subscriber, const std::vector<std::string>& users);
  void unsubscribe_all(uint64_t subscriber_id);

  // Relays a typing frame to the other members' online devices (coalesced, see above).
  // With reader threads (Redis), when the conversation's snapshot or (direct) the two block
  // lists are not cached, nothing is read on the caller's loop: the loader thread reads them
  // and then handles the frame (relays it, or sends the error to `from_endpoint`); this
  // returns {} at once. Beyond kMaxPendingLoads the frame is dropped (typing is lossy) and
  // counted in tern_typing_dropped_total.
  Result<void> typing(const DeviceRef& from, const std::string& conversation_id, bool active,
                      const std::weak_ptr<bus::Endpoint>& from_endpoint = {});

  // The sequencer calls this right after it put a conversation's new snapshot in the
  // directory: on creation (before = nullptr) and on each membership change.
  void membership_changed(const store::Conversation* before, const store::Conversation& after);
  // A membership change of `conversation_id` sequenced on another node (the bus's change sink,
  // after the directory dropped its snapshot): on the loader thread, the new snapshot is read
  // and applied as membership_changed() applies one made here, and the policies of a direct
  // conversation's two users are read again (a creation accepts it for its creator). Not for
  // channels (they share no presence).
  void membership_changed_elsewhere(const std::string& conversation_id);
  // A creation that was refused after membership_changed (the store queue was full).
  void conversation_dropped(const store::Conversation& c);

  // The number of conversations `user` is an active member of, given to `done` (at once, or
  // later from the loader thread).
  void conversation_count(const std::string& user, std::function<void(Result<size_t>)> done);

  // Issue 12: consent and blocks. Set once before serving (both outlive Presence). A consent
  // given here (PresencePrivacy::accepted) answers the subscriptions held for it.
  void set_privacy(PresencePrivacy* privacy, Blocks* blocks) {
    privacy_ = privacy;
    blocks_ = blocks;
    if (privacy_) privacy_->set_accepted_sink([this](const std::string& user) { grant_later(user); });
  }
  // `user`'s setting or blocks changed: subscriptions to it that are no longer allowed end,
  // and so do all of its own when it hides its presence; held ones now allowed are answered.
  void revalidate(const std::string& user);
  // Subscriptions held for `user` (not visible when asked) may be visible now: on the loader
  // thread, those that are become watched and are answered with its presence. Any thread.
  void grant_later(const std::string& user);
  // The same for a change made on another node (its policy was just dropped here): on the
  // loader thread, once the policies of `user` and of the users on either side of its
  // subscriptions here are loaded again (revalidate() ends only what it knows to be refused).
  void revalidate_later(const std::string& user);

 private:
  struct Load {
    std::string user;
    std::function<void(bool ok)> done;  // runs on the loader thread, mu_ not held
    bool contacts = true;  // false: a bare job (done(true)), e.g. a typing frame's warm-up
  };
  struct Subscriber {
    std::string user;
    std::set<std::string> watching;
    // Asked for while not visible to `user` (see above): watched and answered once visible.
    std::set<std::string> held;
    std::weak_ptr<bus::Endpoint> endpoint;  // for the answer of a held one
  };
  struct Recent {
    int64_t at_ms;
    ConversationPtr after;
  };
  struct TypingState {
    int64_t last_relay_ms = 0;
    bool relayed_active = false;
    bool pending = false;
    bool pending_active = false;
  };

  // `order`: the change's (0 for an answer to a subscription), in the notification's seq.
  std::shared_ptr<const bus::Notification> presence_frame(const std::string& user, bool online, int64_t last_seen,
                                                          uint64_t order = 0);
  // A change decided here: to this node's subscribers of `user` and to the other nodes.
  void broadcast(const std::string& user, bool online, int64_t last_seen, uint64_t order);
  // Whether a change of `user` with `order` is later than the last one passed on (and notes
  // it); true for order 0.
  bool latest(const std::string& user, uint64_t order);
  void to_watchers(const std::string& user, const std::shared_ptr<const bus::Notification>& n);
  // Queues a load of `user`'s contacts; false when the queue is full.
  bool load_async(const std::string& user, std::function<void(bool ok)> done, bool contacts = true);
  void loader();
  bool load(const std::string& user);
  Result<void> finish_subscribe(uint64_t subscriber_id, const std::string& subscriber_user,
                                const std::shared_ptr<bus::Endpoint>& subscriber, const std::vector<std::string>& users);
  void drop_pair_locked(const std::string& watcher_user, const std::string& watched);
  // Holds `watched` for the connection (bounded), or lets it go.
  void hold_locked(uint64_t subscriber_id, Subscriber& sub, const std::string& watched);
  void unhold_locked(uint64_t subscriber_id, Subscriber& sub, const std::string& watched);
  // On the loader thread: grant_later's work.
  void grant_held(const std::string& watched);
  // The answer to a new subscription to `user`: its presence now (a registry read with Redis,
  // and its last seen if offline); null if the bus has just told the watchers itself.
  std::shared_ptr<const bus::Notification> current(const std::string& user);
  // revalidate() without the grant: ends what is no longer allowed (mu_ taken here).
  void end_refused(const std::string& user);
  void unwatch_locked(uint64_t subscriber_id, const std::string& watched);
  bool policies_cached(const std::string& subscriber_user, const std::vector<std::string>& users);
  bool load_policies(const std::string& subscriber_user, const std::vector<std::string>& users);
  // Whether typing() can decide without a store read (always with the embedded store).
  bool typing_cached(const std::string& user, const std::string& conversation_id);
  Result<void> typing_now(const DeviceRef& from, const std::string& conversation_id, bool active);
  void relay_typing(const std::string& user, const std::string& conversation_id, bool active);
  void arm_typing_timer();
  void flush_typing();

  boost::asio::io_context& io_;
  store::Store& store_;
  GroupCommitter& committer_;
  Directory& directory_;
  bus::Bus& bus_;
  const ServiceOptions& options_;
  PresencePrivacy* privacy_ = nullptr;
  Blocks* blocks_ = nullptr;

  std::mutex mu_;
  ContactIndex contacts_;
  LruMap<std::string, uint64_t> orders_;  // user → order of the last change passed on
  std::unordered_map<std::string, std::set<std::string>> loading_;  // user → conversations changed meanwhile
  std::deque<Recent> recent_;  // recent membership changes (their commit may still be in flight)
  // watched user → subscriber id → endpoint
  std::unordered_map<std::string, std::map<uint64_t, std::weak_ptr<bus::Endpoint>>> watchers_;
  std::unordered_map<uint64_t, Subscriber> subscribers_;
  std::unordered_map<std::string, std::set<uint64_t>> held_by_;  // watched user → subscriber ids holding it
  std::unordered_map<std::string, size_t> held_per_user_;        // subscriber user → its connections' held
  std::unordered_map<std::string, std::pair<size_t, std::set<uint64_t>>> by_user_;  // count, subscriber ids
  std::unordered_map<uint64_t, int> in_flight_;  // subscriber id → subscriptions waiting for a load
  std::set<uint64_t> gone_;                      // closed while a load was in flight

  std::condition_variable load_cv_;
  std::deque<Load> loads_;
  bool stopping_ = false;
  std::thread loader_;

  std::mutex typing_mu_;
  std::unordered_map<std::string, TypingState> typing_;  // user '\n' conversation
  // Conversations above --typing-max-members: when their last typing relay went (ms).
  std::unordered_map<std::string, int64_t> conversation_typing_;
  size_t typing_pending_ = 0;
  bool typing_timer_armed_ = false;
  boost::asio::steady_timer typing_timer_;
};

}  // namespace tern::services
