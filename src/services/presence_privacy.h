// Who may see whose presence and last seen (docs/protocol.md §7, "Presence"). A subject's
// setting (user record "presence"):
//   contacts (default)  users with whom the subject has *accepted* a direct conversation:
//                       the subject created it (POST /v1/conversations) or sent a message
//                       in it, so a message request becomes accepted when answered;
//   everyone            every user the subject shares a conversation with (the older rule);
//   nobody              no one.
// A viewer whose own setting is `nobody` sees nobody's (as in WhatsApp), and a subject who
// blocks the viewer is never visible to it. Sharing a conversation is still required (the
// contact index decides that); this class adds the consent on top.
//
// Lazy and bounded: a user's policy (setting + the counterparts of its accepted direct
// conversations, at most kMaxAccepted) is read from the store on first need and kept in an
// LRU of `cache_users` users. Presence loads policies on its loader thread, never on an I/O
// thread (cached() / load()). Acceptances noted on the send path go through a second LRU of
// (user, conversation) pairs so a conversation's first send after a restart writes its record
// once (a blind put in the message's own batch) and later sends write nothing.
//
// Thread-safe (one mutex). Owned by TernService.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "base/lru_map.h"
#include "base/result.h"
#include "services/blocks.h"
#include "store/store.h"

namespace tern::services {

enum class PresenceVisibility { kContacts, kEveryone, kNobody };
const char* visibility_name(PresenceVisibility v);
bool parse_visibility(const std::string& s, PresenceVisibility& out);

class PresencePrivacy {
 public:
  static constexpr size_t kMaxAccepted = 10000;

  PresencePrivacy(store::Store& store, Blocks& blocks, size_t cache_users)
      : store_(store), blocks_(blocks), cache_(cache_users), accepted_pairs_(cache_users) {}

  bool cached(const std::string& user);
  // Reads the user's policy from the store into the cache (no-op if cached). Off the I/O threads.
  Result<void> load(const std::string& user);
  // May `viewer` see `subject`'s presence? Both policies must be cached (else false). The
  // caller has checked that they share a conversation.
  bool allowed(const std::string& subject, const std::string& viewer);
  // Whether `subject`'s own setting and consents admit `viewer` (its policy cached, else false),
  // before the viewer's setting and blocks: what the subject alone decides.
  bool setting_admits(const std::string& subject, const std::string& viewer);
  // Known to be refused: both policies cached and not allowed. (A live subscription whose
  // policies were evicted from the cache is left alone rather than ended on a guess.)
  bool denied(const std::string& subject, const std::string& viewer) {
    return cached(subject) && cached(viewer) && !allowed(subject, viewer);
  }
  // The user's setting (reads the store if needed).
  Result<PresenceVisibility> visibility(const std::string& user);
  void set_cached_visibility(const std::string& user, PresenceVisibility v);
  // Another node changed `user`'s setting or blocks (Bus::set_user_changed_sink), or events that
  // said so may have been missed (every user): the policy is read again at its next load. A
  // load in flight meanwhile is not kept.
  void forget(const std::string& user);
  void forget_all();

  // `user` accepted the direct conversation with `other`. known_accepted() answers from memory
  // only (false when unsure); accepted() records it in memory after the record is committed.
  bool known_accepted(const std::string& user, const std::string& conversation_id);
  void accepted(const std::string& user, const std::string& conversation_id, const std::string& other);
  // Called (outside the mutex, on the caller's thread) with the user after accepted(): a
  // subscription to it that waited for the consent may be answered now (Presence). Set once
  // before serving.
  void set_accepted_sink(std::function<void(const std::string& user)> sink) { accepted_sink_ = std::move(sink); }

 private:
  struct Policy {
    PresenceVisibility visibility = PresenceVisibility::kContacts;
    std::set<std::string> accepted;  // counterpart users
  };
  using PolicyPtr = std::shared_ptr<Policy>;
  bool admits_locked(const std::string& subject, const std::string& viewer);  // mu_ held

  store::Store& store_;
  Blocks& blocks_;
  std::mutex mu_;
  LruMap<std::string, PolicyPtr> cache_;
  LruMap<std::string, bool> accepted_pairs_;  // user '\n' conversation
  uint64_t generation_ = 0;  // (mu_) forgets so far
  // Acceptances of users not cached when they were committed: merged by a load() whose store
  // read may have missed them. Bounded (cleared past kMaxRecent; a load reads the store anyway).
  static constexpr size_t kMaxRecent = 10000;
  std::unordered_multimap<std::string, std::string> recent_;
  std::function<void(const std::string&)> accepted_sink_;
};

}  // namespace tern::services
