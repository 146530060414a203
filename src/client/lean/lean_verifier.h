// Verifier: checks wire-v1's delivery guarantees from the clients' side, as tern-bench sees
// them. Fed with every `sent` (acknowledged send) and every `message` (delivery) of every
// device in one process, it tracks:
//   - per device: messages it sent that were acknowledged, and distinct messages delivered;
//   - redeliveries: the same (conversation, seq) again to a device (allowed: at-least-once);
//   - duplicates: one sent message (sender device, sender sequence) under two seqs
//     (idempotent send broken);
//   - seq conflicts: two different messages under one (conversation, seq);
//   - order violations: a seq lower than one already seen in that conversation on the same
//     connection;
//   - foreign deliveries (to a non-member) and echoes (to the sending device itself);
//   - losses: acknowledged messages that some member device (other than the sending one)
//     never received. Losses are only meaningful once traffic has drained; outstanding()
//     says how many (message, recipient) pairs are still missing, so the caller waits for 0
//     (or a grace period) before totals().
// Any of duplicates, conflicts, order violations, foreign, echoes, bad seqs or losses makes
// ok() false.
//
// Memory: per conversation 16 bytes per seq, per (device, conversation) one bit per seq.
// Seqs above kMaxSeq are counted as bad and not stored, so a wild server cannot make us
// allocate without bound.
//
// Thread affinity: not synchronised; one per worker thread. Indices are dense and assigned
// by add_device / add_conversation.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/json/value.hpp>

#include "base/ids.h"
#include "base/result.h"

namespace tern::client::lean {

using DeviceIdx = uint32_t;
using ConvIdx = uint32_t;

// What a message body says about its origin (see BodyRecord).
struct MessageKey {
  DeviceIdx sender = 0;
  uint64_t sender_seq = 0;
};

struct VerifierTotals {
  uint64_t devices = 0;
  uint64_t conversations = 0;
  uint64_t acked = 0;            // distinct messages acknowledged with `sent`
  uint64_t expected = 0;         // Σ over acked messages of their recipient devices
  uint64_t delivered = 0;        // of `expected`, how many arrived
  uint64_t delivered_other = 0;  // distinct deliveries of messages not acknowledged to us
                                 // (system messages; sends whose `sent` never came)
  uint64_t redelivered = 0;
  uint64_t duplicates = 0;
  uint64_t seq_conflicts = 0;
  uint64_t order_violations = 0;
  uint64_t foreign = 0;
  uint64_t echoes = 0;
  uint64_t bad_seqs = 0;
  uint64_t losses = 0;
  uint64_t devices_with_loss = 0;
  // Per-device spread (over devices that are members of at least one conversation).
  uint64_t acked_per_device_min = 0, acked_per_device_max = 0;
  uint64_t delivered_per_device_min = 0, delivered_per_device_max = 0;
  std::vector<std::string> samples;  // the first few violations, described

  uint64_t violations() const {
    return duplicates + seq_conflicts + order_violations + foreign + echoes + bad_seqs + losses;
  }
  bool ok() const { return violations() == 0; }
  // Adds another process's totals (min/max combine, samples concatenate up to a bound).
  void merge(const VerifierTotals& o);
  boost::json::value to_json() const;
  static Result<VerifierTotals> from_json(const boost::json::value& v);
};

class Verifier {
 public:
  static constexpr Seq kMaxSeq = Seq{1} << 24;
  static constexpr size_t kMaxSamples = 10;

  enum class Delivery { kNew, kRepeat, kOutOfOrder, kForeign, kEcho, kBadSeq };

  DeviceIdx add_device();
  // Members are device indices; each device may be in many conversations.
  ConvIdx add_conversation(const std::vector<DeviceIdx>& members);
  size_t devices() const { return devices_.size(); }
  size_t conversations() const { return convs_.size(); }

  // A new connection of device `d` begins: order is judged per connection.
  void on_connection_start(DeviceIdx d);
  // `sent` for the message `sender_seq` of `sender`, stored as `seq` in `c`.
  void on_acked(DeviceIdx sender, ConvIdx c, Seq seq, uint64_t sender_seq);
  // A `message` frame for device `d`. `key` comes from the body (absent for system messages
  // and bodies that are not ours).
  Delivery on_delivered(DeviceIdx d, ConvIdx c, Seq seq, std::optional<MessageKey> key);

  // A message for a conversation this process does not know at all: counted as foreign.
  void on_unknown_conversation(DeviceIdx d);

  // Acknowledged (message, recipient device) pairs not delivered yet.
  uint64_t outstanding() const { return outstanding_; }
  // Violations so far, without the loss scan (cheap; usable while running).
  uint64_t violations_so_far() const;
  // Everything, including the loss scan over every acknowledged message (O(messages ×
  // members)); call once traffic has drained.
  VerifierTotals totals() const;
  // Per-device figures for reports: acknowledged sends and distinct deliveries.
  uint64_t device_acked(DeviceIdx d) const { return devices_[d].acked; }
  uint64_t device_delivered(DeviceIdx d) const { return devices_[d].delivered; }

 private:
  struct SeqInfo {
    uint32_t acked_by = 0;    // sender device + 1; 0 = not acknowledged
    uint32_t deliveries = 0;  // distinct deliveries to devices other than the sender
    uint64_t key = 0;         // packed MessageKey + 1 of the message at this seq; 0 = unknown
  };
  struct Conv {
    std::vector<DeviceIdx> members;
    std::vector<uint32_t> member_slot;  // index of this conversation in each member's slots
    std::vector<SeqInfo> seqs;          // by seq
    std::unordered_map<uint64_t, Seq> seq_of_key;
  };
  struct Slot {
    ConvIdx conv = 0;
    Seq last_on_connection = 0;
    std::vector<uint64_t> got;  // bit per seq
  };
  struct Device {
    std::vector<Slot> slots;
    uint64_t acked = 0;
    uint64_t delivered = 0;
  };

  static uint64_t pack(MessageKey k) { return ((uint64_t{k.sender} << 40) | (k.sender_seq & ((uint64_t{1} << 40) - 1))) + 1; }
  Slot* find_slot(DeviceIdx d, ConvIdx c);
  SeqInfo& seq_info(Conv& conv, Seq seq);
  // Records the key seen at `seq`; counts duplicates and conflicts.
  void note_key(Conv& conv, ConvIdx c, Seq seq, uint64_t key);
  void sample(std::string text);
  uint32_t recipients(const Conv& conv, DeviceIdx sender) const;

  std::vector<Device> devices_;
  std::vector<Conv> convs_;
  uint64_t outstanding_ = 0;
  uint64_t acked_ = 0;
  uint64_t redelivered_ = 0;
  uint64_t duplicates_ = 0;
  uint64_t seq_conflicts_ = 0;
  uint64_t order_violations_ = 0;
  uint64_t foreign_ = 0;
  uint64_t echoes_ = 0;
  uint64_t bad_seqs_ = 0;
  std::vector<std::string> samples_;
};

}  // namespace tern::client::lean
