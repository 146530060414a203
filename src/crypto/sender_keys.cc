#include "crypto/sender_keys.h"

#include <algorithm>
#include <cstring>

#include "crypto/aes_cbc.h"
#include "crypto/hkdf.h"
#include "crypto/protobuf.h"
#include "crypto/ratchet.h"  // chain_message_seed / chain_next
#include "crypto/record_format.h"

namespace tern::crypto {
namespace {

constexpr std::string_view kGroupInfo = "WhisperGroup";

struct GroupKeys {
  std::array<uint8_t, 16> iv{};
  Key32 cipher_key;
  ~GroupKeys() { wipe(iv); }
};

GroupKeys derive_group_keys(const Key32& seed) {
  std::array<uint8_t, 48> okm;
  (void)hkdf({}, seed.bytes, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(kGroupInfo.data()), kGroupInfo.size()),
             okm);
  GroupKeys k;
  std::memcpy(k.iv.data(), okm.data(), 16);
  std::memcpy(k.cipher_key.data(), okm.data() + 16, 32);
  wipe(okm);
  return k;
}

SenderKeyState* find_chain(SenderKeyRecord& r, uint32_t chain_id) {
  for (auto& s : r.states) {
    if (s.chain_id == chain_id) return &s;
  }
  return nullptr;
}

Result<Key32> take_seed(SenderKeyState& s, uint32_t iteration, int64_t now_s, const RatchetLimits& limits) {
  if (iteration < s.iteration) {
    for (auto it = s.skipped.begin(); it != s.skipped.end(); ++it) {
      if (it->iteration == iteration) {
        Key32 seed = it->seed;
        s.skipped.erase(it);
        return seed;
      }
    }
    return Errc::kDuplicate;
  }
  if (iteration - s.iteration > limits.max_skip) return Errc::kTooFarAhead;
  while (s.iteration < iteration) {
    s.skipped.push_back({s.iteration, chain_message_seed(s.chain_key), now_s});
    s.chain_key = chain_next(s.chain_key);
    ++s.iteration;
  }
  Key32 seed = chain_message_seed(s.chain_key);
  s.chain_key = chain_next(s.chain_key);
  ++s.iteration;
  return seed;
}

// Drops expired kept keys, then the oldest beyond the cap.
void prune_skipped(SenderKeyState& s, int64_t now_s, const RatchetLimits& limits) {
  std::erase_if(s.skipped, [&](const auto& k) { return now_s - k.created_at_s > limits.skipped_key_max_age_s; });
  size_t cap = std::min(limits.max_skipped_keys, kMaxStoredSkippedKeys);
  while (s.skipped.size() > cap) s.skipped.pop_front();
}

void add_state(SenderKeyRecord& r, SenderKeyState state) {
  std::erase_if(r.states, [&](const SenderKeyState& s) { return s.chain_id == state.chain_id; });
  while (r.states.size() >= kMaxSenderKeyStates) r.states.pop_back();
  r.states.push_front(std::move(state));
}

}  // namespace

SenderKeyDistributionMessage create_sender_key_distribution(SenderKeyRecord& own, const Uuid& distribution_id) {
  if (own.empty()) {
    SenderKeyState s;
    s.chain_id = random_u32() & 0x7fffffff;  // libsignal draws 31 bits
    random_bytes(s.chain_key.bytes);
    KeyPair signing = KeyPair::generate();
    s.signing_public = signing.public_key;
    s.signing_private = Key32(std::span<const uint8_t, 32>(signing.private_key.data(), 32));
    own.states.push_front(std::move(s));
  }
  const SenderKeyState& s = own.states.front();
  return SenderKeyDistributionMessage::make(distribution_id, s.chain_id, s.iteration, s.chain_key.span(),
                                            s.signing_public);
}

Result<void> process_sender_key_distribution(SenderKeyRecord& record, const SenderKeyDistributionMessage& message) {
  if (SenderKeyState* existing = find_chain(record, message.chain_id);
      existing != nullptr && existing->signing_public == message.signing_key) {
    return {};  // a repeat (at-least-once delivery): keep our progress along the chain
  }
  SenderKeyState s;
  s.chain_id = message.chain_id;
  s.iteration = message.iteration;
  s.chain_key = Key32(std::span<const uint8_t, 32>(message.chain_key));
  s.signing_public = message.signing_key;
  add_state(record, std::move(s));
  return {};
}

Result<std::vector<uint8_t>> group_encrypt(SenderKeyRecord& own, const Uuid& distribution_id,
                                           std::span<const uint8_t> plaintext) {
  if (own.empty() || !own.states.front().signing_private) return Errc::kNoSession;
  SenderKeyState& s = own.states.front();
  if (s.iteration == UINT32_MAX) return Errc::kTooLarge;
  Key32 seed = chain_message_seed(s.chain_key);
  GroupKeys keys = derive_group_keys(seed);
  auto ct = aes_cbc_encrypt(keys.cipher_key.bytes, keys.iv, plaintext);
  if (!ct.ok()) return ct.error();
  auto m = SenderKeyMessage::make(distribution_id, s.chain_id, s.iteration, std::move(*ct), s.signing_private->span());
  s.chain_key = chain_next(s.chain_key);
  ++s.iteration;
  return std::move(m.serialized);
}

