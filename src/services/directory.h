// Read-mostly caches of the store's account and conversation data that every send consults:
// conversation snapshots (members with joined/left seqs) and each user's device list.
//
// Conversation snapshots are immutable (shared_ptr<const>) and replaced whole. Only the
// sequencer shard that owns a conversation replaces its snapshot, at the moment it sequences
// a membership change, so every send sequenced afterwards sees the new membership.
// Device lists are replaced by Accounts when a device is linked.
//
// Thread-safe (a mutex per map; held only for the map access). Owned by TernService.
// Size: one entry per conversation / user touched since start (proportional to the data,
// not to traffic); a later issue may add eviction.
#pragma once
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "store/store.h"

namespace tern::services {

using ConversationPtr = std::shared_ptr<const store::Conversation>;

// Membership lookups on a snapshot.
const store::Member* find_member(const store::Conversation& c, const std::string& user);
bool is_active_member(const store::Conversation& c, const std::string& user);

class Directory {
 public:
  explicit Directory(store::Store& store) : store_(store) {}

  // nullptr (not an error) when the conversation does not exist.
  Result<ConversationPtr> conversation(const std::string& id);
  void put_conversation(ConversationPtr snapshot);
  void forget_conversation(const std::string& id);

  Result<std::vector<uint32_t>> devices(const std::string& user);  // empty if no such user
  void put_devices(const std::string& user, std::vector<uint32_t> devices);

 private:
  store::Store& store_;
  std::mutex conv_mu_;
  std::unordered_map<std::string, ConversationPtr> conversations_;
  std::mutex dev_mu_;
  std::unordered_map<std::string, std::vector<uint32_t>> devices_;
};

}  // namespace tern::services
