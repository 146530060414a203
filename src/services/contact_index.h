// Who shares a conversation with whom: for each loaded user, the conversations it is an
// active member of (with the snapshot that was counted) and, per counterpart user, how many
// of them they share. Presence asks it whether two users may see each other's presence in
// O(1), whatever the number of conversations, and the HTTP API asks how many conversations a
// user is in (the per-user cap).
//
// Users are loaded lazily (Presence loads them from the store on its loader thread, never on
// an I/O thread) and kept in an LRU bounded by `max_entries` (conversation + counterpart
// entries over all loaded users). Users pinned by Presence (they hold subscriptions) are never
// evicted: their counts must stay exact so a subscription can end when the last shared
// conversation does. Membership changes are applied to every loaded member (apply()).
//
// Applying a snapshot is idempotent (the snapshot counted for each conversation is kept and
// replaced), so a conversation changed while its member was being loaded is simply applied
// again with its latest snapshot.
//
// Not thread-safe: Presence holds its mutex around every call.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "services/directory.h"

namespace tern::services {

class ContactIndex {
 public:
  explicit ContactIndex(size_t max_entries) : max_entries_(max_entries) {}

  bool loaded(const std::string& user) const { return users_.count(user) != 0; }
  // Installs a freshly loaded user (its active conversations' snapshots), replacing any entry.
  void install(const std::string& user, const std::vector<ConversationPtr>& conversations);
  // Applies the latest snapshot of a conversation (nullptr: it does not exist) to `user`, if
  // loaded. Appends to `unshared` each counterpart `user` no longer shares any conversation with.
  void apply(const std::string& user, const std::string& conversation_id, const ConversationPtr& snapshot,
             std::vector<std::string>* unshared);

  // Both require `user` loaded (false / 0 otherwise); they count as a use for the LRU.
  bool shares(const std::string& user, const std::string& other);
  size_t conversations(const std::string& user);

  void pin(const std::string& user);
  void unpin(const std::string& user);
  size_t entries() const { return entries_; }
  size_t users() const { return users_.size(); }

 private:
  struct User {
    std::unordered_map<std::string, ConversationPtr> conversations;  // active, as counted
    std::unordered_map<std::string, uint32_t> counterparts;          // user → shared conversations
    std::list<std::string>::iterator lru;
    uint32_t pins = 0;
  };
  void touch(User& u);
  void count(User& u, const std::string& self, const store::Conversation& c, int delta,
             std::vector<std::string>* unshared);
  void evict(const std::string& keep);

  const size_t max_entries_;
  size_t entries_ = 0;
  std::list<std::string> lru_;  // most recent first
  std::unordered_map<std::string, User> users_;
};

}  // namespace tern::services
