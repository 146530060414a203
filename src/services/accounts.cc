#include "services/accounts.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "services/token.h"
#include "services/user_records.h"

namespace tern::services {
namespace {
constexpr int64_t kLinkCodeTtlMs = 10 * 60 * 1000;
Error too_many_codes() {
  return make_error(ErrorCode::kRateLimited, "too many outstanding link codes; use or wait for one");
}
}  // namespace

Accounts::Accounts(store::Store& store, GroupCommitter& committer, Directory& directory,
                   const ServiceOptions& options)
    : store_(store),
      committer_(committer),
      directory_(directory),
      options_(options),
      guesses_(kGuessPerMinute / 60.0, kGuessBurst, options.rate_limiter_keys, {&store, "redeem"}) {}

void Accounts::register_user(const std::string& user, CredentialsDone done) {
  {
    std::lock_guard lock(mu_);
    auto exists = store_.user_exists(user);
    if (!exists) return done(exists.error());
    if (*exists || creating_.count(user)) return done(make_error(ErrorCode::kExists, "user already exists"));
    creating_.insert(user);
  }
  write_device(user, 1, /*new_user=*/true, std::move(done));
}

void Accounts::add_device(const std::string& user, CredentialsDone done) {
  uint32_t next;
  {
    std::lock_guard lock(mu_);
    auto devices = directory_.devices(user);
    if (!devices) return done(devices.error());
    // The cache holds the numbers reserved here and not yet committed; the store, the devices
    // another node linked that this node has not heard of yet (its announcement is on the
    // way). Both count, for the limit and the next number. A link is rare: one more read.
    auto stored = store_.devices(user);
    if (!stored) return done(stored.error());
    for (uint32_t d : *stored)
      if (std::find(devices->begin(), devices->end(), d) == devices->end()) devices->push_back(d);
    if (devices->empty()) return done(make_error(ErrorCode::kNotFound, "no such user"));
    if (devices->size() >= options_.limits.max_devices_per_user)
      return done(make_error(ErrorCode::kLimitExceeded,
                             "at most " + std::to_string(options_.limits.max_devices_per_user) + " devices per user"));
    next = *std::max_element(devices->begin(), devices->end()) + 1;
    // Reserve the number now so a concurrent link cannot take it too.
    auto updated = *devices;
    updated.push_back(next);
    directory_.put_devices(user, std::move(updated));
  }
  write_device(user, next, /*new_user=*/false, std::move(done));
}

void Accounts::write_device(const std::string& user, uint32_t device, bool new_user, CredentialsDone done) {
  Credentials creds{user, device, new_token()};
  store::Batch batch;
  if (new_user) batch.add(store::PutUser{user, now_ms()});
  // Refused with `exists` if the device is stored already: another node registered the user
  // or linked this number at the same moment (each node reserves numbers in its own cache).
  batch.add(store::PutDevice{DeviceRef{user, device}, hash_token(creds.token), /*must_be_new=*/true});
  if (!new_user) {
    // A new device is an endpoint like any other: it receives every message of its user's
    // conversations (from the user's join seq), so its inbox starts with all of them.
    auto convs = store_.user_conversations(user);
    if (!convs) return done(convs.error());
    for (const auto& uc : *convs) {
      if (uc.left_seq != 0) continue;
      auto head = store_.head(uc.conversation_id);
      if (!head) return done(head.error());
      if (*head >= uc.joined_seq) batch.add(store::InboxMark{DeviceRef{user, device}, uc.conversation_id, *head});
    }
  }
  committer_.submit(std::move(batch), [this, creds, new_user, done](const Result<void>& committed) {
    if (new_user) {
      std::lock_guard lock(mu_);
      creating_.erase(creds.user);
      if (committed) directory_.put_devices(creds.user, {1});
    }
    if (!committed && committed.error().code == ErrorCode::kExists) {
      if (new_user) return done(make_error(ErrorCode::kExists, "user already exists"));
      // This node's reserved number was taken on another node: read the list again next time.
      directory_.forget_devices(creds.user);
      return done(make_error(ErrorCode::kUnavailable, "another device of this user was linked at the same moment; retry"));
    }
    if (!committed) {
      if (!new_user) directory_.forget_devices(creds.user);  // the reservation did not commit
      return done(committed.error());
    }
    if (!new_user && devices_changed_) devices_changed_(creds.user);
    spdlog::info("event=device_registered user={} device={}", creds.user, creds.device);
    done(creds);
  });
}

Result<DeviceRef> Accounts::authenticate(const std::string& token) {
  if (token.empty() || token.size() > 256) return make_error(ErrorCode::kUnauthorized, "missing or invalid token");
  auto found = store_.find_token(hash_token(token));
  if (!found) return found.error();
  if (!*found) return make_error(ErrorCode::kUnauthorized, "missing or invalid token");
  // Issue 12: a suspended (or deleted) account signs in nowhere. One bloom-filtered point read.
  auto suspended = store_.user_record((*found)->user, records::kSuspended);
  if (!suspended) return suspended.error();
  if (*suspended) return make_error(ErrorCode::kUnauthorized, "missing or invalid token");
  return **found;
}

Result<LinkCode> Accounts::create_link_code(const DeviceRef& by) {
  std::string code = new_link_code();
  // Shared by the nodes (Redis): the new device may redeem it through any of them.
  auto shared = store_.add_link_code(by.user, hash_token(code), kLinkCodeTtlMs, options_.link_codes_per_user);
  if (!shared) return shared.error();
  if (*shared) {
    if (**shared == 0) return too_many_codes();
    return LinkCode{std::move(code), **shared};
  }
  const int64_t now = now_ms();
  std::lock_guard lock(mu_);
  if (link_codes_.size() > 10000)  // users who never came back for their codes: bounded sweep
    for (auto it = link_codes_.begin(); it != link_codes_.end();) {
      std::erase_if(it->second, [&](const PendingCode& c) { return c.expires_at <= now; });
      it = it->second.empty() ? link_codes_.erase(it) : std::next(it);
    }
  auto& codes = link_codes_[by.user];
  std::erase_if(codes, [&](const PendingCode& c) { return c.expires_at <= now; });
  if (codes.size() >= options_.link_codes_per_user) return too_many_codes();
  PendingCode pending{std::move(code), now + kLinkCodeTtlMs};
  codes.push_back(pending);
  return LinkCode{pending.code, pending.expires_at};
}

bool Accounts::take_local_link_code(const std::string& user, const std::string& code) {
  const int64_t now = now_ms();
  std::lock_guard lock(mu_);
  auto it = link_codes_.find(user);
  if (it == link_codes_.end()) return false;
  auto& codes = it->second;
  auto c = std::find_if(codes.begin(), codes.end(),
                        [&](const PendingCode& p) { return p.code == code && p.expires_at > now; });
  if (c == codes.end()) return false;
  codes.erase(c);  // single use, even if linking then fails
  if (codes.empty()) link_codes_.erase(it);
  return true;
}

void Accounts::redeem_link_code(const std::string& user, const std::string& code, const std::string& source,
                                CredentialsDone done) {
  // One answer for every failure: wrong, expired, no such user, or a throttled guesser.
  auto fail = [&] { return done(make_error(ErrorCode::kNotFound, "unknown or expired link code")); };
  if (!guesses_.take(source, mono_us())) return fail();
  // Single use, even if linking then fails. A store the nodes share takes it there, whichever
  // node showed it; the answer to a store that cannot be reached is `unavailable` (retry: the
  // code is still held, unless the take landed and only its answer was lost).
  auto shared = store_.take_link_code(user, hash_token(code));
  if (!shared) return done(shared.error());
  if (*shared ? !**shared : !take_local_link_code(user, code)) return fail();
  add_device(user, std::move(done));
}

}  // namespace tern::services
