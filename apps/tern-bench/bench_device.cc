// Device: one simulated client's protocol logic (see bench_worker.h).
#include <algorithm>
#include <charconv>
#include <random>

#include "base/base64.h"
#include "base/clock.h"
#include "bench_worker.h"

namespace tern::bench {
namespace {

// client_msg_id = "m" + sender seq: unique per device, which is all idempotency needs, and
// parsed back from `sent` and `error` without a lookup table.
std::optional<uint64_t> parse_cmid(std::string_view id) {
  if (id.size() < 2 || id[0] != 'm') return std::nullopt;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(id.data() + 1, id.data() + id.size(), v);
  if (ec != std::errc() || p != id.data() + id.size()) return std::nullopt;
  return v;
}

int64_t jitter_ms(int64_t cap) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return cap <= 0 ? 0 : static_cast<int64_t>(rng() % static_cast<uint64_t>(cap + 1));
}

}  // namespace

Device::Device(Worker& w, DeviceIdx index) : idx(index), w_(w), conn(w.io_, w.scratch_, *this) {}

void Device::set_phase(Phase p) {
  const bool was_connecting = phase_ == Phase::kConnecting || phase_ == Phase::kReplaying;
  const bool is_connecting = p == Phase::kConnecting || p == Phase::kReplaying;
  if (was_connecting && !is_connecting) --w_.connecting_;
  if (!was_connecting && is_connecting) ++w_.connecting_;
  phase_ = p;
}

void Device::connect_now() {
  want_online = true;
  attempt_started_us = mono_us();
  set_phase(Phase::kConnecting);
  if (mqtt) {
    // A persistent session (clean session 0): QoS 1 messages published while this client is
    // away are kept by the broker and sent on its return, as ternd replays after a reconnect.
    mqtt->open(w_.mqtt_target_for(idx),
               lean::MqttConnect{user, static_cast<uint16_t>(w_.opt_.mqtt_keepalive_s), /*clean_session=*/false});
    return;
  }
  conn.open(w_.target_for(idx), token);
}

void Device::go_offline(bool abort) {
  want_online = false;
  if (mqtt)
    mqtt->close(abort ? lean::MqttConnection::CloseMode::kAbort : lean::MqttConnection::CloseMode::kGraceful);
  else
    conn.close(abort ? lean::WsConnection::CloseMode::kAbort : lean::WsConnection::CloseMode::kGraceful);
  set_phase(Phase::kOffline);
}

void Device::drop_abruptly() {
  if (mqtt)
    mqtt->close(lean::MqttConnection::CloseMode::kAbort);
  else
    conn.close(lean::WsConnection::CloseMode::kAbort);
  set_phase(Phase::kOffline);
  // Straight back into the queue: a storm is everyone returning at once.
  w_.queue_connect(idx);
}

void Device::abort_attempt(std::string_view reason) {
  if (mqtt)
    mqtt->close(lean::MqttConnection::CloseMode::kAbort);
  else
    conn.close(lean::WsConnection::CloseMode::kAbort);
  closed(reason);
}

void Device::on_ws_open(lean::WsConnection&) { opened(); }

void Device::opened() {
  ++w_.counters_.connects;
  failures_in_row = 0;
  set_phase(Phase::kReplaying);
  w_.verifier_.on_connection_start(idx);
  // Everything not acknowledged goes (again) with its original client_msg_id: the server
  // answers a repeat with the first seq, so a retry can never create a second message.
  for (size_t i = 0; i < pending_.size(); ++i)
    if (!pending_[i].acked) transmit(base_ + i, pending_[i]);
}

void Device::on_ws_closed(lean::WsConnection&, std::string_view reason) { closed(reason); }

