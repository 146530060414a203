// Accounts: registration, device linking (directly by a signed-in device, or with a one-time
// link code shown on a signed-in device and entered on the new one), and token checks.
// Tokens are returned once and stored only as hashes.
//
// Thread-safe. Writes go through the GroupCommitter; a mutex serializes the check-then-write
// of user names and device numbers (with a set of names whose creation is in flight). It is
// held across the store read of the check, so it is a FiberMutex (base/fiber_mutex.h): on
// Redis the HTTP handlers that call in run in fibers.
// Link codes (10 minutes, single use, at most N per user) live where the new device can redeem
// them: in a store the nodes share (store.h add_link_code/take_link_code: on Redis, by hash,
// timed by Redis's clock), so a code shown through one node is redeemed through any; with an
// embedded store, in this node's memory (losing them in a restart costs the user one more code,
// nothing else). Guessing is throttled by the guesser,
// never by the target: each source address may try kGuessBurst codes, then one per minute
// (kGuessPerMinute); beyond that its attempts are refused without looking. Every failure,
// wrong, expired, unknown user or throttled, gets the same answer (404 not_found), so nothing
// tells whether a user has codes outstanding, and nobody but the user can revoke its codes.
#pragma once
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "base/fiber_mutex.h"
#include "base/ids.h"
#include "base/result.h"
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/rate_limiter.h"
#include "services/service_options.h"

namespace tern::services {

struct Credentials {
  std::string user;
  uint32_t device = 0;
  std::string token;
};

struct LinkCode {
  std::string code;
  int64_t expires_at = 0;
};

class Accounts {
 public:
  using CredentialsDone = std::function<void(Result<Credentials>)>;  // runs on the writer thread

  Accounts(store::Store& store, GroupCommitter& committer, Directory& directory, const ServiceOptions& options);

  void register_user(const std::string& user, CredentialsDone done);
  void add_device(const std::string& user, CredentialsDone done);
  // Called (on the writer thread) after a device link committed; the composition root
  // announces it to the other nodes (Bus::announce_user_changed). Set before serving.
  void set_devices_changed(std::function<void(const std::string& user)> fn) { devices_changed_ = std::move(fn); }
  Result<DeviceRef> authenticate(const std::string& token);

  Result<LinkCode> create_link_code(const DeviceRef& by);
  // `source`: the caller's address (the throttling key).
  void redeem_link_code(const std::string& user, const std::string& code, const std::string& source,
                        CredentialsDone done);

  static constexpr double kGuessBurst = 10;
  static constexpr double kGuessPerMinute = 1;

 private:
  void write_device(const std::string& user, uint32_t device, bool new_user, CredentialsDone done);
  // Removes the code from this node's memory if held and unexpired: true if it was.
  bool take_local_link_code(const std::string& user, const std::string& code);
  std::function<void(const std::string&)> devices_changed_;

  store::Store& store_;
  GroupCommitter& committer_;
  Directory& directory_;
  const ServiceOptions& options_;
  FiberMutex mu_;
  std::set<std::string> creating_;  // user names whose registration is being committed
  struct PendingCode { std::string code; int64_t expires_at; };
  std::unordered_map<std::string, std::vector<PendingCode>> link_codes_;  // by user; unused on a shared store
  KeyedRateLimiter guesses_;  // redeem attempts by source address
};

}  // namespace tern::services
