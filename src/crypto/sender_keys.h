// Signal's Sender Keys (group messaging): each sender has, per distribution id (one per group
// and sender device), a chain key and an XEdDSA signing key; it sends them once to every
// member device inside a SenderKeyDistributionMessage over the pairwise sessions, then
// encrypts each group message once (SenderKeyMessage, signed).
//  * Chain: message seed = HMAC(chain key, 0x01), next chain key = HMAC(chain key, 0x02);
//    message keys = HKDF-SHA256(salt = zeros, seed, "WhisperGroup", 48) → IV(16) ‖ AES-256
//    key(32) (the order libsignal uses); AES-256-CBC with PKCS#7.
//  * A SenderKeyRecord (one per sender device and distribution id) keeps up to
//    kMaxSenderKeyStates chains (chain ids), newest first, like libsignal.
//  * Receivers derive at most limits.max_skip keys ahead per message; kept (skipped) keys
//    are bounded by count and expire by age; used keys are deleted; a failed decrypt changes
//    no state.
// Rotation (after a member leaves or a device is removed) is the caller's: drop the own record
// and create a new one, then distribute it to the remaining members.
// Thread-safety: functions on caller-owned records; one thread at a time per record.
#pragma once
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "crypto/errors.h"
#include "crypto/secret.h"
#include "crypto/session_cipher.h"  // RatchetLimits
#include "crypto/wire.h"

namespace tern::crypto {

constexpr size_t kMaxSenderKeyStates = 5;

struct SenderKeyState {
  uint32_t chain_id = 0;
  uint32_t iteration = 0;  // iteration of the next message key of the chain
  Key32 chain_key;
  PublicKey signing_public{};
  std::optional<Key32> signing_private;  // only in our own sending record
  struct Skipped {
    uint32_t iteration = 0;
    Key32 seed;
    int64_t created_at_s = 0;
  };
  std::deque<Skipped> skipped;  // oldest first
};

struct SenderKeyRecord {
  std::deque<SenderKeyState> states;  // newest first

  bool empty() const { return states.empty(); }
  SecretBytes serialize() const;
  static Result<SenderKeyRecord> parse(std::span<const uint8_t> bytes);
};

// Our own sending key for `distribution_id`: creates the chain (random chain id, chain key
// and signing key) when the record is empty, and returns the distribution message for its
// current iteration (members cannot decrypt what was sent before it).
SenderKeyDistributionMessage create_sender_key_distribution(SenderKeyRecord& own, const Uuid& distribution_id);

// Stores a received distribution message (same chain id and key: kept as is; same chain id
// with another signing key: replaced).
Result<void> process_sender_key_distribution(SenderKeyRecord& record, const SenderKeyDistributionMessage& message);

// Encrypts one group message with our own record (kNoSession when it is empty).
Result<std::vector<uint8_t>> group_encrypt(SenderKeyRecord& own, const Uuid& distribution_id,
                                           std::span<const uint8_t> plaintext);

// Decrypts a SenderKeyMessage from the sender whose record this is (kNoSession when no
// state has its chain id; kBadSignature; kDuplicate; kTooFarAhead).
Result<std::vector<uint8_t>> group_decrypt(SenderKeyRecord& record, std::span<const uint8_t> bytes, int64_t now_s,
                                           const RatchetLimits& limits = {});

}  // namespace tern::crypto
