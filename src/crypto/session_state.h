// The Double Ratchet state of one session with one remote device (SessionState), and the
// per-remote-device SessionRecord of Sesame: one active session and up to
// kMaxArchivedSessions archived ones, newest first. Serialization (for the SDK to persist) is
// our protobuf encoding behind a format version byte, into SecretBytes (it holds keys).
//
// Memory: the ratchet's keys are Key32 values (wiped on destruction) rather than SecretBytes:
// a decrypt works on a copy of the state and commits it only on success (so a failed decrypt
// changes nothing), and a sodium_malloc per copy (an mmap with guard pages) would dominate the
// cost of a message. The long-lived identity and prekey private keys are SecretBytes.
// Thread-safety: values; one thread at a time per object.
#pragma once
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "crypto/errors.h"
#include "crypto/secret.h"
#include "crypto/x25519.h"

namespace tern::crypto {

constexpr size_t kMaxArchivedSessions = 10;
constexpr size_t kMaxStoredSkippedKeys = 2000;  // hard cap on a parsed record

struct ReceiverChain {
  PublicKey ratchet_key{};  // the remote party's current ratchet public key
  Key32 chain_key;
  uint32_t index = 0;  // counter of the next message key this chain will give
};

// A message key kept for a message not yet received (skipped), as its seed.
struct SkippedKey {
  PublicKey ratchet_key{};
  uint32_t counter = 0;
  Key32 seed;
  int64_t created_at_s = 0;
};

// What an initiator repeats in every message until the responder answers (then a
// PreKeySignalMessage is no longer needed).
struct PendingPreKey {
  std::optional<uint32_t> pre_key_id;
  uint32_t signed_pre_key_id = 0;
  PublicKey base_key{};
};

struct SessionState {
  PublicKey local_identity{};
  PublicKey remote_identity{};
  uint32_t local_registration_id = 0;
  uint32_t remote_registration_id = 0;
  Key32 root_key;
  // Sending chain.
  PublicKey sender_ratchet_public{};
  Key32 sender_ratchet_private;
  Key32 sender_chain_key;
  uint32_t sender_index = 0;
  uint32_t previous_counter = 0;  // last counter of our previous sending chain (Signal's PN)
  // Receiving chain (none before the first DH step on the initiator's side).
  std::optional<ReceiverChain> receiver;
  std::deque<SkippedKey> skipped;  // oldest first
  std::optional<PendingPreKey> pending_prekey;
  PublicKey base_key{};  // the initiator's X3DH base key: identifies the session (Sesame)

  void serialize_into(std::vector<uint8_t>& out) const;
  static Result<SessionState> parse(std::span<const uint8_t> bytes);
};

struct SessionRecord {
  std::optional<SessionState> current;
  std::deque<SessionState> archived;  // newest first, at most kMaxArchivedSessions

  bool empty() const { return !current && archived.empty(); }
  // Moves `current` (if any) to the front of `archived` and installs `state` as current.
  void promote(SessionState state);
  // Moves current to archived (e.g. the remote identity changed); no current afterwards.
  void archive_current();

  SecretBytes serialize() const;
  static Result<SessionRecord> parse(std::span<const uint8_t> bytes);
};

}  // namespace tern::crypto