Result<std::vector<uint8_t>> group_decrypt(SenderKeyRecord& record, std::span<const uint8_t> bytes, int64_t now_s,
                                           const RatchetLimits& limits) {
  auto m = SenderKeyMessage::parse(bytes);
  if (!m.ok()) return m.error();
  SenderKeyState* state = find_chain(record, m->chain_id);
  if (state == nullptr) return Errc::kNoSession;
  if (!m->verify_signature(state->signing_public)) return Errc::kBadSignature;
  SenderKeyState trial = *state;  // committed only on success
  auto seed = take_seed(trial, m->iteration, now_s, limits);
  if (!seed.ok()) return seed.error();
  GroupKeys keys = derive_group_keys(*seed);
  auto pt = aes_cbc_decrypt(keys.cipher_key.bytes, keys.iv, m->ciphertext);
  if (!pt.ok()) return pt.error();
  prune_skipped(trial, now_s, limits);
  *state = std::move(trial);
  return pt;
}

// Serialization (record_format.h envelope): repeated field 1 = state {1 chain_id,
// 2 iteration, 3 chain_key, 4 signing_public, 5 signing_private (own only), 6 repeated
// skipped {1 iteration, 2 seed, 3 created_at}}.
SecretBytes SenderKeyRecord::serialize() const {
  size_t estimate = 16;
  for (const auto& s : states) estimate += 200 + s.skipped.size() * 64;
  pb::Writer w(estimate);
  for (const auto& s : states) {
    nested_field(w, 1, 200 + s.skipped.size() * 64, [&](pb::Writer& n) {
      n.varint_field(1, s.chain_id);
      n.varint_field(2, s.iteration);
      n.bytes_field(3, s.chain_key.bytes);
      n.bytes_field(4, s.signing_public);
      if (s.signing_private) n.bytes_field(5, s.signing_private->bytes);
      for (const auto& k : s.skipped) {
        nested_field(n, 6, 64, [&](pb::Writer& kw) {
          kw.varint_field(1, k.iteration);
          kw.bytes_field(2, k.seed.bytes);
          kw.varint_field(3, static_cast<uint64_t>(k.created_at_s));
        });
      }
    });
  }
  return seal_record(w);
}

namespace {

Result<void> read_key(const pb::Field& f, uint8_t* out) {
  auto b = pb::as_bytes(f, 32);
  if (!b.ok()) return b.error();
  std::memcpy(out, b->data(), 32);
  return {};
}

Result<void> read_u32(const pb::Field& f, uint32_t& out) {
  auto v = pb::as_u32(f);
  if (!v.ok()) return v.error();
  out = *v;
  return {};
}

Result<SenderKeyState::Skipped> parse_skipped(std::span<const uint8_t> bytes) {
  SenderKeyState::Skipped k;
  pb::Seen seen;
  auto r = pb::for_each_field(bytes, seen, [&](const pb::Field& g) -> Result<void> {
    if (g.number == 1) return read_u32(g, k.iteration);
    if (g.number == 2) return read_key(g, k.seed.data());
    if (g.number == 3) {
      auto v = pb::as_u64(g);
      if (!v.ok()) return v.error();
      k.created_at_s = static_cast<int64_t>(*v);
    }
    return {};
  });
  if (!r.ok()) return r.error();
  if (!seen.has(1) || !seen.has(2) || !seen.has(3)) return Errc::kMalformed;
  return k;
}

Result<SenderKeyState> parse_state(std::span<const uint8_t> bytes) {
  SenderKeyState s;
  pb::Seen seen;
  auto r = pb::for_each_field(bytes, seen, [&](const pb::Field& f) -> Result<void> {
    switch (f.number) {
      case 1: return read_u32(f, s.chain_id);
      case 2: return read_u32(f, s.iteration);
      case 3: return read_key(f, s.chain_key.data());
      case 4: return read_key(f, s.signing_public.data());
      case 5: {
        Key32 k;
        if (auto e = read_key(f, k.data()); !e.ok()) return e;
        s.signing_private = k;
        return {};
      }
      case 6: {
        if (s.skipped.size() >= kMaxStoredSkippedKeys) return Errc::kTooLarge;
        auto b = pb::as_bytes(f);
        if (!b.ok()) return b.error();
        auto k = parse_skipped(*b);
        if (!k.ok()) return k.error();
        s.skipped.push_back(*k);
        return {};
      }
    }
    return {};
  }, 6);
  if (!r.ok()) return r.error();
  if (!seen.has(1) || !seen.has(2) || !seen.has(3) || !seen.has(4)) return Errc::kMalformed;
  return s;
}

}  // namespace

Result<SenderKeyRecord> SenderKeyRecord::parse(std::span<const uint8_t> bytes) {
  auto body = open_record(bytes);
  if (!body.ok()) return body.error();
  SenderKeyRecord rec;
  pb::Seen seen;
  auto r = pb::for_each_field(*body, seen, [&](const pb::Field& f) -> Result<void> {
    if (f.number != 1) return {};
    if (rec.states.size() >= kMaxSenderKeyStates) return Errc::kTooLarge;
    auto b = pb::as_bytes(f);
    if (!b.ok()) return b.error();
    auto s = parse_state(*b);
    if (!s.ok()) return s.error();
    rec.states.push_back(std::move(*s));
    return {};
  }, 1);
  if (!r.ok()) return r.error();
  return rec;
}

}  // namespace tern::crypto
