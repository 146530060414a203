// One-to-one encryption with Signal's v3 protocol: X3DH session set-up from a prekey bundle,
// the Double Ratchet (encrypt/decrypt), and Sesame's session choice per remote device.
//
// Rules (why in docs/crypto.md):
//  * A decrypt works on a copy of a session state and commits it only on success: a failed
//    decrypt (bad MAC, malformed, replay, too far ahead) leaves the record unchanged.
//  * At most limits.max_skip message keys are derived ahead in one chain per message
//    (kTooFarAhead otherwise); at most limits.max_skipped_keys are kept per session (oldest
//    dropped), and each expires after limits.skipped_key_max_age_s.
//  * A used message key is deleted; a counter below the chain's index with no kept key is a
//    replay (kDuplicate).
//  * Sesame: a SignalMessage is tried on the active session, then on each archived one (a
//    success there makes it active again). A PreKeySignalMessage whose base key matches a
//    session continues it; one with a new base key builds a new session, which becomes active
//    and archives the old one.
// Thread-safety: functions on caller-owned records; one thread at a time per record.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "crypto/errors.h"
#include "crypto/keys.h"
#include "crypto/session_state.h"
#include "crypto/wire.h"

namespace tern::crypto {

struct RatchetLimits {
  uint32_t max_skip = 2000;
  size_t max_skipped_keys = 2000;  // <= kMaxStoredSkippedKeys
  int64_t skipped_key_max_age_s = 30 * 24 * 3600;
};

struct LocalDevice {
  const IdentityKeyPair& identity;
  uint32_t registration_id = 0;
};

// Our prekeys as the responder needs them; each returns nullptr for an unknown id.
struct PreKeyLookup {
  std::function<const KeyPair*(uint32_t id)> signed_pre_key;
  std::function<const KeyPair*(uint32_t id)> one_time_pre_key;
};

struct Ciphertext {
  MessageType type = MessageType::kWhisper;
  std::vector<uint8_t> bytes;
};

struct PreKeyDecrypted {
  std::vector<uint8_t> plaintext;
  std::optional<uint32_t> used_pre_key_id;  // the caller deletes this one-time prekey now
  PublicKey remote_identity{};
  uint32_t remote_registration_id = 0;
  bool new_session = false;
};

// Initiator: verifies the bundle's signed-prekey signature (kBadSignature) and runs X3DH; the
// new session becomes active (the old one archived). Messages are PreKeySignalMessages until
// the first reply is decrypted.
Result<void> initiate_session(SessionRecord& record, const LocalDevice& local, const PreKeyBundle& bundle);

// Encrypts with the active session (kNoSession when none).
Result<Ciphertext> session_encrypt(SessionRecord& record, std::span<const uint8_t> plaintext);

// Decrypts a SignalMessage (type 2).
Result<std::vector<uint8_t>> session_decrypt(SessionRecord& record, std::span<const uint8_t> bytes, int64_t now_s,
                                             const RatchetLimits& limits = {});

// Decrypts a PreKeySignalMessage (type 3), setting up the session as responder if new.
// kNoSession when the signed prekey or the one-time prekey it names is unknown (used or
// rotated away).
Result<PreKeyDecrypted> session_decrypt_prekey(SessionRecord& record, const LocalDevice& local,
                                               const PreKeyLookup& keys, std::span<const uint8_t> bytes,
                                               int64_t now_s, const RatchetLimits& limits = {});

}  // namespace tern::crypto
