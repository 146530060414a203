// KeyDirectory: the server side of end-to-end encryption. It stores each device's public
// keys (identity key, registration id, signed prekey and the one it replaced, one-time
// prekeys) and hands out prekey bundles; it never sees a private key or a plaintext.
//
// The rules it keeps:
//  - A signed prekey is stored only if its XEdDSA signature by the device's identity key
//    verifies (kBadSignature otherwise). A rotation (a signed prekey with another id or key)
//    keeps the replaced one for `signed_prekey_grace_ms`, reported to its owner only (status())
//    so the client knows how long to keep the old private key; bundles carry the current one.
//  - A new identity key is a new installation: it must come with a new registration id and a
//    new signed prekey, and it drops every one-time prekey and the previous signed prekey.
//  - A one-time prekey goes to exactly one requester. Takes of one device are serialized by
//    a striped mutex (a FiberMutex, base/fiber_mutex.h: held across a store read, in a fiber
//    on Redis): under it, the taker picks the lowest id that no other take has in flight
//    and marks it; the delete is committed through the group committer and the bundle answered
//    only after that commit, then the mark goes. So two requesters never get the same key
//    (in flight: marked; committed: deleted), even across a crash (the answer follows the fsync).
//    The marks are per node: on a store shared by several nodes (Redis) the delete is a
//    `take`, which the store refuses (the batch fails with `unavailable`, the requester
//    retries) when another node handed that key out first.
//  - A device whose count drops below `prekeys_low_threshold` (the take that leaves exactly
//    threshold - 1) gets a {"type":"prekeys_low","count":N} frame through the bus; a device
//    that connects while below gets it from low_frame().
//
// Thread-safety: every method from any thread. `done` callbacks run where the group
// committer completes (the submitting loop, or the writer thread for non-loop callers).
// Owned by TernService; borrows the store, committer, directory and bus.
#pragma once
#include <array>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/fiber_mutex.h"
#include "base/lru_map.h"
#include "bus/bus.h"
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/service_options.h"
#include "store/store.h"

namespace tern::services {

// What a PUT /v1/keys carries, decoded (raw key bytes). Every part is optional except on the
// first upload of a device (identity key, registration id and signed prekey then).
struct KeyUpload {
  std::optional<std::string> identity_key;  // 33 bytes, 0x05 ‖ u
  std::optional<uint32_t> registration_id;  // >= 1
  std::optional<store::SignedPrekey> signed_prekey;
  std::vector<store::OneTimePrekey> one_time_prekeys;  // distinct ids
};

// A device's own view of its keys.
struct KeyStatus {
  size_t one_time_prekeys = 0;  // remaining (up to max_prekeys_per_device)
  std::optional<uint32_t> signed_prekey_id;
  std::optional<uint32_t> previous_signed_prekey_id;  // still within the grace period
  int64_t previous_signed_prekey_until = 0;           // ms; when the server drops it
};

struct Bundle {
  uint32_t device = 0;
  uint32_t registration_id = 0;
  std::string identity_key;
  store::SignedPrekey signed_prekey;
  std::optional<store::OneTimePrekey> one_time_prekey;  // none when the device ran out
};

struct DeviceIdentity {
  uint32_t device = 0;
  std::optional<std::string> identity_key;  // none: the device has not uploaded keys
  uint32_t registration_id = 0;
};

class KeyDirectory {
 public:
  static constexpr size_t kStripes = 64;

  KeyDirectory(store::Store& store, GroupCommitter& committer, Directory& directory, bus::Bus& bus,
               const ServiceOptions& options);

  void upload(const DeviceRef& me, KeyUpload upload, std::function<void(Result<KeyStatus>)> done);
  Result<KeyStatus> status(const DeviceRef& me);
  // Every device of the user with its identity key; kNotFound for an unknown user.
  Result<std::vector<DeviceIdentity>> identities(const std::string& user);
  // Bundles of the user's devices that have keys (or of one device: kNotFound when it has
  // none), each with one one-time prekey taken if any is left.
  void take_bundles(const std::string& user, std::optional<uint32_t> device,
                    std::function<void(Result<std::vector<Bundle>>)> done);
  // The registration id of the device's current keys, 0 if it has none. Cached (LRU); the
  // send path's stale-device check calls it.
  Result<uint32_t> registration_id(const DeviceRef& device);
  // Brings the registration ids of those devices not cached into the cache with one store call
  // (Store::device_keys_of: one round trip on Redis): a group's warm-up, on a reader thread.
  // Whether every device's registration id is cached (never reads the store); if so, and
  // `ids` is given, it gets them in the order of `devices` (a warm check's hold, warm_hold.h).
  bool registrations_cached(const std::vector<DeviceRef>& devices, std::vector<uint32_t>* ids = nullptr);
  Result<void> prefetch_registrations(const std::vector<DeviceRef>& devices);
  // Another node stored new keys for the device (Bus::announce_keys_changed): its cached
  // registration id goes; a read in flight meanwhile is answered but not kept.
  void forget_registration(const DeviceRef& device);
  void forget_registrations();  // every device's: such announcements may have been missed
  // The prekeys_low frame for a device that connects while below the threshold.
  std::optional<std::string> low_frame(const DeviceRef& device);

  static std::string encode_low(size_t count);

 private:
  struct Stripe {
    FiberMutex mu;  // held across store reads
    std::unordered_map<std::string, std::set<uint32_t>> taking;  // device key → ids in flight
    std::unordered_set<std::string> uploading;                   // devices with an upload in flight
  };
  Stripe& stripe(const std::string& device_key);
  void remember_registration(const std::string& device_key, uint32_t registration_id);

  store::Store& store_;
  GroupCommitter& committer_;
  Directory& directory_;
  bus::Bus& bus_;
  const ServiceOptions& options_;
  std::array<Stripe, kStripes> stripes_;
  std::mutex reg_mu_;
  LruMap<std::string, uint32_t> registrations_;  // device key → registration id (0: no keys)
  uint64_t reg_generation_ = 0;  // (reg_mu_) forgets so far
};

}  // namespace tern::services