void Device::closed(std::string_view reason) {
  const bool was_open = phase_ == Phase::kReplaying || phase_ == Phase::kLive;
  set_phase(Phase::kOffline);
  if (was_open) {
    ++w_.counters_.disconnects;
    w_.count_error("disconnect: " + std::string(reason));
  } else {
    ++w_.counters_.connect_failures;
    w_.count_error("connect failed: " + std::string(reason));
  }
  if (!want_online) return;
  // Exponential backoff with full jitter, 50 ms doubling up to 5 s.
  ++failures_in_row;
  const int64_t cap = std::min<int64_t>(5000, int64_t{50} << std::min(failures_in_row, 7));
  w_.retry_later(idx, mono_us() + jitter_ms(cap) * 1000);
}

void Device::send_new(ConvIdx conv, int64_t intended_us, bool distribution) {
  ++w_.counters_.scheduled;
  if (pending_.size() >= (mqtt ? std::min<size_t>(w_.opt_.max_pending, kMqttMaxPending) : w_.opt_.max_pending)) {
    ++w_.counters_.send_failed;
    w_.count_error("local: too many unacknowledged sends");
    return;
  }
  const uint64_t seq = next_seq_++;
  pending_.push_back(Pending{conv, intended_us, false, false, distribution, {}});
  ++unacked_;
  ++w_.unacked_sends_;
  if (phase_ == Phase::kReplaying || phase_ == Phase::kLive) {
    // --typing: the sender "types" before every post, so typing load scales with the posts.
    if (w_.opt_.typing && !mqtt) {
      if (conn.send_text(proto::encode_typing_frame(w_.convs_[conv].id, true))) ++w_.counters_.typing_sent;
      else w_.count_error("local: write queue full");
    }
    transmit(seq, pending_.back());
  }
}

void Device::resend(uint64_t sender_seq) {
  if (sender_seq < base_ || sender_seq - base_ >= pending_.size()) return;
  Pending& p = pending_[sender_seq - base_];
  // Not connected: the next connection sends every unacknowledged send anyway.
  if (!p.acked && (phase_ == Phase::kReplaying || phase_ == Phase::kLive)) transmit(sender_seq, p);
}

void Device::transmit(uint64_t sender_seq, Pending& p) {
  if (mqtt) return transmit_mqtt(sender_seq, p);
  char cmid_buf[24];
  cmid_buf[0] = 'm';
  auto [end, ec] = std::to_chars(cmid_buf + 1, cmid_buf + sizeof cmid_buf, sender_seq);
  const std::string_view cmid(cmid_buf, static_cast<size_t>(end - cmid_buf));
  std::string frame;
  if (crypto) {
    frame = encrypted_frame(cmid, sender_seq, p);
    if (frame.empty()) return;
  } else {
    w_.encoder_.encode(lean::BodyRecord{idx, sender_seq, p.intended_us}, scratch_body_);
    frame = proto::encode_send(cmid, w_.convs_[p.conv].id, scratch_body_);
    if (!p.transmitted) w_.counters_.body_bytes += scratch_body_.size();
  }
  if (!p.transmitted) w_.counters_.frame_bytes += frame.size();
  count_transmit(p, conn.send_text(frame));
}

std::string Device::encrypted_frame(std::string_view cmid, uint64_t sender_seq, Pending& p) {
  if (!p.frame.empty()) return p.frame;
  auto frame = build_encrypted_frame(cmid, sender_seq, p);
  if (frame) {  // its ratchet steps saved before it leaves (one save for all its ciphertexts)
    if (auto r = crypto->commit(/*sending=*/true, w_.counters_); !r) frame = r.error();
  }
  if (!frame) {
    // Not sendable: given up like a refused send, and visible in the errors.
    w_.count_error("encrypt: " + frame.error().message);
    p.acked = true;
    --unacked_;
    --w_.unacked_sends_;
    ++w_.counters_.send_failed;
    settle(sender_seq);
    return {};
  }
  p.frame = std::move(*frame);
  return p.frame;
}

