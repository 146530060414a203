// WarmHold: what a conversation's warm-up read on a reader thread (SequencerCore::warm_up),
// held for the work that waited for it, so that an entry the caches evicted meanwhile (the
// directory's snapshots and device lists, the key directory's registration ids, Blocks'
// lists: LRUs shared by every thread) is answered from here instead of a store read on the
// loop (Redis mode: a network round trip).
//
// The caches answer first (an entry put since the read is newer); the hold only answers
// their misses. It lives as long as the conversation's gate (Shard::Gate::held): the work
// queued behind the read, milliseconds, so it is no older than what the warm-up itself read.
//
// A warm conversation's check on the loop (SequencerCore::warm) keeps what it found in the
// caches the same way, for the one piece of work that runs right after it: another thread's
// insert may evict an entry, or a bus invalidation drop it, between the check and the use.
// It keeps them flat (checked_devices), as the check lists them, since it runs for every
// piece of work: a lookup scans them, on a cache miss only.
//
// A membership change's named users' device lists, read by the HTTP request's thread before
// the change reaches the loop (Sequencer::prefetch_devices), are held the same way for it
// (a request's hold: it read no conversation). A change parked behind a failed batch of its
// conversation takes its request's hold along (request_hold(); SequencerCore::settled_state),
// so it is still answered from there when the change runs again after the reload.
//
// Thread-safety: a WarmHold is built on the reader thread, then only read (const) on the
// owning loop. Scope adds a hold to the calling thread's (thread_local) stack, which the
// caches consult on a miss, innermost first; it is removed when the scope ends. The stack
// shares ownership, so a hold outlives no scope that still names it.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "store/store.h"

namespace tern::services {

struct WarmHold {
  std::string conversation_id;
  bool conversation_read = false;  // `conversation` holds the snapshot read (null: none)
  std::shared_ptr<const store::Conversation> conversation;
  std::unordered_map<std::string, std::vector<uint32_t>> devices;  // by user (empty: no such user)
  std::unordered_map<std::string, uint32_t> registrations;       // by device key (0: no keys)
  std::map<std::pair<std::string, std::string>, bool> blocked;   // (blocker, other) → blocks
  // A warm check's: the members' devices in member order, and their registration ids in the
  // same order (empty: not checked).
  std::vector<DeviceRef> checked_devices;
  std::vector<uint32_t> checked_registrations;

  class Scope {
   public:
    explicit Scope(std::shared_ptr<const WarmHold> hold);  // null: nothing added
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    const bool pushed_;
  };

  // Lookups of the current hold; nullopt: no hold, or it did not read that entry.
  static std::optional<std::shared_ptr<const store::Conversation>> held_conversation(const std::string& id);
  static std::optional<std::vector<uint32_t>> held_devices(const std::string& user);
  static std::optional<uint32_t> held_registration(const DeviceRef& device, const std::string& device_key);
  static std::optional<bool> held_block(const std::string& blocker, const std::string& other);
  // The innermost hold on this thread's stack that read no conversation (a membership
  // change's request hold), or null. A conversation's warm-up hold is never returned: its
  // snapshot may be older than a reload the caller's work will wait for.
  static std::shared_ptr<const WarmHold> request_hold();
};

}  // namespace tern::services
