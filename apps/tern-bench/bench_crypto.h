// tern-bench --encrypt (pairs): each device is a real end-to-end encrypted client on the SDK's
// Keyring (client/keyring.h: Signal v3, X3DH + Double Ratchet). Set-up (bench_setup.cc)
// uploads every device's keys with PUT /v1/keys and has the first device of each pair fetch
// its partner's bundle (GET /v1/keys/{user}/{device}) and start a session; the partner's
// session comes from the first message (a PreKeySignalMessage). A send then carries the
// ciphertext of the body record (lean_record.h, raw bytes padded to --size) in `bodies` with
// `registration_ids`; the receiver decrypts it and checks that the plaintext is exactly the
// record the sender encoded. Encrypt and decrypt are timed with the worker thread's CPU clock.
//
// The group workload uses Sender Keys (crypto/sender_keys.h): set-up gives each sender a
// pairwise session with every other member of its group (bundles as above); before the step
// each sender sends one SenderKeyDistributionMessage, encrypted per member device over those
// sessions in `bodies` (with "keys": true), behind the record; then every group message is
// one SenderKeyMessage in `body`, base64 of type byte 7 (libsignal's CiphertextMessage type
// for sender keys) ‖ the message, decrypted by every member with the sender's key.
//
// Keyrings are in memory by default (Keyring::in_memory): the SDK's on-disk keyring writes
// and fsyncs its whole state once per batch (before a send leaves, before an ack), which would
// measure the disk, not the protocol; --keyring-disk puts them in a temporary directory per
// worker instead, to show that cost (docs/benchmarks.md).
//
// Ownership and threads: a Device owns its DeviceCrypto; the set-up thread that handles the
// device uses it first, then only the worker thread.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/ids.h"
#include "base/result.h"
#include "bench_stats.h"
#include "client/keyring.h"
#include "client/lean/lean_verifier.h"
#include "crypto/sender_keys.h"

namespace tern::bench {

namespace lean = tern::client::lean;

// CPU time of the calling thread, ns (CLOCK_THREAD_CPUTIME_ID).
int64_t thread_cpu_ns();

class DeviceCrypto {
 public:
  explicit DeviceCrypto(std::unique_ptr<client::Keyring> keyring) : keyring_(std::move(keyring)) {}

  client::Keyring& keyring() { return *keyring_; }
  // pairs: the partner's "user:device", and whether this device starts the session (fetches
  // the bundle).
  std::string peer_key;
  bool initiator = false;

  bool has_session() const { return keyring_->has_session(peer_key); }
  // Encrypts for a device we have a session with ("user:device"; pairs: peer_key) over the
  // pairwise session (base64 of type byte + message); CPU time and count into `c`.
  Result<std::string> encrypt(const std::string& device_key, std::string_view plaintext, Counters& c);
  // Decrypts a message from `sender_key`; CPU time and count (or failure) into `c`.
  Result<std::string> decrypt(std::string_view sender_key, std::string_view body_b64, Counters& c);
  uint64_t decrypted() const { return decrypted_; }
  // Saves the keyring's changes (client/keyring.h: once per batch), as the SDK does: before a
  // send's frame leaves (`sending`: its time counts as encrypt time) and before an ack (as
  // decrypt time). Nothing when nothing changed, or with an in-memory keyring.
  Result<void> commit(bool sending, Counters& c);

  // ---- groups: Sender Keys per conversation ----
  // Our SenderKeyDistributionMessage for `c` (the sender key is made on first use).
  std::vector<uint8_t> distribution(lean::ConvIdx c);
  // Stores `sender_key`'s distribution message for `c`; counts it.
  Result<void> accept_distribution(lean::ConvIdx c, const std::string& sender_key, std::span<const uint8_t> skdm);
  // One group message: base64 of type 7 ‖ SenderKeyMessage. CPU time into `c`.
  Result<std::string> group_encrypt(lean::ConvIdx c, std::string_view plaintext, Counters& counters);
  // Decrypts a SenderKeyMessage (without the type byte) from `sender_key`. CPU time into `c`.
  Result<std::string> group_decrypt(lean::ConvIdx c, const std::string& sender_key, std::string_view message,
                                    Counters& counters);
  uint64_t distributions_expected = 0;  // set by set-up: one per other sender in our groups
  uint64_t distributions_received() const { return distributions_received_; }

  // Seqs already decrypted per conversation: a redelivery (at-least-once) is recognised and
  // not decrypted again (the ratchet would refuse it as a replay, as it should).
  bool seen(lean::ConvIdx c, Seq seq) const;
  void mark_seen(lean::ConvIdx c, Seq seq);

 private:
  std::vector<uint64_t>* bits_of(lean::ConvIdx c);
  struct Group {
    lean::ConvIdx conv = 0;
    crypto::Uuid distribution_id{};
    crypto::SenderKeyRecord own;                              // ours, when we send here
    std::map<std::string, crypto::SenderKeyRecord> senders;  // by the sender's "user:device"
  };
  Group& group(lean::ConvIdx c);

  std::unique_ptr<client::Keyring> keyring_;
  std::vector<Group> groups_;
  uint64_t distributions_received_ = 0;
  uint64_t decrypted_ = 0;
  std::vector<std::pair<lean::ConvIdx, std::vector<uint64_t>>> seen_;  // one per conversation
};

// A `send` with per-device ciphertexts in `bodies` and, for entries with a registration id
// (0: not known yet), `registration_ids`; `keys` marks key distribution (docs/protocol.md §14.7).
struct DeviceCiphertext {
  std::string device_key;  // "user:device"
  std::string ciphertext_b64;
  uint32_t registration_id = 0;
};
std::string encode_encrypted_send(std::string_view client_msg_id, std::string_view conversation_id,
                                  const std::vector<DeviceCiphertext>& entries, bool keys = false);

// Signal's CiphertextMessage type of a SenderKeyMessage: the first byte of a group body.
inline constexpr uint8_t kSenderKeyType = 7;

}  // namespace tern::bench
