// SessionReads: what a DeviceSession reads from the store, as plain values. A session runs
// these through StoreReads (store_reads.h): inline on the embedded store, on a reader thread
// in Redis mode, so that a connect or a replay never makes its loop wait on the network.
// The session applies the values on its loop afterwards.
//
// Thread-safety: every function here may run on any thread. They touch only the store, the
// Directory's caches, the sequencer's pending acks (behind a mutex) and the key directory's
// store reads: never a loop's or a session's state. The values are owned by the caller.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/error.h"
#include "base/ids.h"
#include "store/store.h"

namespace tern::services {

struct ServiceContext;

namespace session_reads {

// A read a session's position depends on failed (the session closes with 1011).
struct Failure {
  std::string_view step;  // "inbox", "user_index", "conversation", "member", "cursor", "replay"
  Error error;
};

// The user's membership row of a conversation, as the Directory has it.
struct Membership {
  enum class Kind {
    kUnknown,  // not known: the conversation is gone, or its read failed (`failure`)
    kNone,     // the user was never in it
    kMember,   // `member` (current or former)
  };
  Kind kind = Kind::kUnknown;
  store::Member member;
  std::optional<Failure> failure;
};

// What a new position is made of: the membership and the device's stored cursor.
struct PositionRows {
  std::string conversation_id;
  Membership membership;
  Seq cursor = 0;
  std::optional<Failure> failure;  // the cursor's read failed
  // The read that failed, if any (the membership's or the cursor's).
  const std::optional<Failure>& failed() const { return membership.failure ? membership.failure : failure; }
};

// Everything a connect needs before its replay starts (DeviceSession::start).
struct Opening {
  std::optional<Failure> failure;  // the first read that failed; later reads were not made
  std::vector<std::pair<std::string, Seq>> inbox;
  std::optional<std::string> low_prekeys;  // the "prekeys low" event frame, if due
  // Per inbox conversation, in inbox order; none if a conversation's, a membership's or the
  // cursors' read failed.
  std::vector<PositionRows> rows;
  std::vector<std::string> follow;  // read-side conversations the user is in
};

// Where the session stands in a conversation (its Position), for a page read.
struct Window {
  Seq sent = 0;
  Seq floor = 0;
  Seq limit = 0;
};

// One page of a conversation's log, with the membership it was read under.
struct Page {
  Membership membership;
  Seq cursor = 0;  // the stored cursor, when the session had no position yet
  bool read = false;  // false: nothing to read (the window is past its limit) or a failure
  std::vector<store::StoredMessage> messages;
  std::optional<Failure> failure;
};

// A membership change of one conversation (DeviceSession's recheck).
struct Recheck {
  std::string conversation_id;
  Membership membership;
  bool follow = false;  // read-side and the user is in it now
};

// `sent`, `floor` and `limit` of a window once `m` (a kMember row) applies: a member re-added
// after a removal starts a new era at its new joined_seq.
Window apply_membership(Window w, const store::Member& m);
// A new position's window: from the stored cursor, or the joined seq, or an ack still on its
// way to the store (a device may reconnect faster than its ack is written), the highest.
Window new_window(const store::Member& m, Seq cursor, Seq pending_ack);

Membership read_membership(ServiceContext& ctx, const std::string& user, const std::string& conversation_id);
PositionRows read_rows(ServiceContext& ctx, const DeviceRef& device, const std::string& conversation_id);
Opening read_opening(ServiceContext& ctx, const DeviceRef& device);
// `known`: the session's window, or none when it has no position in the conversation yet
// (then it is made from the stored cursor, the joined seq and the pending ack).
Page read_page(ServiceContext& ctx, const DeviceRef& device, const std::string& conversation_id,
               std::optional<Window> known, size_t page);
Recheck read_recheck(ServiceContext& ctx, const std::string& user, const std::string& conversation_id);

}  // namespace session_reads
}  // namespace tern::services
