#include "client/e2e_session.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <ctime>
#include <set>
#include <filesystem>

#include <boost/json.hpp>

#include "base/base64.h"
#include "base/log.h"
#include "client/errors.h"
#include "client/history_transfer.h"
#include "crypto/secret.h"

namespace tern::client {
namespace json = boost::json;
namespace {

constexpr char kApplication = 0x01;  // kind byte of the pairwise plaintext: an application body
constexpr char kSenderKeyDistribution = 0x02;  // … a SenderKeyDistributionMessage for the conversation

int64_t now_s() { return static_cast<int64_t>(std::time(nullptr)); }

void wipe(std::string& s) { std::fill(s.begin(), s.end(), '\0'); }

// The fields of a message `send` frame other than its ciphertext(s).
json::object send_frame(const OutboxEntry& e) {
  json::object o;
  o["type"] = "send";
  o["client_msg_id"] = e.client_msg_id;
  o["conversation_id"] = e.conversation_id;
  if (e.reply_to) o["reply_to"] = *e.reply_to;
  if (e.ttl_seconds) o["ttl"] = *e.ttl_seconds;
  if (!e.media.empty()) {
    json::array ids;
    for (const auto& id : e.media) ids.emplace_back(id);
    o["media"] = std::move(ids);
  }
  return o;
}

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
  return conversation_id.starts_with("d-") || conversation_id.starts_with("g-") || conversation_id.starts_with("s-");
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
    devices_read_at_[user] = now_s();
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
  const bool group = e.conversation_id.starts_with("g-");
  for (const auto& user : members->second)
    if (!devices_.contains(user) || (group && now_s() - devices_read_at_[user] > kGroupDeviceListMaxAgeS)) {
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
  if (group) return build_group_send(e, ready);
  const auto target = history_target(e.client_msg_id);  // history: for that own device alone
  if (target && history_refreshed_ != e.client_msg_id &&
      std::none_of(devices_[self_.user].begin(), devices_[self_.user].end(),
                   [&](const UserDevice& d) { return d.device == *target; })) {
    history_refreshed_ = e.client_msg_id;  // a device newer than our list: read it once again
    fetch_devices(self_.user, std::move(ready));
    return Built();
  }
  auto body = base64_decode(e.body_b64);
  if (!body) return make_error(ErrorCode::kMalformed, "outbox entry is not base64");
  std::string plain(1, history_kind(e.client_msg_id));  // kApplication but for history entries
  plain += *body;
  json::object bodies, regs;
  for (const auto& user : members->second)
    for (const auto& d : devices_[user]) {
      if (user == self_.user && d.device == self_.device) continue;
      const std::string key = device_key(user, d.device);
      if (d.registration_id == 0 || (target && (user != self_.user || d.device != *target))) {
        bodies[key] = "";  // no keys: nothing it could open (and not checked by the server)
        continue;
      }
      auto c = keyring_->encrypt(key, plain);
      if (!c) return c.error();
      bodies[key] = *c;
      regs[key] = d.registration_id;
    }
  wipe(plain);
  forget_keyless(members->second);
  json::object o = send_frame(e);
  o["bodies"] = std::move(bodies);
  o["registration_ids"] = std::move(regs);
  return Built(json::serialize(o));
}

void E2eSession::forget_keyless(const std::vector<std::string>& users) {
  // A device without keys yet (it may be starting): its user's list is read again next time.
  for (const auto& user : users) {
    auto& list = devices_[user];
    if (std::any_of(list.begin(), list.end(), [](const UserDevice& d) { return d.registration_id == 0; }))
      devices_.erase(user);
  }
}

Result<std::optional<std::string>> E2eSession::build_group_send(const OutboxEntry& e,
                                                                std::function<void(Result<void>)>& ready) {
  using Built = std::optional<std::string>;
  const std::string& conv = e.conversation_id;
  if (keys_in_flight_) {  // the Client builds one entry at a time; this one waits for the `sent`
    keys_in_flight_->ready = std::move(ready);
    return Built();
  }
  const auto& users = members_[conv];
  std::vector<std::pair<std::string, uint32_t>> all;  // every member device but this one
  std::set<std::string> current;                      // those with keys
  for (const auto& user : users)
    for (const auto& d : devices_[user]) {
      if (user == self_.user && d.device == self_.device) continue;
      all.emplace_back(device_key(user, d.device), d.registration_id);
      if (d.registration_id != 0) current.insert(all.back().first);
    }
  // Rotation: a device holding our current key is no longer a member device.
  const auto holders = keyring_->sender_key_holders(conv);
  if (std::any_of(holders.begin(), holders.end(), [&](const std::string& h) { return !current.contains(h); })) {
    if (auto r = keyring_->rotate_sender_key(conv); !r) return r.error();
    keys_msg_id_.erase(conv);
    spdlog::info("component=client event=sender_key_rotated conversation={}", conv);
  }
  const bool lacking = std::any_of(current.begin(), current.end(),
                                   [&](const std::string& k) { return !keyring_->sender_key_given(conv, k); });
  if (lacking) {
    // The server wants an entry for every member device (§8): all get the current key (those
    // that hold it already keep it as is).
    auto skdm = keyring_->sender_key_distribution(conv);
    if (!skdm) return skdm.error();
    std::string plain(1, kSenderKeyDistribution);
    plain.append(reinterpret_cast<const char*>(skdm->data()), skdm->size());
    crypto::wipe(*skdm);
    json::object bodies, regs;
    KeysInFlight f;
    f.conversation_id = conv;
    for (const auto& [key, reg] : all) {
      if (reg == 0) {
        bodies[key] = "";
        continue;
      }
      auto c = keyring_->encrypt(key, plain);
      if (!c) return wipe(plain), c.error();
      bodies[key] = *c;
      regs[key] = reg;
      f.devices.push_back(key);
    }
    wipe(plain);
    forget_keyless(users);
    auto& id = keys_msg_id_[conv];
    if (id.empty()) {
      std::array<uint8_t, 12> r{};
      crypto::random_bytes(r);
      id = "k-" + base64_encode(std::string(r.begin(), r.end()));
    }
    f.client_msg_id = id;
    json::object o{{"type", "send"}, {"client_msg_id", id}, {"conversation_id", conv}};
    o["bodies"] = std::move(bodies);
    o["registration_ids"] = std::move(regs);
    o["keys"] = true;
    // The ratchet steps of these ciphertexts are saved before they leave (keyring.h).
    if (auto r = keyring_->commit(); !r) return r.error();
    if (!hooks_.send_keys || !hooks_.send_keys(json::serialize(o))) {
      hooks_.post([ready = std::move(ready)] { ready(network_error("not connected")); });
      return Built();
    }
    f.ready = std::move(ready);
    keys_in_flight_ = std::move(f);
    return Built();
  }
  forget_keyless(users);
  auto body = base64_decode(e.body_b64);
  if (!body) return make_error(ErrorCode::kMalformed, "outbox entry is not base64");
  std::string plain(1, kApplication);
  plain += *body;
  wipe(*body);
  auto c = keyring_->group_encrypt(conv, plain);
  if (!c && c.error().code == ErrorCode::kNotFound) {  // alone in the group: nobody to give it to yet
    if (auto k = keyring_->sender_key_distribution(conv); !k) return wipe(plain), k.error();
    c = keyring_->group_encrypt(conv, plain);
  }
  wipe(plain);
  if (!c) return c.error();
  json::object o = send_frame(e);
  o["body"] = *c;
  return Built(json::serialize(o));
}

bool E2eSession::on_keys_sent(const std::string& client_msg_id) {
  if (!client_msg_id.starts_with("k-")) return false;
  if (!keys_in_flight_ || keys_in_flight_->client_msg_id != client_msg_id) return true;  // an old repeat
  KeysInFlight f = std::move(*keys_in_flight_);
  keys_in_flight_.reset();
  keys_msg_id_.erase(f.conversation_id);
  keys_mismatches_ = 0;
  Result<void> r = keyring_->note_sender_key_given(f.conversation_id, f.devices);
  spdlog::info("component=client event=sender_key_distributed conversation={} devices={}", f.conversation_id,
               f.devices.size());
  if (f.ready) f.ready(r);
  return true;
}

bool E2eSession::on_keys_error(const std::string& ref, const std::string& code, const std::vector<std::string>& missing,
                               const std::vector<std::string>& extra, const std::vector<std::string>& stale) {
  if (!ref.starts_with("k-")) return false;
  if (!keys_in_flight_ || keys_in_flight_->client_msg_id != ref) return true;
  KeysInFlight f = std::move(*keys_in_flight_);
  keys_in_flight_.reset();
  if (code == "device_mismatch" && ++keys_mismatches_ <= 3) {
    on_device_mismatch(f.conversation_id, missing, extra, stale);  // then built again, same id
    if (f.ready) f.ready({});
    return true;
  }
  keys_mismatches_ = 0;
  keys_msg_id_.erase(f.conversation_id);
  if (f.ready) f.ready(make_error(error_code_from_name(code), "sender key distribution refused: " + code));
  return true;
}

void E2eSession::on_disconnect() {
  if (!keys_in_flight_) return;
  auto ready = std::move(keys_in_flight_->ready);
  keys_in_flight_.reset();
  if (ready) ready({});  // built again (same client_msg_id) once connected
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

Result<E2eSession::Opened> E2eSession::open_message(const Message& m) {
  Opened out;
  // Held messages past their time are given up.
  const int64_t now = now_s();
  for (auto it = held_.begin(); it != held_.end();) {
    if (now - it->since_s <= kHoldSeconds) {
      ++it;
      continue;
    }
    out.given_up.emplace_back(std::move(it->m), make_error(ErrorCode::kNotFound, "the sender key never arrived"));
    it = held_.erase(it);
  }
  const std::string sender = device_key(m.sender, m.sender_device);
  const bool group = m.conversation_id.starts_with("g-");
  if (group && !m.body.empty() && static_cast<uint8_t>(m.body[0]) == Keyring::kSenderKeyType) {
    auto plain = keyring_->group_decrypt(m.conversation_id, sender, base64_encode(m.body));
    if (!plain && plain.error().code == ErrorCode::kNotFound) {
      if (held_.size() >= kMaxHeld) return make_error(ErrorCode::kNotFound, "no sender key (and too many waiting)");
      held_.push_back(Held{m, now});  // until its sender key arrives
      return out;
    }
    if (!plain) return plain.error();
    if (plain->empty() || (*plain)[0] != kApplication)
      return wipe(*plain), make_error(ErrorCode::kMalformed, "unknown kind of group payload");
    out.text = plain->substr(1);
    wipe(*plain);
    return out;
  }
  bool changed = false;
  auto plain = keyring_->decrypt(sender, base64_encode(m.body), &changed);
  // In a group a pairwise message met again (at-least-once) is a key distribution already
  // processed (application messages met again come from the store, not here): nothing to do.
  // The same holds for history traffic in the self conversation.
  if (!plain && (group || m.conversation_id.starts_with("s-")) && plain.error().code == ErrorCode::kExists) return out;
  if (!plain) return plain.error();
  if (changed && hooks_.identity_changed) hooks_.identity_changed(m.sender, m.sender_device);
  if (!plain->empty() && (*plain)[0] == kApplication) {
    out.text = plain->substr(1);
  } else if (m.conversation_id.starts_with("s-") && m.sender == self_.user && !plain->empty() &&
             ((*plain)[0] == kHistoryKind || (*plain)[0] == kHistoryRequestKind)) {
    out.control = *plain;  // history_transfer.h
  } else if (group && !plain->empty() && (*plain)[0] == kSenderKeyDistribution) {
    const auto* p = reinterpret_cast<const uint8_t*>(plain->data()) + 1;
    auto r = keyring_->process_sender_key(m.conversation_id, sender, {p, plain->size() - 1});
    if (!r) return wipe(*plain), r.error();
    release_held(m.conversation_id, sender, out);
  } else {
    return wipe(*plain), make_error(ErrorCode::kMalformed, "unknown kind of encrypted payload");
  }
  wipe(*plain);
  return out;
}

void E2eSession::release_held(const std::string& conv, const std::string& sender, Opened& out) {
  for (auto it = held_.begin(); it != held_.end();) {
    if (it->m.conversation_id != conv || device_key(it->m.sender, it->m.sender_device) != sender) {
      ++it;
      continue;
    }
    auto plain = keyring_->group_decrypt(conv, sender, base64_encode(it->m.body));
    if (!plain && plain.error().code == ErrorCode::kNotFound) {  // another chain: still waits
      ++it;
      continue;
    }
    if (plain && !plain->empty() && (*plain)[0] == kApplication) {
      Message m = std::move(it->m);
      m.body = plain->substr(1);
      out.released.push_back(std::move(m));
    } else {
      out.given_up.emplace_back(std::move(it->m), plain ? make_error(ErrorCode::kMalformed, "unknown kind of group payload")
                                                        : plain.error());
    }
    if (plain) wipe(*plain);
    it = held_.erase(it);
  }
}

}  // namespace tern::client
