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
// Private keys live in sodium_malloc memory (tern_crypto's SecretBytes); the serialized
// plaintext is wiped after use.
//
// Ciphertexts travel as base64 of one type byte (2 = SignalMessage, 3 = PreKeySignalMessage)
// followed by the message bytes, so a receiver knows which decrypt to run.
//
// Not done yet (see the report of the `keys` branch): groups (sender keys), the Client and
// `tern` using it by default, a passphrase instead of the key file.
//
// Thread-safety: none; one owner thread (the Client's strand). Owns its state.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
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

class Keyring {
 public:
  // Opens the keyring in `dir` (created, mode 0700, when missing), or makes a new identity
  // there when it holds none.
  static Result<std::unique_ptr<Keyring>> open(const std::string& dir);
  ~Keyring();

  uint32_t registration_id() const;
  std::string identity_public() const;  // 33 bytes: 0x05 ‖ X25519 public key

  // The body of PUT /v1/keys: with `full`, the identity key, registration id and a new signed
  // prekey (a rotation when one existed); plus `new_prekeys` new one-time prekeys. Saves.
  Result<std::string> upload_body(bool full, size_t new_prekeys);

  bool has_session(const std::string& device_key) const;  // "user:device"
  // The registration id of the bundle the device's session was built for (0: none), for the
  // `registration_ids` of a send.
  uint32_t session_registration(const std::string& device_key) const;
  // Sets up a session with the device from its bundle (X3DH; checks the signature). Saves.
  // identity_changed → true when the device had a session with another identity key.
  Result<void> start_session(const std::string& device_key, const crypto::PreKeyBundle& bundle,
                             bool* identity_changed = nullptr);
  // Encrypts for the device's session (kNotFound without one). Saves.
  Result<std::string> encrypt(const std::string& device_key, std::string_view plaintext);
  // Decrypts a message from the device; a PreKeySignalMessage sets up the session and uses
  // up our one-time prekey. A failure changes nothing. Saves on success.
  Result<std::string> decrypt(const std::string& device_key, std::string_view ciphertext_b64,
                              bool* identity_changed = nullptr);

  size_t one_time_prekeys() const;

 private:
  struct State;
  explicit Keyring(std::string dir);
  Result<void> save();
  Result<void> load();

  std::string dir_;
  std::unique_ptr<State> s_;
};

}  // namespace tern::client
