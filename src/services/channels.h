// Channels: broadcast conversations, on the channel's owning loop. A channel lists only its
// owner (the first listed member, who created it) and admins; its subscribers are rows of the
// user index (user → channel, joined_seq) plus a count in the channel's meta, so a
// subscription costs two small writes however many subscribers there are, and the
// conversation record never grows with them. Joining and leaving use no seq and no system
// message: a subscriber sees the posts after its join (joined_seq = head + 1).
//
// Public channels are joined by id; private ones only through an admin's add (a private or
// unknown channel answers a join with not_found, so an id reveals nothing). At most
// --max-subscribers per channel. The owner cannot leave; only the owner names admins.
// After each commit the affected users' sessions get a kMembership notification, so they
// start (or stop) following the channel live without reconnecting.
//
// Thread-safety: every method only on the owning loop of the channel (Sequencer routes
// there); callbacks run on that loop. Owned by Sequencer; borrows the core.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "proto/http_shapes.h"
#include "services/sequencer_core.h"

namespace tern::services {

struct SubscriptionInfo {
  Seq joined_seq = 0;
  uint64_t subscribers = 0;
};

struct ChannelInfo {
  ConversationPtr conversation;
  Seq head = 0;
  std::vector<std::pair<Seq, uint64_t>> views;  // recent posts, oldest first
};

class Channels {
 public:
  using JoinDone = std::function<void(Result<SubscriptionInfo>)>;
  using CountDone = std::function<void(Result<uint64_t>)>;
  using AdminsDone = std::function<void(Result<std::vector<std::string>>)>;
  using InfoDone = std::function<void(Result<ChannelInfo>)>;

  explicit Channels(SequencerCore& core) : core_(core) {}

  // In Redis mode (offloaded reads) the store reads a join makes, the user's subscription row
  // and (if it is not subscribed) its user index, to count the read-side conversations it is
  // in, run on a reader thread first (prefetch, through SequencerCore::read_then); the
  // channel's later work waits behind them. With the embedded store they are inline.
  void join(Shard& shard, const DeviceRef& actor, const std::string& channel_id, JoinDone done);
  // The subscription row, likewise (Redis: a reader thread, through prefetch).
  void leave(Shard& shard, const DeviceRef& actor, const std::string& channel_id, CountDone done);
  // An admin adds or removes subscribers (the way into a private channel). In Redis mode the
  // rows these changes read (the actor's, each named user's, their device lists) are read on
  // a reader thread first (prefetch), then the change runs on this loop with them.
  void change_subscribers(Shard& shard, const DeviceRef& actor, const std::string& channel_id,
                          const proto::MembersRequest& request, CountDone done);
  // The owner names or drops admins (an added admin is subscribed if it was not).
  void change_admins(Shard& shard, const DeviceRef& actor, const std::string& channel_id,
                     const proto::MembersRequest& request, AdminsDone done);
  // The channel's record and head as this node has them, and the views it counted
  // (channel_views.h: the node that sequences the channel counts them).
  void info(Shard& shard, const std::string& channel_id, InfoDone done);

 private:
  struct Change {
    // Users whose subscription row is written, with their joined_seq (0: from the next seq).
    std::vector<std::pair<std::string, Seq>> subscribe;
    std::vector<std::string> unsubscribe;  // users that stop being subscribers
    bool subscribing(const std::string& u) const;
  };
  // The channel, or an error: not_found unless it is a channel `actor` may act on.
  Result<ConversationPtr> channel(const std::string& channel_id);
  // Why `user` may not do this: forbidden for a subscriber, not_found for anyone else.
  Error refusal(const store::Conversation& c, const std::string& user, const char* why);
  // not_found if no such user (nullopt if it exists).
  std::optional<Error> unknown_user(const std::string& user);
  // The seq from which `user` subscribes, 0 if not (this loop's pending changes first, then
  // the store).
  Result<Seq> subscribed(ConvState& cs, const store::Conversation& c, const std::string& user);
  static bool is_pending(const ConvState& cs, const std::string& user);
  // The read-side conversations (channels, large groups) `user` is in: a user index read.
  static Result<size_t> count_following(store::Store& store, const std::string& user);
  // Rows read off the loop for the work being run again (Redis mode): user → its row as
  // Directory::member gives it; with `count`, the actor's count_following when it is not
  // subscribed to a public channel. Set only while that work runs on this loop.
  struct Prefetched {
    std::string channel_id;  // the rows are of this channel's membership
    std::unordered_map<std::string, std::optional<store::Member>> rows;
    std::optional<size_t> following;
    // The named users' device lists as read (empty: no such user, which the directory does
    // not cache), so that unknown_user() reads nothing on the loop.
    std::unordered_map<std::string, std::vector<uint32_t>> devices;
  };
  // What the running re-run read, set around `again` on the calling loop's thread. Per thread:
  // one Channels serves every loop (Sequencer's), and another loop's work must not see it.
  static thread_local const Prefetched* prefetched_;
  // Redis mode: reads the rows of `actor` and of the users `request` names (but those with a
  // change pending on this loop) and the named users' device lists on a reader thread, then
  // runs `again` with them (or `fail`); true. Else false: run now. In a re-run, reads again
  // only the rows of users whose pending change completed during the read (no row was read
  // for them, and no change of theirs can start meanwhile: bounded by the users named).
  bool prefetch(Shard& shard, const std::string& channel_id, const DeviceRef& actor, const proto::MembersRequest& request,
                bool count, std::function<void()> again, std::function<void(const Error&)> fail);
  // An admin's (or, with owner_only, the owner's) change to the channel's lists: the record
  // as it is, the conversation's state on this loop, and the copy the change edits.
  struct Edit {
    ConversationPtr conv;
    ConvState* cs = nullptr;
    std::shared_ptr<store::Conversation> next;
  };
  Result<Edit> begin_edit(Shard& shard, const DeviceRef& actor, const std::string& channel_id, bool owner_only,
                          const char* why);
  // Commits a new snapshot plus the subscription rows of `change`; answers with the count.
  void apply(ConvState& cs, ConversationPtr before, std::shared_ptr<store::Conversation> next, Change change,
             std::function<void(Result<void>)> done);
  // A join of a user already subscribed, or a leave of one who is not: nothing to change,
  // unless the store may hold a change half made (store::Store::finishes_changes_later: on a
  // Redis Cluster the row may be that of a join whose node died before it wrote the record).
  // Then the record is committed unchanged, which finishes such a change first: refused
  // (`exists`), made again from the record read again (Sequencer::change_channel), and
  // answered with the count that counts it. `done` as apply's.
  void settle(ConvState& cs, ConversationPtr conv, std::function<void(Result<void>)> done);

  SequencerCore& core_;
};

}  // namespace tern::services
