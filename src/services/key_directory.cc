#include "services/key_directory.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <span>

#include "base/clock.h"
#include "base/metrics.h"
#include "crypto/xeddsa.h"
#include "services/warm_hold.h"

namespace tern::services {
namespace {

Counter& uploads = MetricsRegistry::global().counter("tern_key_uploads_total", "key uploads committed (PUT /v1/keys)");
Counter& prekeys_taken = MetricsRegistry::global().counter("tern_prekeys_taken_total",
                                                           "one-time prekeys handed out in bundles");
Counter& bundles_without_prekey = MetricsRegistry::global().counter(
    "tern_key_bundles_without_prekey_total", "bundles handed out without a one-time prekey (the device ran out)");
Counter& low_events = MetricsRegistry::global().counter("tern_prekeys_low_events_total",
                                                        "prekeys_low frames sent (on the drop and on connect)");

// The signature covers the signed prekey's 33-byte serialized public key, as in Signal.
bool signature_ok(const std::string& identity_key, const store::SignedPrekey& spk) {
  if (identity_key.size() != 33 || spk.signature.size() != 64) return false;
  const auto* ik = reinterpret_cast<const uint8_t*>(identity_key.data()) + 1;  // after the 0x05 type byte
  const auto* msg = reinterpret_cast<const uint8_t*>(spk.public_key.data());
  const auto* sig = reinterpret_cast<const uint8_t*>(spk.signature.data());
  return crypto::xeddsa_verify(std::span<const uint8_t, 32>(ik, 32), std::span<const uint8_t>(msg, spk.public_key.size()),
                               std::span<const uint8_t, 64>(sig, 64));
}

// More than any per-device cap: reading "all" of a device's one-time prekeys stays bounded
// even if the cap was lowered after they were stored.
constexpr size_t kReadAll = 100000;

}  // namespace

KeyDirectory::KeyDirectory(store::Store& store, GroupCommitter& committer, Directory& directory, bus::Bus& bus,
                           const ServiceOptions& options)
    : store_(store),
      committer_(committer),
      directory_(directory),
      bus_(bus),
      options_(options),
      registrations_(std::max<size_t>(1, options.directory_cache)) {}

KeyDirectory::Stripe& KeyDirectory::stripe(const std::string& device_key) {
  return stripes_[std::hash<std::string>{}(device_key) % kStripes];
}

std::string KeyDirectory::encode_low(size_t count) {
  return R"({"type":"prekeys_low","count":)" + std::to_string(count) + "}";
}

void KeyDirectory::remember_registration(const std::string& device_key, uint32_t registration_id) {
  std::lock_guard lock(reg_mu_);
  registrations_.emplace(device_key, registration_id) = registration_id;  // overwrite: this is newer
}

void KeyDirectory::forget_registration(const DeviceRef& device) {
  std::lock_guard lock(reg_mu_);
  registrations_.erase(device.key());
  ++reg_generation_;
}

void KeyDirectory::forget_registrations() {
  std::lock_guard lock(reg_mu_);
  registrations_.clear();
  ++reg_generation_;
}

Result<uint32_t> KeyDirectory::registration_id(const DeviceRef& device) {
  const std::string key = device.key();
  uint64_t generation = 0;
  {
    std::lock_guard lock(reg_mu_);
    if (const uint32_t* hit = registrations_.find(key)) return *hit;
    generation = reg_generation_;
  }
  if (auto held = WarmHold::held_registration(device, key)) return *held;  // evicted since the warm-up
  auto keys = store_.device_keys(device);
  if (!keys) return keys.error();
  const uint32_t reg = *keys ? (*keys)->registration_id : 0;
  std::lock_guard lock(reg_mu_);
  // Another node's upload was announced during the read, which may have missed it: answered,
  // not kept.
  if (generation != reg_generation_) return reg;
  // Insert only if absent: an upload that completed meanwhile wrote a newer value.
  return registrations_.emplace(key, reg);
}

bool KeyDirectory::registrations_cached(const std::vector<DeviceRef>& devices, std::vector<uint32_t>* ids) {
  if (ids) ids->reserve(devices.size());
  std::lock_guard lock(reg_mu_);
  for (const auto& d : devices) {
    const uint32_t* hit = registrations_.find(d.key());
    if (!hit) return false;
    if (ids) ids->push_back(*hit);
  }
  return true;
}

Result<void> KeyDirectory::prefetch_registrations(const std::vector<DeviceRef>& devices) {
  std::vector<DeviceRef> missing;
  uint64_t generation = 0;
  {
    std::lock_guard lock(reg_mu_);
    for (const auto& d : devices)
      if (!registrations_.find(d.key())) missing.push_back(d);
    generation = reg_generation_;
  }
  if (missing.empty()) return {};
  auto keys = store_.device_keys_of(missing);
  if (!keys) return keys.error();
  std::lock_guard lock(reg_mu_);
  if (generation != reg_generation_) return {};  // as registration_id(): read again at use
  for (size_t i = 0; i < missing.size(); ++i)
    // Insert only if absent: an upload that completed meanwhile wrote a newer value.
    registrations_.emplace(missing[i].key(), (*keys)[i] ? (*keys)[i]->registration_id : 0);
  return {};
}

Result<KeyStatus> KeyDirectory::status(const DeviceRef& me) {
  auto keys = store_.device_keys(me);
  if (!keys) return keys.error();
  KeyStatus st;
  if (*keys) {
    st.signed_prekey_id = (*keys)->signed_prekey.id;
    const int64_t until = (*keys)->previous_replaced_at + options_.signed_prekey_grace_ms;
    if ((*keys)->previous_signed_prekey && until > bus_.clock_ms()) {
      st.previous_signed_prekey_id = (*keys)->previous_signed_prekey->id;
      st.previous_signed_prekey_until = until;
    }
  }
  auto otks = store_.one_time_prekeys(me, std::max<size_t>(options_.max_prekeys_per_device, 1));
  if (!otks) return otks.error();
  st.one_time_prekeys = otks->size();
  return st;
}

void KeyDirectory::upload(const DeviceRef& me, KeyUpload up, std::function<void(Result<KeyStatus>)> done) {
  const std::string dkey = me.key();
  Stripe& s = stripe(dkey);
  store::Batch batch;
  uint32_t new_registration = 0;
  bool registration_changed = false;  // the other nodes' cached registration id goes
  // Checks and builds the batch under the stripe's lock; `done` runs after it is released.
  auto prepare = [&]() -> Result<void> {
    std::lock_guard lock(s.mu);
    // One upload per device at a time: each builds on the record it read.
    if (s.uploading.count(dkey))
      return make_error(ErrorCode::kRateLimited, "a key upload of this device is in progress; retry");
    auto cur = store_.device_keys(me);
    if (!cur) return cur.error();
    if (!*cur && (!up.identity_key || !up.registration_id || !up.signed_prekey))
      return make_error(ErrorCode::kInvalidArgument,
                             "the first upload needs identity_key, registration_id and signed_prekey");
    store::DeviceKeys next = *cur ? **cur : store::DeviceKeys{};
    const bool new_identity = up.identity_key && (!*cur || *up.identity_key != (*cur)->identity_key);
    if (*cur && new_identity) {
      if (!up.registration_id || *up.registration_id == (*cur)->registration_id)
        return make_error(ErrorCode::kInvalidArgument, "a new identity_key needs a new registration_id");
      if (!up.signed_prekey)
        return make_error(ErrorCode::kInvalidArgument, "a new identity_key needs a new signed_prekey");
    }
    const int64_t now = bus_.clock_ms();  // the grace is compared on every node: the shared clock
    if (new_identity) {
      next.identity_key = *up.identity_key;
      next.previous_signed_prekey.reset();
      next.previous_replaced_at = 0;
    }
    if (up.registration_id) next.registration_id = *up.registration_id;
    if (up.signed_prekey) {
      if (!signature_ok(next.identity_key, *up.signed_prekey))
        return make_error(ErrorCode::kBadSignature, "signed_prekey signature does not verify with the identity key");
      if (!*cur || new_identity) {
        next.signed_prekey = *up.signed_prekey;
      } else if (!(*up.signed_prekey == (*cur)->signed_prekey)) {  // a rotation
        next.previous_signed_prekey = (*cur)->signed_prekey;
        next.previous_replaced_at = now;
        next.signed_prekey = *up.signed_prekey;
      }
    }
    if (next.previous_signed_prekey && next.previous_replaced_at + options_.signed_prekey_grace_ms <= now) {
      next.previous_signed_prekey.reset();
      next.previous_replaced_at = 0;
    }

    // One-time prekeys: the stored ones (all dropped with a new identity) plus the new ones.
    auto stored = store_.one_time_prekeys(me, kReadAll);
    if (!stored) return stored.error();
    std::set<uint32_t> ids;
    if (!new_identity)
      for (const auto& k : *stored) ids.insert(k.id);
    for (const auto& k : up.one_time_prekeys) ids.insert(k.id);
    if (ids.size() > options_.max_prekeys_per_device)
      return make_error(ErrorCode::kLimitExceeded, "at most " + std::to_string(options_.max_prekeys_per_device) +
                                                            " one-time prekeys per device");
    if (!*cur || !(next == **cur)) batch.add(store::PutDeviceKeys{me, next});
    if (new_identity)
      for (const auto& k : *stored) batch.add(store::DeleteOneTimePrekey{me, k.id});
    for (auto& k : up.one_time_prekeys) batch.add(store::PutOneTimePrekey{me, std::move(k)});
    new_registration = next.registration_id;
    registration_changed = !*cur || (*cur)->registration_id != next.registration_id;
    if (!batch.empty()) s.uploading.insert(dkey);
    return {};
  };
  if (auto r = prepare(); !r) return done(r.error());
  if (batch.empty()) return done(status(me));  // nothing changed
  committer_.submit(std::move(batch), [this, me, dkey, new_registration, registration_changed,
                                       done = std::move(done)](const Result<void>& r) {
    {
      Stripe& s = stripe(dkey);
      std::lock_guard lock(s.mu);
      s.uploading.erase(dkey);
    }
    if (!r) return done(r.error());
    uploads.inc();
    remember_registration(dkey, new_registration);
    // A new installation: the other nodes' send check must compare with the new id.
    if (registration_changed) bus_.announce_keys_changed(me);
    done(status(me));
  });
}

Result<std::vector<DeviceIdentity>> KeyDirectory::identities(const std::string& user) {
  auto devices = directory_.devices(user);
  if (!devices) return devices.error();
  if (devices->empty()) return make_error(ErrorCode::kNotFound, "unknown user");
  std::vector<DeviceIdentity> out;
  for (uint32_t d : *devices) {
    auto keys = store_.device_keys(DeviceRef{user, d});
    if (!keys) return keys.error();
    DeviceIdentity id{d, std::nullopt, 0};
    if (*keys) {
      id.identity_key = (*keys)->identity_key;
      id.registration_id = (*keys)->registration_id;
    }
    out.push_back(std::move(id));
  }
  return out;
}

void KeyDirectory::take_bundles(const std::string& user, std::optional<uint32_t> device,
                                std::function<void(Result<std::vector<Bundle>>)> done) {
  auto devices = directory_.devices(user);
  if (!devices) return done(devices.error());
  if (devices->empty()) return done(make_error(ErrorCode::kNotFound, "unknown user"));
  std::vector<uint32_t> targets = *devices;
  if (device) {
    if (std::find(targets.begin(), targets.end(), *device) == targets.end())
      return done(make_error(ErrorCode::kNotFound, "unknown device"));
    targets = {*device};
  }
  const size_t threshold = options_.prekeys_low_threshold;
  auto bundles = std::make_shared<std::vector<Bundle>>();
  struct Taken {
    DeviceRef device;
    uint32_t id;
    std::optional<size_t> low;  // the count to report when this take dropped it below the threshold
  };
  auto taken = std::make_shared<std::vector<Taken>>();
  store::Batch batch;
  // Marks already placed are released (and nothing committed) when a later read fails.
  auto release = [this](const std::vector<Taken>& list) {
    for (const Taken& t : list) {
      const std::string k = t.device.key();
      Stripe& s = stripe(k);
      std::lock_guard lock(s.mu);
      auto it = s.taking.find(k);
      if (it == s.taking.end()) continue;
      it->second.erase(t.id);
      if (it->second.empty()) s.taking.erase(it);
    }
  };
  for (uint32_t d : targets) {
    const DeviceRef ref{user, d};
    auto keys = store_.device_keys(ref);
    if (!keys) {
      release(*taken);
      return done(keys.error());
    }
    if (!*keys) continue;
    Bundle b{d, (*keys)->registration_id, (*keys)->identity_key, (*keys)->signed_prekey, std::nullopt};
    const std::string k = ref.key();
    Stripe& s = stripe(k);
    std::optional<Error> failed;
    {
      std::lock_guard lock(s.mu);
      std::set<uint32_t>& in_flight = s.taking[k];
      // Enough to skip every key in flight and still tell whether threshold or more remain.
      const size_t want = in_flight.size() + threshold + 1;
      auto list = store_.one_time_prekeys(ref, want);
      if (!list) {  // nothing taken for this device; the mark entry goes below if empty
        failed = list.error();
        list = std::vector<store::OneTimePrekey>{};
      }
      size_t free = 0;
      for (const auto& otk : *list) {
        if (in_flight.count(otk.id)) continue;
        if (!b.one_time_prekey) b.one_time_prekey = otk;
        else ++free;
      }
      if (b.one_time_prekey) {
        in_flight.insert(b.one_time_prekey->id);
        const bool exact = list->size() < want;  // the whole list was read: `free` is the count left
        std::optional<size_t> low;
        if (exact && threshold > 0 && free == threshold - 1) low = free;
        taken->push_back(Taken{ref, b.one_time_prekey->id, low});
        batch.add(store::DeleteOneTimePrekey{ref, b.one_time_prekey->id, /*take=*/true});
      } else if (in_flight.empty()) {
        s.taking.erase(k);
      }
    }
    if (failed) {
      release(*taken);
      return done(std::move(*failed));
    }
    bundles->push_back(std::move(b));
  }
  if (device && bundles->empty()) return done(make_error(ErrorCode::kNotFound, "this device has no keys"));
  for (const Bundle& b : *bundles)
    if (!b.one_time_prekey) bundles_without_prekey.inc();
  if (batch.empty()) return done(std::move(*bundles));
  committer_.submit(std::move(batch), [this, bundles, taken, release, done = std::move(done)](const Result<void>& r) {
    release(*taken);  // committed: the keys are gone from the store; failed: they stay there
    if (!r) return done(r.error());
    prekeys_taken.inc(taken->size());
    for (const Taken& t : *taken) {
      if (!t.low) continue;
      low_events.inc();
      auto n = std::make_shared<bus::Notification>();
      n->kind = bus::Notification::Kind::kFrame;
      n->frame = std::make_shared<const std::string>(encode_low(*t.low));
      bus_.publish(t.device, n);
    }
    done(std::move(*bundles));
  });
}

std::optional<std::string> KeyDirectory::low_frame(const DeviceRef& device) {
  const size_t threshold = options_.prekeys_low_threshold;
  if (threshold == 0) return std::nullopt;
  auto keys = store_.device_keys(device);
  if (!keys || !*keys) return std::nullopt;  // no keys yet: the client uploads them anyway
  auto list = store_.one_time_prekeys(device, threshold);
  if (!list || list->size() >= threshold) return std::nullopt;
  low_events.inc();
  return encode_low(list->size());
}

}  // namespace tern::services
