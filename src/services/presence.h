// Presence and typing: ephemeral, never stored as events, never replayed. A user is online
// while at least one of its devices is connected; when the last one leaves, last_seen is set
// (kept in the store so it survives a restart) and subscribers are told. Presence is visible
// only to users who share a conversation with the user (checked at subscribe time).
//
// Thread-safe: a mutex guards the subscription map; frames go out through the bus (each
// endpoint posts to its own strand). Bounded: at most max_presence_subscriptions per
// subscriber; more in one subscribe is an error. Owned by TernService.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "bus/bus.h"
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/service_options.h"

namespace tern::services {

class Presence {
 public:
  Presence(store::Store& store, GroupCommitter& committer, Directory& directory, bus::Bus& bus,
           const ServiceOptions& options);

  // Called by sessions after Bus::attach / Bus::detach with the returned device count.
  void device_attached(const std::string& user, size_t devices_online);
  void device_detached(const std::string& user, size_t devices_online);

  // Subscribes `subscriber` (an endpoint of `subscriber_user`, with a stable id) to users,
  // answering each visible user's current presence at once. Users who share no conversation
  // with the subscriber are ignored (as if unknown: no information leaks).
  Result<void> subscribe(uint64_t subscriber_id, const std::string& subscriber_user,
                         const std::shared_ptr<bus::Endpoint>& subscriber, const std::vector<std::string>& users);
  void unsubscribe_all(uint64_t subscriber_id);

  // Relays a typing frame to the other members' online devices.
  Result<void> typing(const DeviceRef& from, const std::string& conversation_id, bool active);

 private:
  bool share_conversation(const std::string& a, const std::string& b);
  std::shared_ptr<const bus::Notification> presence_frame(const std::string& user, bool online, int64_t last_seen);
  void broadcast(const std::string& user, bool online, int64_t last_seen);

  store::Store& store_;
  GroupCommitter& committer_;
  Directory& directory_;
  bus::Bus& bus_;
  const ServiceOptions& options_;
  std::mutex mu_;
  // watched user → subscriber id → endpoint
  std::unordered_map<std::string, std::map<uint64_t, std::weak_ptr<bus::Endpoint>>> watchers_;
  std::unordered_map<uint64_t, std::set<std::string>> watching_;  // subscriber id → watched users
};

}  // namespace tern::services