Result<std::string> Device::build_encrypted_frame(std::string_view cmid, uint64_t sender_seq, const Pending& p) {
  const lean::BodyRecord record{idx, sender_seq, p.intended_us};
  const std::string& conv_id = w_.convs_[p.conv].id;
  if (w_.opt_.workload == Workload::kPairs) {
    // The plaintext is the record as raw bytes padded to --size (what a receiver checks).
    lean::encode_record_raw(record, w_.encoder_.body_bytes(), scratch_plain_);
    auto c = crypto->encrypt(crypto->peer_key, scratch_plain_, w_.counters_);
    if (!c) return c.error();
    w_.counters_.body_bytes += c->size();
    return encode_encrypted_send(
        cmid, conv_id, {{crypto->peer_key, std::move(*c), crypto->keyring().session_registration(crypto->peer_key)}});
  }
  if (!p.distribution) {  // a group message: one SenderKeyMessage for every member
    lean::encode_record_raw(record, w_.encoder_.body_bytes(), scratch_plain_);
    auto c = crypto->group_encrypt(p.conv, scratch_plain_, w_.counters_);
    if (!c) return c.error();
    w_.counters_.body_bytes += c->size();
    return proto::encode_send(cmid, conv_id, *c);
  }
  // Our sender key, behind the record, to every other member over the pairwise sessions.
  lean::encode_record_raw(record, lean::kRecordBytes, scratch_plain_);
  const std::vector<uint8_t> skdm = crypto->distribution(p.conv);
  scratch_plain_.append(reinterpret_cast<const char*>(skdm.data()), skdm.size());
  std::vector<DeviceCiphertext> entries;
  for (DeviceIdx m : w_.convs_[p.conv].members) {
    if (m == idx) continue;
    const std::string key = w_.device_key(m);
    auto c = crypto->encrypt(key, scratch_plain_, w_.counters_);
    if (!c) return c.error();
    w_.counters_.body_bytes += c->size();
    entries.push_back({key, std::move(*c), crypto->keyring().session_registration(key)});
  }
  return encode_encrypted_send(cmid, conv_id, entries, /*keys=*/true);
}

std::optional<lean::BodyRecord> Device::decrypt_delivery(ConvIdx conv, const proto::MessageEvent& e) {
  if (crypto->seen(conv, e.seq)) return std::nullopt;  // a redelivery: the verifier counts it
  const std::string sender_key = e.sender + ":" + std::to_string(e.sender_device);
  const auto head = base64_decode(std::string_view(e.body).substr(0, 4));
  const bool group_message = head && !head->empty() && static_cast<uint8_t>((*head)[0]) == kSenderKeyType;
  Result<std::string> plain = make_error(ErrorCode::kMalformed, "body is not base64");
  if (group_message) {
    if (auto raw = base64_decode(e.body))
      plain = crypto->group_decrypt(conv, sender_key, std::string_view(*raw).substr(1), w_.counters_);
  } else {
    plain = crypto->decrypt(sender_key, e.body, w_.counters_);
  }
  if (!plain) {
    w_.count_error("decrypt: " + plain.error().message);
    return std::nullopt;
  }
  crypto->mark_seen(conv, e.seq);
  auto rec = lean::decode_record_raw(*plain);
  bool ok = false;
  if (rec && w_.opt_.workload == Workload::kGroup && !group_message) {
    // A sender-key distribution: the record, then the SenderKeyDistributionMessage.
    lean::encode_record_raw(*rec, lean::kRecordBytes, scratch_plain_);
    const auto skdm = std::string_view(*plain).substr(lean::kRecordBytes);
    ok = plain->compare(0, lean::kRecordBytes, scratch_plain_) == 0 &&
         crypto->accept_distribution(conv, sender_key, {reinterpret_cast<const uint8_t*>(skdm.data()), skdm.size()});
  } else if (rec) {
    lean::encode_record_raw(*rec, w_.encoder_.body_bytes(), scratch_plain_);
    ok = scratch_plain_ == *plain;
  }
  if (!ok) {
    ++w_.counters_.plaintext_mismatch;
    w_.count_error("decrypt: the plaintext is not what was sent");
    return std::nullopt;
  }
  return rec;
}

