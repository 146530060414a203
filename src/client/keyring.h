// Keyring: one device's end-to-end encryption state, on tern_crypto (Signal v3: X3DH, Double
// Ratchet, Sesame sessions): the identity key pair and registration id, the signed prekey
// (and the one it replaced), the one-time prekeys not used yet, and a session record per
// remote device with the registration id and identity key it was built for.
//
// At rest: `<dir>/keyring.state` holds the state encrypted with XSalsa20-Poly1305
// (libsodium's crypto_secretbox, a fresh random nonce per save) under the 32-byte key in
// `<dir>/keyring.key`, created with mode 0600 (so scripts need no prompt; whoever can read
// the key file can read the state, as with an ssh key). A state file that fails to
// authenticate is refused, never silently replaced. Saves are atomic (temp file + rename).
//
// Saves are batched: a change (a session set up, an encrypt, a decrypt, a sender key stored)
// only marks the state changed in memory; commit() writes it, once for any number of changes.
// The caller commits before anything that depends on a change leaves the process: a
// ciphertext before it is written to the socket (else after a crash the same message key
// would encrypt another plaintext), the ack of a decrypted message before it is sent (else
// the message could never be decrypted again). A change not committed when the process dies
// is lost, and so is nothing else: the server delivers again what was not acked, and the
// older state decrypts it again. upload_body() and set_passphrase() save at once.
//
// On request (KeyringOptions::passphrase) the state key is instead derived from a passphrase
// with Argon2id (libsodium crypto_pwhash, INTERACTIVE limits) and a random 16-byte salt kept
// in `<dir>/keyring.salt` with the limits used; no key file exists in that mode. The mode is
// chosen when the keyring is created and changed only by set_passphrase(): opening a
// key-file keyring with a passphrase, or a passphrase keyring without one, is an error, and
// so is a wrong passphrase; none of these touches a file. (After a switch cut short by a
// crash both keyring.key and keyring.salt exist: whichever of the two opens the state wins,
// and the other file is removed.) The derived key is kept in sodium_malloc memory while the
// keyring is open, so a save costs no key derivation.
// Private keys live in sodium_malloc memory (tern_crypto's SecretBytes); the serialized
// plaintext is wiped after use.
//
// Ciphertexts travel as base64 of one type byte (2 = SignalMessage, 3 = PreKeySignalMessage)
// followed by the message bytes, so a receiver knows which decrypt to run.
//
// Groups: Signal's Sender Keys (crypto/sender_keys.h), persisted with the rest: our own sender
// key per group conversation (its distribution id, chain and signing key, and which devices
// "user:device" it was given to), at most kMaxOwnSenderKeys; and each received sender key per
// (conversation, sender device), at most kMaxPeerSenderKeys. Beyond either bound the least
// recently used one is dropped (a dropped own key is made again and redistributed; a dropped
// received one makes that sender's messages undecryptable until it distributes again).
// A group ciphertext travels as base64 of type byte 7 (libsignal's sender-key type) ‖ the
// SenderKeyMessage.
//
// The Client uses it through E2eSession (e2e_session.h).
//
// Thread-safety: none; one owner thread (the Client's strand). Owns its state.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "crypto/keys.h"

namespace tern::client {

// One device's bundle as GET /v1/keys/{user}[/{device}] answers it.
struct DeviceBundle {
  uint32_t device = 0;
  crypto::PreKeyBundle bundle;
};
// Parses the answer of a bundle fetch (exact key sizes; malformed otherwise).
Result<std::vector<DeviceBundle>> parse_bundles(std::string_view json);

struct KeyringOptions {
  // Protects the state with this passphrase instead of a key file (see above). Read during
  // open() only; the caller owns it (and should wipe it).
  std::optional<std::string_view> passphrase;
};

class Keyring {
 public:
  // Opens the keyring in `dir` (created, mode 0700, when missing), or makes a new identity
  // there when it holds none. Key-file mode.
  static Result<std::unique_ptr<Keyring>> open(const std::string& dir);
  // The same with options: with a passphrase, a new keyring is made in passphrase mode and an
  // existing one must be in passphrase mode (kInvalidArgument otherwise) and open with it
  // (kUnauthorized "wrong passphrase" otherwise; nothing is changed).
  static Result<std::unique_ptr<Keyring>> open(const std::string& dir, const KeyringOptions& options);
  // A keyring that is never saved (a fresh identity, lost with the object). For benchmarks
  // only (tern-bench --encrypt without --keyring-disk): a benchmark of the protocol should
  // not measure the disk. Never for real devices.
  static std::unique_ptr<Keyring> in_memory();
  ~Keyring();

