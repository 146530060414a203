// Accounts: registration, device linking (directly by a signed-in device, or with a one-time
// link code shown on a signed-in device and entered on the new one), and token checks.
// Tokens are returned once and stored only as hashes.
//
// Thread-safe. Writes go through the GroupCommitter; a mutex serializes the check-then-write
// of user names and device numbers (with a set of names whose creation is in flight).
// Link codes live in memory only (10 minutes, single use, at most N per user): losing them in
// a restart costs the user one more code, nothing else. Guessing is bounded: the 5th wrong
// code for a user drops all of that user's outstanding codes (answer: rate_limited).
#pragma once
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "base/ids.h"
#include "base/result.h"
#include "services/directory.h"
#include "services/group_committer.h"
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
  Result<DeviceRef> authenticate(const std::string& token);

  Result<LinkCode> create_link_code(const DeviceRef& by);
  void redeem_link_code(const std::string& user, const std::string& code, CredentialsDone done);

 private:
  void write_device(const std::string& user, uint32_t device, bool new_user, CredentialsDone done);

  store::Store& store_;
  GroupCommitter& committer_;
  Directory& directory_;
  const ServiceOptions& options_;
  std::mutex mu_;
  std::set<std::string> creating_;  // user names whose registration is being committed
  struct PendingCode { std::string code; int64_t expires_at; };
  std::unordered_map<std::string, std::vector<PendingCode>> link_codes_;  // by user
  std::unordered_map<std::string, int> failed_redeems_;  // by user; reset when codes are dropped
};

}  // namespace tern::services
