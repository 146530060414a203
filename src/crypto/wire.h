// Signal's v3 wire formats, encoded with our protobuf codec (field numbers from Signal's
// wire.proto; see docs/crypto.md):
//   SignalMessage        = 0x33 ‖ proto{1 ratchetKey(33), 2 counter, 3 previousCounter,
//                          4 ciphertext} ‖ mac[8], mac = HMAC-SHA256(macKey, senderIdentity(33) ‖
//                          receiverIdentity(33) ‖ 0x33 ‖ proto) truncated to 8 bytes
//   PreKeySignalMessage  = 0x33 ‖ proto{5 registrationId, 1 preKeyId (optional),
//                          6 signedPreKeyId, 2 baseKey(33), 3 identityKey(33), 4 message}
//   SenderKeyMessage     = 0x33 ‖ proto{1 distributionUuid(16), 2 chainId, 3 iteration,
//                          4 ciphertext} ‖ XEdDSA signature[64] over 0x33 ‖ proto
//   SenderKeyDistributionMessage = 0x33 ‖ proto{1 distributionUuid(16), 2 chainId,
//                          3 iteration, 4 chainKey(32), 5 signingKey(33)}
// The version byte is (message version << 4) | current version, both 3. Parsing is strict:
// a missing required field, a key of the wrong length or type byte, a version other than 3,
// or input over kMaxWireMessage is refused. A preKeyId of 0 is read as absent (see wire.cc).
// Thread-safety: values and pure functions.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "crypto/errors.h"
#include "crypto/x25519.h"

namespace tern::crypto {

constexpr uint8_t kMessageVersion = 3;
constexpr uint8_t kVersionByte = (kMessageVersion << 4) | kMessageVersion;  // 0x33
constexpr size_t kMacSize = 8;
constexpr size_t kSignatureSize = 64;
constexpr size_t kMaxWireMessage = 1 << 20;  // 1 MiB: larger input is refused unparsed

// Signal's CiphertextMessageType values, for carrying the kind beside the bytes.
enum class MessageType : uint8_t { kWhisper = 2, kPreKey = 3, kSenderKey = 7 };

using Uuid = std::array<uint8_t, 16>;

struct SignalMessage {
  PublicKey ratchet_key{};
  uint32_t counter = 0;
  uint32_t previous_counter = 0;
  std::vector<uint8_t> ciphertext;
  std::vector<uint8_t> serialized;  // the whole message, MAC included

  // Builds and MACs a message (identity keys are the 32-byte X25519 keys; the MAC covers
  // their 33-byte serialized form, as Signal's does).
  static SignalMessage make(std::span<const uint8_t, 32> mac_key, const PublicKey& ratchet_key, uint32_t counter,
                            uint32_t previous_counter, std::vector<uint8_t> ciphertext,
                            const PublicKey& sender_identity, const PublicKey& receiver_identity);
  static Result<SignalMessage> parse(std::span<const uint8_t> bytes);
  bool verify_mac(std::span<const uint8_t, 32> mac_key, const PublicKey& sender_identity,
                  const PublicKey& receiver_identity) const;
};

struct PreKeySignalMessage {
  uint32_t registration_id = 0;
  std::optional<uint32_t> pre_key_id;
  uint32_t signed_pre_key_id = 0;
  PublicKey base_key{};
  PublicKey identity_key{};
  SignalMessage message;
  std::vector<uint8_t> serialized;

  static PreKeySignalMessage make(uint32_t registration_id, std::optional<uint32_t> pre_key_id,
                                  uint32_t signed_pre_key_id, const PublicKey& base_key,
                                  const PublicKey& identity_key, SignalMessage message);
  static Result<PreKeySignalMessage> parse(std::span<const uint8_t> bytes);
};

struct SenderKeyMessage {
  Uuid distribution_id{};
  uint32_t chain_id = 0;
  uint32_t iteration = 0;
  std::vector<uint8_t> ciphertext;
  std::vector<uint8_t> serialized;  // signature included

  // Signs with the sender's XEdDSA signing key (32-byte private).
  static SenderKeyMessage make(const Uuid& distribution_id, uint32_t chain_id, uint32_t iteration,
                               std::vector<uint8_t> ciphertext, std::span<const uint8_t, 32> signing_private);
  static Result<SenderKeyMessage> parse(std::span<const uint8_t> bytes);
  bool verify_signature(const PublicKey& signing_public) const;
};

struct SenderKeyDistributionMessage {
  Uuid distribution_id{};
  uint32_t chain_id = 0;
  uint32_t iteration = 0;
  std::array<uint8_t, 32> chain_key{};
  PublicKey signing_key{};
  std::vector<uint8_t> serialized;

  static SenderKeyDistributionMessage make(const Uuid& distribution_id, uint32_t chain_id, uint32_t iteration,
                                           std::span<const uint8_t, 32> chain_key, const PublicKey& signing_key);
  static Result<SenderKeyDistributionMessage> parse(std::span<const uint8_t> bytes);
};

}  // namespace tern::crypto
