// E2eSession: the Client's end-to-end encryption layer over the Keyring (docs/crypto.md, "How
// the SDK uses it"). Direct and group conversations are encrypted; channels are not
// (docs/protocol.md §3.9a).
//  - Sending: every outbox entry holds the plaintext; its `send` frame is built at every
//    (re)send: one ciphertext per device of every member (own other devices included, this
//    device excluded) in `bodies`, with `registration_ids`. What is missing is fetched first,
//    one HTTP call at a time: the member list (GET /v1/conversations/{id}), each member's
//    device list (GET /v1/users/{u}/devices) and a bundle for each device without a session
//    built for its current registration id (GET /v1/keys/{u}/{d}). Lists are cached;
//    `device_mismatch` (§14.8) and membership changes invalidate them.
//  - Groups ("g-", Sender Keys, docs/crypto.md "Groups"): before its first send, after a
//    rotation, and when a member device does not hold our current sender key, the device sends
//    its SenderKeyDistributionMessage over the pairwise sessions (pairwise plaintext kind
//    kSenderKeyDistribution) to every current member device in `bodies` with "keys": true
//    (client_msg_id "k-…", through E2eHooks::send_keys), and builds the group message only
//    after its `sent`: then the message is ONE SenderKeyMessage in `body`. Rotation: when a
//    device that holds our current key is no longer a member device (its user left or was
//    removed, or the device was removed), the key is dropped and a new one distributed.
//    Group device lists are read again when older than kGroupDeviceListMaxAgeS.
//  - Receiving: open_message() opens this device's entry (pairwise) or a group message (sender
//    key). Distributions are stored, not shown. A group message whose sender key has not
//    arrived waits (at most kMaxHeld messages, kHoldSeconds) and is released when it does;
//    past the time it is given up (undecryptable). A failure changes no state.
//  - Keys: publish() uploads the identity, a signed prekey and one-time prekeys when the
//    directory does not list this keyring's registration id for the device, and refills the
//    one-time prekeys below kPrekeyTarget / 2 (also on `prekeys_low`).
// One process at a time: open() fails (kExists) while another holds the keyring's lock.
// Inside the pairwise ciphertext the plaintext is one kind byte (kApplication) and the body.
//
// Thread-safety: none. One owner: the Client's strand; Api callbacks are brought back to it
// through Hooks::post. Owns the Keyring.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/api.h"
#include "client/keyring.h"
#include "client/local_store.h"
#include "client/types.h"

namespace tern::client {

inline constexpr size_t kPrekeyTarget = 100;  // one-time prekeys kept on the server
inline constexpr size_t kMaxHeld = 256;        // group messages waiting for a sender key
inline constexpr int64_t kHoldSeconds = 60;    // how long one waits (checked at each open)
inline constexpr int64_t kGroupDeviceListMaxAgeS = 30;

struct E2eHooks {
  std::function<void(std::function<void()>)> post;  // runs fn on the owner's strand
  // A device's identity key is not the one its session was built for (a re-install, or an
  // attack: the user should compare safety numbers).
  std::function<void(const std::string& user, uint32_t device)> identity_changed;
  // Writes a key-distribution `send` frame on the connection; false when not connected.
  std::function<bool(const std::string& frame)> send_keys;
};

class E2eSession {
 public:
  static Result<std::unique_ptr<E2eSession>> open(const std::string& keyring_dir, Credentials self, Api api,
                                                  E2eHooks hooks, const KeyringOptions& keyring_options = {});
  ~E2eSession();

  // Direct ("d-"), group ("g-") and self ("s-") conversations are encrypted; channels are not.
  static bool encrypted(std::string_view conversation_id);

  // Uploads keys as needed (see above); `done` on the strand.
  void publish(std::function<void(Result<void>)> done);
  // `prekeys_low`: uploads kPrekeyTarget - count new one-time prekeys.
  void refill(uint64_t count);

  // The `send` frame of an encrypted entry (body_b64: the plaintext, base64), or nullopt
  // while something is being fetched: `ready` then runs on the strand once it arrived (or
  // failed), and the caller builds again. An error: the entry cannot be encrypted.
  Result<std::optional<std::string>> build_send(const OutboxEntry& entry, std::function<void(Result<void>)> ready);

  // A `device_mismatch` answer for a send to `conversation_id` (device keys "user:device").
  void on_device_mismatch(const std::string& conversation_id, const std::vector<std::string>& missing,
                          const std::vector<std::string>& extra, const std::vector<std::string>& stale);
  // Membership changed: the member list is read again before the next send there.
  void forget_members(const std::string& conversation_id);

  // What a received encrypted message (`body`: the ciphertext bytes) turned into.
  struct Opened {
    std::optional<std::string> text;                  // a message for the user; nullopt: none now
    std::vector<Message> released;                    // held group messages now decrypted
    std::vector<std::pair<Message, Error>> given_up;  // held too long, or refused when released
    std::optional<std::string> control;  // own self conversation: history traffic (history_transfer.h)
  };
  Result<Opened> open_message(const Message& m);

  // The `sent` / error answer of a key-distribution send: true when `client_msg_id` was ours.
  bool on_keys_sent(const std::string& client_msg_id);
  bool on_keys_error(const std::string& ref, const std::string& code, const std::vector<std::string>& missing,
                     const std::vector<std::string>& extra, const std::vector<std::string>& stale);
  // The connection closed: a distribution in flight is sent again at the next build.
  void on_disconnect();

  Keyring& keyring() { return *keyring_; }

 private:
  E2eSession(Credentials self, Api api, E2eHooks hooks, std::unique_ptr<Keyring> keyring);
  void fetch_members(const std::string& conv, std::function<void(Result<void>)> ready);
  void fetch_devices(const std::string& user, std::function<void(Result<void>)> ready);
  void fetch_bundle(const std::string& user, uint32_t device, std::function<void(Result<void>)> ready);
  // Brings `r` to the strand as `ready(r)`.
  template <typename T>
  Callback<T> on_strand(std::function<void(Result<T>)> fn);

  // The group path of build_send (member and device lists and sessions are ready).
  Result<std::optional<std::string>> build_group_send(const OutboxEntry& e, std::function<void(Result<void>)>& ready);
  void forget_keyless(const std::vector<std::string>& users);
  void release_held(const std::string& conv, const std::string& sender, Opened& out);

  struct KeysInFlight {
    std::string conversation_id, client_msg_id;
    std::vector<std::string> devices;
    std::function<void(Result<void>)> ready;
    };
  int keys_mismatches_ = 0;  // device_mismatch answers to the distribution in flight
  std::optional<KeysInFlight> keys_in_flight_;
  std::map<std::string, std::string> keys_msg_id_;  // conversation → id of its unacked distribution
  std::map<std::string, int64_t> devices_read_at_;  // user → when its device list was read (s)
  struct Held {
    Message m;
    int64_t since_s = 0;
  };
  std::vector<Held> held_;

  Credentials self_;
  Api api_;
  E2eHooks hooks_;
  std::unique_ptr<Keyring> keyring_;
  std::map<std::string, std::vector<std::string>> members_;  // conversation → users
  std::map<std::string, std::vector<UserDevice>> devices_;    // user → devices
  bool refilling_ = false;
  std::string history_refreshed_;  // the history entry for which the own device list was read again
  int lock_fd_ = -1;  // flock on <keyring_dir>/lock: one process per keyring
};

}  // namespace tern::client
