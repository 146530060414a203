#include "client/lean/lean_verifier.h"

#include <algorithm>
#include <cassert>

#include <boost/json.hpp>

namespace tern::client::lean {
namespace json = boost::json;

// ---- VerifierTotals ----

void VerifierTotals::merge(const VerifierTotals& o) {
  const bool had = devices > 0;
  const bool other_has = o.devices > 0;
  if (other_has) {
    acked_per_device_min = had ? std::min(acked_per_device_min, o.acked_per_device_min) : o.acked_per_device_min;
    acked_per_device_max = std::max(acked_per_device_max, o.acked_per_device_max);
    delivered_per_device_min =
        had ? std::min(delivered_per_device_min, o.delivered_per_device_min) : o.delivered_per_device_min;
    delivered_per_device_max = std::max(delivered_per_device_max, o.delivered_per_device_max);
  }
  devices += o.devices;
  conversations += o.conversations;
  acked += o.acked;
  expected += o.expected;
  delivered += o.delivered;
  delivered_other += o.delivered_other;
  redelivered += o.redelivered;
  duplicates += o.duplicates;
  seq_conflicts += o.seq_conflicts;
  order_violations += o.order_violations;
  foreign += o.foreign;
  echoes += o.echoes;
  bad_seqs += o.bad_seqs;
  losses += o.losses;
  devices_with_loss += o.devices_with_loss;
  for (const auto& s : o.samples)
    if (samples.size() < Verifier::kMaxSamples) samples.push_back(s);
}

json::value VerifierTotals::to_json() const {
  json::array s;
  for (const auto& x : samples) s.emplace_back(x);
  return json::object{
      {"ok", ok()},
      {"devices", devices},
      {"conversations", conversations},
      {"acked", acked},
      {"expected_deliveries", expected},
      {"delivered", delivered},
      {"delivered_other", delivered_other},
      {"redelivered", redelivered},
      {"duplicates", duplicates},
      {"seq_conflicts", seq_conflicts},
      {"order_violations", order_violations},
      {"foreign", foreign},
      {"echoes", echoes},
      {"bad_seqs", bad_seqs},
      {"losses", losses},
      {"devices_with_loss", devices_with_loss},
      {"acked_per_device", json::object{{"min", acked_per_device_min}, {"max", acked_per_device_max}}},
      {"delivered_per_device", json::object{{"min", delivered_per_device_min}, {"max", delivered_per_device_max}}},
      {"samples", std::move(s)},
  };
}

Result<VerifierTotals> VerifierTotals::from_json(const json::value& v) {
  const auto* o = v.if_object();
  if (!o) return make_error(ErrorCode::kMalformed, "verifier JSON");
  auto num = [](const json::value* x) -> uint64_t {
    if (!x) return 0;
    boost::system::error_code ec;
    const auto n = x->to_number<uint64_t>(ec);
    return ec ? 0 : n;
  };
  auto get = [&](std::string_view k) { return num(o->if_contains(k)); };
  auto sub = [&](std::string_view k, std::string_view f) -> uint64_t {
    const auto* x = o->if_contains(k);
    return x && x->is_object() ? num(x->as_object().if_contains(f)) : 0;
  };
  VerifierTotals t;
  t.devices = get("devices");
  t.conversations = get("conversations");
  t.acked = get("acked");
  t.expected = get("expected_deliveries");
  t.delivered = get("delivered");
  t.delivered_other = get("delivered_other");
  t.redelivered = get("redelivered");
  t.duplicates = get("duplicates");
  t.seq_conflicts = get("seq_conflicts");
  t.order_violations = get("order_violations");
  t.foreign = get("foreign");
  t.echoes = get("echoes");
  t.bad_seqs = get("bad_seqs");
  t.losses = get("losses");
  t.devices_with_loss = get("devices_with_loss");
  t.acked_per_device_min = sub("acked_per_device", "min");
  t.acked_per_device_max = sub("acked_per_device", "max");
  t.delivered_per_device_min = sub("delivered_per_device", "min");
  t.delivered_per_device_max = sub("delivered_per_device", "max");
  if (const auto* s = o->if_contains("samples"); s && s->is_array())
    for (const auto& e : s->as_array())
      if (e.is_string()) t.samples.emplace_back(e.as_string());
  return t;
}

// ---- Verifier ----

DeviceIdx Verifier::add_device() {
  devices_.emplace_back();
  return static_cast<DeviceIdx>(devices_.size() - 1);
}

ConvIdx Verifier::add_conversation(const std::vector<DeviceIdx>& members) {
  const auto c = static_cast<ConvIdx>(convs_.size());
  Conv conv;
  conv.members = members;
  for (DeviceIdx m : members) {
    assert(m < devices_.size());
    auto& slots = devices_[m].slots;
    conv.member_slot.push_back(static_cast<uint32_t>(slots.size()));
    slots.push_back(Slot{c, 0, {}});
  }
  convs_.push_back(std::move(conv));
  return c;
}

void Verifier::on_unknown_conversation(DeviceIdx d) {
  ++foreign_;
  sample("device #" + std::to_string(d) + " got a message of a conversation it never joined");
}

void Verifier::on_connection_start(DeviceIdx d) {
  for (auto& s : devices_[d].slots) s.last_on_connection = 0;
}

Verifier::Slot* Verifier::find_slot(DeviceIdx d, ConvIdx c) {
  for (auto& s : devices_[d].slots)
    if (s.conv == c) return &s;
  return nullptr;
}

Verifier::SeqInfo& Verifier::seq_info(Conv& conv, Seq seq) {
  if (conv.seqs.size() <= seq) conv.seqs.resize(std::max<size_t>(seq + 1, conv.seqs.size() * 2));
  return conv.seqs[seq];
}

uint32_t Verifier::recipients(const Conv& conv, DeviceIdx sender) const {
  const bool member = std::find(conv.members.begin(), conv.members.end(), sender) != conv.members.end();
  return static_cast<uint32_t>(conv.members.size() - (member ? 1 : 0));
}

void Verifier::sample(std::string text) {
  if (samples_.size() < kMaxSamples) samples_.push_back(std::move(text));
}

void Verifier::note_key(Conv& conv, ConvIdx c, Seq seq, uint64_t key) {
  SeqInfo& info = seq_info(conv, seq);
  if (info.key == key) return;
  if (info.key != 0) {
    ++seq_conflicts_;
    sample("conversation #" + std::to_string(c) + " seq " + std::to_string(seq) + " carries two different messages");
    return;
  }
  info.key = key;
  auto [it, inserted] = conv.seq_of_key.emplace(key, seq);
  if (!inserted && it->second != seq) {
    ++duplicates_;
    sample("conversation #" + std::to_string(c) + ": one sent message stored twice, as seq " +
           std::to_string(it->second) + " and seq " + std::to_string(seq));
  }
}

void Verifier::on_acked(DeviceIdx sender, ConvIdx c, Seq seq, uint64_t sender_seq) {
  assert(sender < devices_.size() && c < convs_.size());
  Conv& conv = convs_[c];
  if (seq == 0 || seq > kMaxSeq) {
    ++bad_seqs_;
    sample("sent with seq " + std::to_string(seq) + " in conversation #" + std::to_string(c));
    return;
  }
  const uint64_t key = pack({sender, sender_seq});
  note_key(conv, c, seq, key);
  SeqInfo& info = seq_info(conv, seq);
  if (info.key != key) return;  // a conflict, already counted
  if (info.acked_by != 0) return;  // the same `sent` again (a retried send): fine
  info.acked_by = sender + 1;
  ++acked_;
  ++devices_[sender].acked;
  const uint32_t want = recipients(conv, sender);
  if (want > info.deliveries) outstanding_ += want - info.deliveries;
}

Verifier::Delivery Verifier::on_delivered(DeviceIdx d, ConvIdx c, Seq seq, std::optional<MessageKey> key) {
  assert(d < devices_.size() && c < convs_.size());
  Slot* slot = find_slot(d, c);
  if (!slot) {
    ++foreign_;
    sample("device #" + std::to_string(d) + " got a message of conversation #" + std::to_string(c) +
           " it is not a member of");
    return Delivery::kForeign;
  }
  if (seq == 0 || seq > kMaxSeq) {
    ++bad_seqs_;
    sample("device #" + std::to_string(d) + " got seq " + std::to_string(seq));
    return Delivery::kBadSeq;
  }
  Delivery kind = Delivery::kNew;
  if (seq < slot->last_on_connection) {
    ++order_violations_;
    sample("device #" + std::to_string(d) + " conversation #" + std::to_string(c) + ": seq " + std::to_string(seq) +
           " after seq " + std::to_string(slot->last_on_connection) + " on one connection");
    kind = Delivery::kOutOfOrder;
  } else {
    slot->last_on_connection = seq;
  }
  const size_t word = seq / 64;
  const uint64_t bit = uint64_t{1} << (seq % 64);
  if (slot->got.size() <= word) slot->got.resize(std::max<size_t>(word + 1, slot->got.size() * 2));
  if (slot->got[word] & bit) {
    ++redelivered_;
    return kind == Delivery::kNew ? Delivery::kRepeat : kind;
  }
  slot->got[word] |= bit;
  ++devices_[d].delivered;
  Conv& conv = convs_[c];
  if (key) {
    if (key->sender == d) {
      ++echoes_;
      sample("device #" + std::to_string(d) + " got its own message back (seq " + std::to_string(seq) + ")");
      return Delivery::kEcho;
    }
    note_key(conv, c, seq, pack(*key));
  }
  SeqInfo& info = seq_info(conv, seq);
  ++info.deliveries;
  if (info.acked_by != 0 && info.acked_by - 1 != d) {
    assert(outstanding_ > 0);
    if (outstanding_ > 0) --outstanding_;
  }
  return kind;
}

uint64_t Verifier::violations_so_far() const {
  return duplicates_ + seq_conflicts_ + order_violations_ + foreign_ + echoes_ + bad_seqs_;
}

VerifierTotals Verifier::totals() const {
  VerifierTotals t;
  t.devices = devices_.size();
  t.conversations = convs_.size();
  t.acked = acked_;
  t.redelivered = redelivered_;
  t.duplicates = duplicates_;
  t.seq_conflicts = seq_conflicts_;
  t.order_violations = order_violations_;
  t.foreign = foreign_;
  t.echoes = echoes_;
  t.bad_seqs = bad_seqs_;
  t.samples = samples_;
  std::vector<uint64_t> lost(devices_.size(), 0);
  uint64_t all_distinct = 0;
  for (const auto& dev : devices_) all_distinct += dev.delivered;
  uint64_t delivered_acked = 0;
  for (ConvIdx c = 0; c < convs_.size(); ++c) {
    const Conv& conv = convs_[c];
    for (Seq seq = 1; seq < conv.seqs.size(); ++seq) {
      const SeqInfo& info = conv.seqs[seq];
      if (info.acked_by == 0) continue;
      const DeviceIdx sender = info.acked_by - 1;
      for (size_t i = 0; i < conv.members.size(); ++i) {
        const DeviceIdx m = conv.members[i];
        if (m == sender) continue;
        ++t.expected;
        const Slot& slot = devices_[m].slots[conv.member_slot[i]];
        const size_t word = seq / 64;
        const bool got = word < slot.got.size() && (slot.got[word] >> (seq % 64)) & 1;
        if (got) {
          ++delivered_acked;
          continue;
        }
        ++t.losses;
        if (lost[m]++ == 0 && t.samples.size() < kMaxSamples)
          t.samples.push_back("device #" + std::to_string(m) + " never got seq " + std::to_string(seq) +
                              " of conversation #" + std::to_string(c) + " (acknowledged to device #" +
                              std::to_string(sender) + ")");
      }
    }
  }
  t.delivered = delivered_acked;
  t.delivered_other = all_distinct - std::min(all_distinct, delivered_acked);
  bool first = true;
  for (DeviceIdx d = 0; d < devices_.size(); ++d) {
    if (lost[d]) ++t.devices_with_loss;
    if (devices_[d].slots.empty()) continue;
    const uint64_t a = devices_[d].acked, del = devices_[d].delivered;
    if (first) {
      t.acked_per_device_min = t.acked_per_device_max = a;
      t.delivered_per_device_min = t.delivered_per_device_max = del;
      first = false;
    } else {
      t.acked_per_device_min = std::min(t.acked_per_device_min, a);
      t.acked_per_device_max = std::max(t.acked_per_device_max, a);
      t.delivered_per_device_min = std::min(t.delivered_per_device_min, del);
      t.delivered_per_device_max = std::max(t.delivered_per_device_max, del);
    }
  }
  return t;
}

}  // namespace tern::client::lean
