#include "client/e2e_session.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <boost/json.hpp>

#include "base/base64.h"
#include "base/log.h"

namespace tern::client {
namespace json = boost::json;
namespace {

constexpr char kApplication = 0x01;  // kind byte of the pairwise plaintext: an application body

std::string device_key(const std::string& user, uint32_t device) { return user + ":" + std::to_string(device); }

// "user:device" → (user, device); nullopt when malformed.
std::optional<std::pair<std::string, uint32_t>> split_key(const std::string& key) {
  const size_t colon = key.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  try {
    const unsigned long d = std::stoul(key.substr(colon + 1));
    if (d == 0 || d > UINT32_MAX) return std::nullopt;
    return std::make_pair(key.substr(0, colon), static_cast<uint32_t>(d));
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace

E2eSession::E2eSession(Credentials self, Api api, E2eHooks hooks, std::unique_ptr<Keyring> keyring)
    : self_(std::move(self)), api_(std::move(api)), hooks_(std::move(hooks)), keyring_(std::move(keyring)) {}

Result<std::unique_ptr<E2eSession>> E2eSession::open(const std::string& keyring_dir, Credentials self, Api api,
                                                     E2eHooks hooks, const KeyringOptions& keyring_options) {
  // One process per keyring: two would encrypt from the same chain state (a message key
  // used twice) and overwrite each other's saves. The lock ends with the process or close.
  std::error_code ec;
  std::filesystem::create_directories(keyring_dir, ec);
  const int fd = ::open((keyring_dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (fd >= 0) ::close(fd);
    return make_error(ErrorCode::kExists, "the keys in " + keyring_dir + " are in use by another process");
  }
  auto k = Keyring::open(keyring_dir, keyring_options);
  if (!k) {
    ::close(fd);
    return k.error();
  }
  auto session = std::unique_ptr<E2eSession>(new E2eSession(std::move(self), std::move(api), std::move(hooks), std::move(*k)));
  session->lock_fd_ = fd;
  return session;
}

E2eSession::~E2eSession() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

bool E2eSession::encrypted(std::string_view conversation_id) {
  return conversation_id.starts_with("d-") || conversation_id.starts_with("g-");
}

template <typename T>
Callback<T> E2eSession::on_strand(std::function<void(Result<T>)> fn) {
  return [post = hooks_.post, fn = std::move(fn)](Result<T> r) mutable {
    post([fn = std::move(fn), r = std::move(r)]() mutable { fn(std::move(r)); });
  };
}

void E2eSession::publish(std::function<void(Result<void>)> done) {
  api_.user_devices(self_.user, on_strand<std::vector<UserDevice>>([this, done](Result<std::vector<UserDevice>> r) {
    if (!r) return done(r.error());
    bool listed = false;
    for (const auto& d : *r)
      if (d.device == self_.device)
        listed = d.registration_id == keyring_->registration_id() && d.identity_key == keyring_->identity_public();
    auto after_upload = [this, done](Result<size_t> count) {
      if (!count) return done(count.error());
      if (*count < kPrekeyTarget / 2) refill(*count);
      done({});
    };
    if (!listed) {
      auto body = keyring_->upload_body(true, kPrekeyTarget);
      if (!body) return done(body.error());
      spdlog::info("component=client event=keys_uploaded user={} device={}", self_.user, self_.device);
      return api_.upload_keys(*body, on_strand<size_t>(after_upload));
    }
    api_.key_count(on_strand<size_t>(after_upload));
  }));
}

void E2eSession::refill(uint64_t count) {
  if (refilling_ || count >= kPrekeyTarget) return;
  auto body = keyring_->upload_body(false, kPrekeyTarget - count);
  if (!body) {
    spdlog::warn("component=client event=prekey_refill_failed error=\"{}\"", body.error().message);
    return;
  }
  refilling_ = true;
  api_.upload_keys(*body, on_strand<size_t>([this](Result<size_t> r) {
    refilling_ = false;
    if (!r) spdlog::warn("component=client event=prekey_refill_failed error=\"{}\"", r.error().message);
  }));
}

void E2eSession::fetch_members(const std::string& conv, std::function<void(Result<void>)> ready) {
  api_.conversation_info(conv, on_strand<ConversationInfo>([this, conv, ready](Result<ConversationInfo> r) {
    if (!r) return ready(r.error());
    if (r->members.empty()) return ready(make_error(ErrorCode::kInvalidArgument, "conversation without members"));
    members_[conv] = r->members;
    ready({});
  }));
}

void E2eSession::fetch_devices(const std::string& user, std::function<void(Result<void>)> ready) {
  api_.user_devices(user, on_strand<std::vector<UserDevice>>([this, user, ready](Result<std::vector<UserDevice>> r) {
    if (!r) return ready(r.error());
    devices_[user] = std::move(*r);
    ready({});
  }));
}

void E2eSession::fetch_bundle(const std::string& user, uint32_t device, std::function<void(Result<void>)> ready) {
  api_.key_bundles(user, device, on_strand<std::string>([this, user, device, ready](Result<std::string> r) {
    if (!r && r.error().code == ErrorCode::kNotFound) {
      // The device is gone or has no keys any more: treated as keyless for this send (its
      // user's list is read again at the next one), so that the build always ends.
      if (auto list = devices_.find(user); list != devices_.end())
        for (auto& d : list->second)
          if (d.device == device) d.registration_id = 0;
      return ready({});
    }
    if (!r) return ready(r.error());
    auto bundles = parse_bundles(*r);
    if (!bundles) return ready(bundles.error());
    for (const auto& b : *bundles) {
      if (b.device != device) continue;
      bool changed = false;
      const std::string key = device_key(user, device);
      if (auto s = keyring_->start_session(key, b.bundle, &changed); !s) return ready(s.error());
      // The directory may have moved on since the device list was read: take the bundle's.
      if (auto list = devices_.find(user); list != devices_.end())
        for (auto& d : list->second)
          if (d.device == device) d.registration_id = b.bundle.registration_id;
      if (changed && hooks_.identity_changed) hooks_.identity_changed(user, device);
      return ready({});
    }
    ready(make_error(ErrorCode::kMalformed, "bundle answer without the device asked for"));
  }));
}

Result<std::optional<std::string>> E2eSession::build_send(const OutboxEntry& e, std::function<void(Result<void>)> ready) {
  using Built = std::optional<std::string>;
  auto members = members_.find(e.conversation_id);
  if (members == members_.end()) {
    fetch_members(e.conversation_id, std::move(ready));
    return Built();
  }
  for (const auto& user : members->second)
    if (!devices_.contains(user)) {
      fetch_devices(user, std::move(ready));
      return Built();
    }
  for (const auto& user : members->second)
    for (const auto& d : devices_[user]) {
      const std::string key = device_key(user, d.device);
      if (d.registration_id == 0 || (user == self_.user && d.device == self_.device)) continue;
      if (!keyring_->has_session(key) || keyring_->session_registration(key) != d.registration_id) {
        fetch_bundle(user, d.device, std::move(ready));
        return Built();
      }
    }
  auto body = base64_decode(e.body_b64);
  if (!body) return make_error(ErrorCode::kMalformed, "outbox entry is not base64");
  std::string plain(1, kApplication);
  plain += *body;
  json::object bodies, regs;
  for (const auto& user : members->second)
    for (const auto& d : devices_[user]) {
      if (user == self_.user && d.device == self_.device) continue;
      const std::string key = device_key(user, d.device);
      if (d.registration_id == 0) {
        bodies[key] = "";  // no keys: nothing it could open (and not checked by the server)
        continue;
      }
      auto c = keyring_->encrypt(key, plain);
      if (!c) return c.error();
      bodies[key] = *c;
      regs[key] = d.registration_id;
    }
  std::fill(plain.begin(), plain.end(), '\0');
  // A device without keys yet (it may be starting): its user's list is read again next time.
  for (const auto& user : members->second) {
    auto& list = devices_[user];
    if (std::any_of(list.begin(), list.end(), [](const UserDevice& d) { return d.registration_id == 0; }))
      devices_.erase(user);
  }
  json::object o;
  o["type"] = "send";
  o["client_msg_id"] = e.client_msg_id;
  o["conversation_id"] = e.conversation_id;
  o["bodies"] = std::move(bodies);
  o["registration_ids"] = std::move(regs);
  if (e.reply_to) o["reply_to"] = *e.reply_to;
  if (e.ttl_seconds) o["ttl"] = *e.ttl_seconds;
  if (!e.media.empty()) {
    json::array ids;
    for (const auto& id : e.media) ids.emplace_back(id);
    o["media"] = std::move(ids);
  }
  return Built(json::serialize(o));
}

void E2eSession::on_device_mismatch(const std::string& conv, const std::vector<std::string>& missing,
                                    const std::vector<std::string>& extra, const std::vector<std::string>& stale) {
  auto members = members_.find(conv);
  for (const auto& key : missing) {
    auto k = split_key(key);
    if (!k) continue;
    // A device we did not know of, possibly of a user who just joined: both lists again.
    devices_.erase(k->first);
    if (members != members_.end() &&
        std::find(members->second.begin(), members->second.end(), k->first) == members->second.end())
      members_.erase(conv), members = members_.end();
  }
  for (const auto& key : extra) {
    auto k = split_key(key);
    if (!k) continue;
    devices_.erase(k->first);  // gone (or its user left): read again; its session is not used
    members_.erase(conv);
    members = members_.end();
  }
  for (const auto& key : stale) {
    auto k = split_key(key);
    if (!k) continue;
    // New keys: the device list gives the new registration id, and build_send then fetches a
    // new bundle (start_session reports an identity change).
    devices_.erase(k->first);
  }
}

void E2eSession::forget_members(const std::string& conversation_id) { members_.erase(conversation_id); }

Result<std::string> E2eSession::decrypt(const std::string& sender, uint32_t sender_device, const std::string& body) {
  bool changed = false;
  auto plain = keyring_->decrypt(device_key(sender, sender_device), base64_encode(body), &changed);
  if (!plain) return plain.error();
  if (changed && hooks_.identity_changed) hooks_.identity_changed(sender, sender_device);
  if (plain->empty() || (*plain)[0] != kApplication)
    return make_error(ErrorCode::kMalformed, "unknown kind of encrypted payload");
  return plain->substr(1);
}

}  // namespace tern::client