void Device::count_transmit(Pending& p, bool queued) {
  if (!queued) {
    w_.count_error("local: write queue full");
    return;  // stays untransmitted; retried on the next connection
  }
  if (p.transmitted) {
    ++w_.counters_.retransmitted;
  } else {
    p.transmitted = true;
    ++w_.counters_.written;
  }
}

void Device::settle(uint64_t sender_seq) {
  (void)sender_seq;
  while (!pending_.empty() && pending_.front().acked) {
    pending_.pop_front();
    ++base_;
  }
}

void Device::on_ws_text(lean::WsConnection&, std::string_view text) {
  auto frame = proto::parse_server_frame(text);
  if (!frame) {
    w_.count_error("bad server frame");
    return;
  }
  std::visit(
      [this](const auto& ev) {
        using T = std::decay_t<decltype(ev)>;
        if constexpr (std::is_same_v<T, proto::SentEvent>) {
          on_sent(ev);
        } else if constexpr (std::is_same_v<T, proto::MessageEvent>) {
          on_message(ev);
        } else if constexpr (std::is_same_v<T, proto::SyncedEvent>) {
          if (phase_ == Phase::kReplaying) {
            set_phase(Phase::kLive);
            ++w_.counters_.synced;
            if (w_.catchup_dev_ == idx && w_.catchup_connect_us_ && !w_.catchup_synced_us_)
              w_.catchup_synced_us_ = mono_us();
          }
        } else if constexpr (std::is_same_v<T, proto::ReceiptEvent>) {
          on_receipt(ev);
        } else if constexpr (std::is_same_v<T, proto::ErrorEvent>) {
          on_error(ev);
        } else {
          ++w_.counters_.ephemeral;
        }
      },
      *frame);
}

void Device::on_sent(const proto::SentEvent& e) {
  const auto seq = parse_cmid(e.client_msg_id);
  if (!seq || *seq < base_ || *seq - base_ >= pending_.size()) return;  // an old repeat
  Pending& p = pending_[*seq - base_];
  if (p.acked) return;
  auto conv = w_.conv_of(e.conversation_id);
  if (!conv || *conv != p.conv) {
    w_.count_error("sent for the wrong conversation");
    return;
  }
  acknowledged(*seq, p, e.seq);
}

void Device::acknowledged(uint64_t sender_seq, Pending& p, Seq seq) {
  p.acked = true;
  --unacked_;
  --w_.unacked_sends_;
  ++w_.counters_.acked;
  const int64_t now = mono_us();
  w_.step_ack_latency_.record(static_cast<uint64_t>(std::max<int64_t>(0, now - p.intended_us)));
  w_.verifier_.on_acked(idx, p.conv, seq, sender_seq);
  if (w_.opt_.workload == Workload::kChannel) w_.posts_.emplace_back(seq, sender_seq);
  if (std::find(sent_in_.begin(), sent_in_.end(), p.conv) == sent_in_.end()) sent_in_.push_back(p.conv);
  settle(sender_seq);
}

void Device::on_receipt(const proto::ReceiptEvent& e) {
  ++w_.counters_.receipts;
  // Receipts are meant for the devices of the message's sender (wire-v1, guarantee 5). One
  // for a conversation this device never sent in is not a violation, but it is traffic.
  auto conv = w_.conv_of(e.conversation_id);
  if (conv && std::find(sent_in_.begin(), sent_in_.end(), *conv) == sent_in_.end())
    ++w_.counters_.receipts_to_non_senders;
}