  // Writes the state when it changed since the last save (nothing otherwise). On failure the
  // state stays marked changed (the next commit tries again).
  Result<void> commit();
  bool dirty() const { return dirty_; }
  // How many times the state file was written since open (a test's and benchmark's counter).
  uint64_t saves() const { return saves_; }

  // Switches the protection of the state, explicitly: a passphrase (a new salt; the key file
  // is deleted), or std::nullopt for key-file mode (a new key file; the salt is deleted). The
  // state is re-encrypted under the new key before the old key's file goes. Changing the
  // passphrase of a passphrase keyring is the same call. kInvalidArgument for an in-memory
  // keyring.
  Result<void> set_passphrase(std::optional<std::string_view> passphrase);
  bool passphrase_protected() const { return pass_key_ != nullptr; }

  uint32_t registration_id() const;
  std::string identity_public() const;  // 33 bytes: 0x05 ‖ X25519 public key

  // The body of PUT /v1/keys: with `full`, the identity key, registration id and a new signed
  // prekey (a rotation when one existed); plus `new_prekeys` new one-time prekeys. Saves at
  // once (with any change not committed yet).
  Result<std::string> upload_body(bool full, size_t new_prekeys);

  bool has_session(const std::string& device_key) const;  // "user:device"
  // The registration id of the bundle the device's session was built for (0: none), for the
  // `registration_ids` of a send.
  uint32_t session_registration(const std::string& device_key) const;
  // Sets up a session with the device from its bundle (X3DH; checks the signature). Marks
  // the state changed (commit() saves it; so for every "Changes the state" below).
  // identity_changed → true when the device had a session with another identity key.
  Result<void> start_session(const std::string& device_key, const crypto::PreKeyBundle& bundle,
                             bool* identity_changed = nullptr);
  // Encrypts for the device's session (kNotFound without one). Changes the state: commit
  // before the ciphertext leaves.
  Result<std::string> encrypt(const std::string& device_key, std::string_view plaintext);
  // Decrypts a message from the device; a PreKeySignalMessage sets up the session and uses
  // up our one-time prekey. A failure changes nothing (a replay: kExists). Changes the state
  // on success: commit before acking the message.
  Result<std::string> decrypt(const std::string& device_key, std::string_view ciphertext_b64,
                              bool* identity_changed = nullptr);

  size_t one_time_prekeys() const;

  // ---- Sender Keys (groups) ----
  static constexpr size_t kMaxOwnSenderKeys = 1024;
  static constexpr size_t kMaxPeerSenderKeys = 8192;
  static constexpr uint8_t kSenderKeyType = 7;
  // Our sender key for the conversation (made when missing: a new distribution id, nobody
  // holds it yet) as a serialized SenderKeyDistributionMessage of its current iteration.
  // Changes the state.
  Result<std::vector<uint8_t>> sender_key_distribution(const std::string& conv);
  // Rotation: drops our sender key for the conversation; the next distribution makes a new one.
  Result<void> rotate_sender_key(const std::string& conv);
  // Which devices our current sender key for the conversation was given to.
  bool sender_key_given(const std::string& conv, const std::string& device_key) const;
  std::vector<std::string> sender_key_holders(const std::string& conv) const;
  Result<void> note_sender_key_given(const std::string& conv, const std::vector<std::string>& device_keys);
  // One group message under our sender key (kNotFound without one). Changes the state.
  Result<std::string> group_encrypt(const std::string& conv, std::string_view plaintext);
  // Stores a sender device's distribution message for the conversation. Changes the state.
  Result<void> process_sender_key(const std::string& conv, const std::string& device_key,
                                  std::span<const uint8_t> distribution);
  // Decrypts a group message from the sender device: kNotFound when its key (for this chain)
  // has not arrived; other errors: refused. A failure changes nothing; success changes the
  // state.
  Result<std::string> group_decrypt(const std::string& conv, const std::string& device_key,
                                    std::string_view ciphertext_b64);

 private:
  struct State;
  struct PassKey;
  explicit Keyring(std::string dir);
  Result<void> save();  // writes the state now (commit() when it changed)
  void touch() { dirty_ = true; }  // the state changed: the next commit() writes it
  Result<void> load(const KeyringOptions& options);
  Result<void> load_state(std::span<const uint8_t> plain);
  void new_identity();
  // Encrypts `plain` under `key` (32 bytes) into <dir>/keyring.state, atomically.
  Result<void> write_state(std::span<const uint8_t> plain, const uint8_t* key);
  std::vector<uint8_t> serialize_state() const;

  std::string dir_;
  bool persist_ = true;
  bool dirty_ = false;   // changed since the last save
  uint64_t saves_ = 0;
  std::unique_ptr<PassKey> pass_key_;  // passphrase mode: the key derived from it
  std::unique_ptr<State> s_;
};

}  // namespace tern::client
