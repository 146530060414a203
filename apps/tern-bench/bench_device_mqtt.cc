// Device, MQTT mode: the same simulated client speaking MQTT 3.1.1 with QoS 1 (see
// bench_worker.h). What plays which part of wire-v1:
//   send + `sent`        PUBLISH QoS 1 to the partner's topic + the broker's PUBACK
//   retry, same id       PUBLISH again with DUP and the same packet id after a reconnect
//   replay → `synced`    CONNACK, then SUBSCRIBE → SUBACK (the persistent session's queued
//                        messages arrive in between and count as replayed)
//   `message` + ack      PUBLISH from the broker + our PUBACK, sent at once for each message
// The verifier sees each direction of a pair as a conversation whose seq is the sender's
// own sequence: losses, redeliveries, order (per connection), foreign deliveries and echoes
// are checked as for ternd; "duplicates" and "seq conflicts" cannot arise, since no server
// assigns seqs.
#include "bench_worker.h"

namespace tern::bench {
namespace {

uint16_t packet_id_of(uint64_t sender_seq) { return static_cast<uint16_t>((sender_seq - 1) % kMqttMaxPending + 1); }

}  // namespace

void Device::transmit_mqtt(uint64_t sender_seq, Pending& p) {
  lean::encode_record_raw(lean::BodyRecord{idx, sender_seq, p.intended_us}, w_.opt_.body_bytes, scratch_body_);
  count_transmit(p, mqtt->publish(w_.convs_[p.conv].id, scratch_body_, 1, packet_id_of(sender_seq),
                                  /*dup=*/p.transmitted));
}

void Device::keepalive(int64_t now) {
  if (!mqtt || mqtt->state() != lean::MqttConnection::State::kOpen) return;
  if (now - mqtt->last_queued_us() >= int64_t{w_.opt_.mqtt_keepalive_s} * 500'000) mqtt->pingreq();
}

void Device::on_mqtt_open(lean::MqttConnection& c, bool /*session_present*/) {
  opened();  // counts, starts the verifier's connection, re-publishes what was not acknowledged
  // Always (re)subscribe: idempotent for a session that already has it. A device that only
  // publishes (a channel's poster) is live at once.
  if (!mqtt_in) {
    if (phase_ == Phase::kReplaying) {
      set_phase(Phase::kLive);
      ++w_.counters_.synced;
    }
    return;
  }
  if (!c.subscribe(kMqttSubscribeId, w_.convs_[*mqtt_in].id, 1)) w_.count_error("local: write queue full");
}

void Device::on_mqtt_suback(lean::MqttConnection&, const lean::MqttSuback& s) {
  if (s.packet_id != kMqttSubscribeId) return;
  if (s.return_codes.empty() || static_cast<uint8_t>(s.return_codes[0]) == 0x80) {
    // The device stays "replaying", so the run reports it as not online.
    w_.count_error("mqtt: subscription refused");
    return;
  }
  if (phase_ == Phase::kReplaying) {
    set_phase(Phase::kLive);
    ++w_.counters_.synced;
  }
}

void Device::on_mqtt_puback(lean::MqttConnection&, uint16_t packet_id) {
  if (packet_id == 0 || packet_id > kMqttMaxPending || pending_.empty()) return;
  // The one pending send with this packet id (there are at most kMqttMaxPending).
  const uint64_t base_id = (base_ - 1) % kMqttMaxPending;
  const uint64_t offset = (packet_id - 1 + kMqttMaxPending - base_id) % kMqttMaxPending;
  if (offset >= pending_.size()) return;  // an old repeat
  Pending& p = pending_[offset];
  if (p.acked || !p.transmitted) return;
  acknowledged(base_ + offset, p, /*seq=*/base_ + offset);
}

void Device::on_mqtt_publish(lean::MqttConnection& c, const lean::MqttPublish& m) {
  if (m.qos == 1) {
    if (c.puback(m.packet_id))
      ++w_.counters_.acks_sent;
    else
      w_.count_error("local: write queue full");
  } else if (m.qos == 2) {
    w_.count_error("mqtt: unexpected QoS 2 delivery");
  }
  auto conv = w_.conv_of(m.topic);
  if (!conv) {
    w_.verifier_.on_unknown_conversation(idx);
    return;
  }
  const auto rec = lean::decode_record_raw(m.payload);
  if (!rec) {
    ++w_.counters_.other_messages;
    return;
  }
  count_delivery(w_.verifier_.on_delivered(idx, *conv, rec->sender_seq, lean::MessageKey{rec->sender, rec->sender_seq}),
                 &*rec);
}

void Device::on_mqtt_closed(lean::MqttConnection&, std::string_view reason) { closed(reason); }

}  // namespace tern::bench