void Device::on_error(const proto::ErrorEvent& e) {
  w_.count_error(e.code.empty() ? std::string_view("error") : std::string_view(e.code));
  const auto seq = parse_cmid(e.ref);
  if (!seq || *seq < base_ || *seq - base_ >= pending_.size()) return;
  Pending& p = pending_[*seq - base_];
  if (p.acked) return;
  if (w_.opt_.workload == Workload::kChannel && (e.code == "overloaded" || e.code == "rate_limited")) {
    // The channel's one poster retries a refusal the contract calls temporary (same
    // client_msg_id, after 50 ms), as a real client would: the number of posts is the measure.
    w_.resend_list_.push_back({mono_us() + 50'000, {idx, *seq}});
    return;
  }
  // The server refused this send (rate limit, overload, ...): it will not be stored, so it
  // is neither expected by the verifier nor retried.
  p.acked = true;
  --unacked_;
  --w_.unacked_sends_;
  ++w_.counters_.send_failed;
  settle(*seq);
}

void Device::count_delivery(lean::Verifier::Delivery kind, const lean::BodyRecord* rec) {
  if (kind == lean::Verifier::Delivery::kRepeat) ++w_.counters_.redelivered;
  if (kind == lean::Verifier::Delivery::kNew || kind == lean::Verifier::Delivery::kOutOfOrder) {
    if (!rec) {
      ++w_.counters_.other_messages;
    } else if (phase_ == Phase::kLive) {
      ++w_.counters_.delivered;
      const auto lat = static_cast<uint64_t>(std::max<int64_t>(0, mono_us() - rec->sent_us));
      w_.step_latency_.record(lat);
      w_.interval_latency_.record(lat);
    } else {
      ++w_.counters_.replayed;
    }
  }
}

void Device::on_message(const proto::MessageEvent& e) {
  auto conv = w_.conv_of(e.conversation_id);
  if (!conv) {
    w_.verifier_.on_unknown_conversation(idx);
    return;
  }
  std::optional<lean::MessageKey> key;
  std::optional<lean::BodyRecord> rec;
  if (!e.system_json) rec = crypto ? decrypt_delivery(*conv, e) : lean::decode_body(e.body);
  if (rec) key = lean::MessageKey{rec->sender, rec->sender_seq};
  count_delivery(w_.verifier_.on_delivered(idx, *conv, e.seq, key), rec ? &*rec : nullptr);
  if (w_.catchup_dev_ == idx) w_.note_catchup_delivery(idx);
  // Cumulative ack of the highest seq seen. The verifier (not this ack) finds gaps: a lean
  // client that acks past a missing seq makes a server loss visible instead of hiding it.
  AckSlot* slot = nullptr;
  for (auto& a : acks_)
    if (a.conv == *conv) slot = &a;
  if (!slot) slot = &acks_.emplace_back(AckSlot{*conv});
  slot->highest = std::max(slot->highest, e.seq);
  ++unacked_msgs_;
  if (unacked_msgs_ >= static_cast<uint32_t>(w_.opt_.ack_every)) {
    flush_acks();
  } else if (!ack_listed_) {
    ack_listed_ = true;
    w_.ack_dirty_.push_back(idx);
  }
}

void Device::flush_acks() {
  unacked_msgs_ = 0;
  if (w_.acks_paused_) return;  // the channel's store probe: flushed when it ends
  if (phase_ != Phase::kReplaying && phase_ != Phase::kLive) return;
  // Nothing acked before the keys that decrypted it are saved (one save per ack flush).
  if (crypto) {
    if (auto r = crypto->commit(/*sending=*/false, w_.counters_); !r) {
      w_.count_error("keyring: " + r.error().message);
      return;
    }
  }
  for (auto& a : acks_) {
    if (a.highest <= a.acked) continue;
    if (!conn.send_text(proto::encode_ack(w_.convs_[a.conv].id, a.highest))) {
      w_.count_error("local: write queue full");
      continue;
    }
    a.acked = a.highest;
    ++w_.counters_.acks_sent;
  }
}

}  // namespace tern::bench
