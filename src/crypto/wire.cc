#include "crypto/wire.h"

#include <sodium.h>

#include <cstring>

#include "crypto/hkdf.h"
#include "crypto/protobuf.h"
#include "crypto/xeddsa.h"

namespace tern::crypto {
namespace {

// The version byte check shared by all four messages.
Result<void> check_version(std::span<const uint8_t> bytes, size_t min_size) {
  if (bytes.size() > kMaxWireMessage) return Errc::kTooLarge;
  if (bytes.size() < min_size) return Errc::kMalformed;
  if ((bytes[0] & 0x0f) != kMessageVersion || (bytes[0] >> 4) != kMessageVersion) {
    return Errc::kUnsupportedVersion;
  }
  return {};
}

Result<PublicKey> key_field(const pb::Field& f) {
  auto b = pb::as_bytes(f);
  if (!b.ok()) return b.error();
  return parse_public(*b);
}

Result<Uuid> uuid_field(const pb::Field& f) {
  auto b = pb::as_bytes(f, 16);
  if (!b.ok()) return b.error();
  Uuid u;
  std::memcpy(u.data(), b->data(), 16);
  return u;
}

Result<void> copy_bytes(const pb::Field& f, std::vector<uint8_t>& out) {
  auto b = pb::as_bytes(f);
  if (!b.ok()) return b.error();
  out.assign(b->begin(), b->end());
  return {};
}

std::array<uint8_t, 8> signal_mac(std::span<const uint8_t, 32> mac_key, const PublicKey& sender_identity,
                                  const PublicKey& receiver_identity, std::span<const uint8_t> body) {
  auto s = serialize_public(sender_identity), r = serialize_public(receiver_identity);
  auto full = hmac_sha256(mac_key, {s, r, body});
  std::array<uint8_t, 8> mac;
  std::memcpy(mac.data(), full.data(), 8);
  return mac;
}

#define TRY_ASSIGN(var, expr)              \
  do {                                     \
    auto tmp_ = (expr);                    \
    if (!tmp_.ok()) return tmp_.error();   \
    var = std::move(*tmp_);                \
  } while (0)

}  // namespace

SignalMessage SignalMessage::make(std::span<const uint8_t, 32> mac_key, const PublicKey& ratchet_key,
                                  uint32_t counter, uint32_t previous_counter, std::vector<uint8_t> ciphertext,
                                  const PublicKey& sender_identity, const PublicKey& receiver_identity) {
  pb::Writer w;
  w.bytes_field(1, serialize_public(ratchet_key));
  w.varint_field(2, counter);
  w.varint_field(3, previous_counter);
  w.bytes_field(4, ciphertext);
  SignalMessage m;
  m.serialized.reserve(1 + w.bytes().size() + kMacSize);
  m.serialized.push_back(kVersionByte);
  m.serialized.insert(m.serialized.end(), w.bytes().begin(), w.bytes().end());
  auto mac = signal_mac(mac_key, sender_identity, receiver_identity, m.serialized);
  m.serialized.insert(m.serialized.end(), mac.begin(), mac.end());
  m.ratchet_key = ratchet_key;
  m.counter = counter;
  m.previous_counter = previous_counter;
  m.ciphertext = std::move(ciphertext);
  return m;
}

Result<SignalMessage> SignalMessage::parse(std::span<const uint8_t> bytes) {
  if (auto v = check_version(bytes, 1 + kMacSize); !v.ok()) return v.error();
  SignalMessage m;
  pb::Seen seen;
  auto r = pb::for_each_field(bytes.subspan(1, bytes.size() - 1 - kMacSize), seen, [&](const pb::Field& f) -> Result<void> {
    switch (f.number) {  // others are unknown (v4's pq_ratchet, 5, is never sent at v3): skipped
      case 1: TRY_ASSIGN(m.ratchet_key, key_field(f)); break;
      case 2: TRY_ASSIGN(m.counter, pb::as_u32(f)); break;
      case 3: TRY_ASSIGN(m.previous_counter, pb::as_u32(f)); break;
      case 4: return copy_bytes(f, m.ciphertext);
    }
    return {};
  });
  if (!r.ok()) return r.error();
  // previousCounter is optional in Signal's decoder (defaults to 0); the others are required.
  if (!seen.has(1) || !seen.has(2) || !seen.has(4)) return Errc::kMalformed;
  m.serialized.assign(bytes.begin(), bytes.end());
  return m;
}

bool SignalMessage::verify_mac(std::span<const uint8_t, 32> mac_key, const PublicKey& sender_identity,
                               const PublicKey& receiver_identity) const {
  if (serialized.size() < 1 + kMacSize) return false;
  std::span<const uint8_t> all(serialized);
  auto ours = signal_mac(mac_key, sender_identity, receiver_identity, all.first(all.size() - kMacSize));
  return sodium_memcmp(ours.data(), all.last(kMacSize).data(), kMacSize) == 0;
}

PreKeySignalMessage PreKeySignalMessage::make(uint32_t registration_id, std::optional<uint32_t> pre_key_id,
                                              uint32_t signed_pre_key_id, const PublicKey& base_key,
                                              const PublicKey& identity_key, SignalMessage message) {
  pb::Writer w;  // field order as Signal's encoder writes them (by number)
  if (pre_key_id) w.varint_field(1, *pre_key_id);
  w.bytes_field(2, serialize_public(base_key));
  w.bytes_field(3, serialize_public(identity_key));
  w.bytes_field(4, message.serialized);
  w.varint_field(5, registration_id);
  w.varint_field(6, signed_pre_key_id);
  PreKeySignalMessage m;
  m.serialized.push_back(kVersionByte);
  m.serialized.insert(m.serialized.end(), w.bytes().begin(), w.bytes().end());
  m.registration_id = registration_id;
  m.pre_key_id = pre_key_id;
  m.signed_pre_key_id = signed_pre_key_id;
  m.base_key = base_key;
  m.identity_key = identity_key;
  m.message = std::move(message);
  return m;
}

Result<PreKeySignalMessage> PreKeySignalMessage::parse(std::span<const uint8_t> bytes) {
  if (auto v = check_version(bytes, 1); !v.ok()) return v.error();
  PreKeySignalMessage m;
  pb::Seen seen;
  auto r = pb::for_each_field(bytes.subspan(1), seen, [&](const pb::Field& f) -> Result<void> {
    switch (f.number) {  // others are unknown (v4's Kyber fields 7, 8): skipped
      case 1: {
        // Id 0 means "no one-time prekey": libsignal-protocol-typescript writes preKeyId = 0
        // when the bundle had none, and Signal's id generators never produce 0.
        uint32_t id = 0;
        TRY_ASSIGN(id, pb::as_u32(f));
        if (id != 0) m.pre_key_id = id;
        break;
      }
      case 2: TRY_ASSIGN(m.base_key, key_field(f)); break;
      case 3: TRY_ASSIGN(m.identity_key, key_field(f)); break;
      case 4: {
        std::span<const uint8_t> inner;
        TRY_ASSIGN(inner, pb::as_bytes(f));
        TRY_ASSIGN(m.message, SignalMessage::parse(inner));
        break;
      }
      case 5: TRY_ASSIGN(m.registration_id, pb::as_u32(f)); break;
      case 6: TRY_ASSIGN(m.signed_pre_key_id, pb::as_u32(f)); break;
    }
    return {};
  });
  if (!r.ok()) return r.error();
  if (!seen.has(2) || !seen.has(3) || !seen.has(4) || !seen.has(6)) return Errc::kMalformed;
  m.serialized.assign(bytes.begin(), bytes.end());
  return m;
}

SenderKeyMessage SenderKeyMessage::make(const Uuid& distribution_id, uint32_t chain_id, uint32_t iteration,
                                        std::vector<uint8_t> ciphertext,
                                        std::span<const uint8_t, 32> signing_private) {
  pb::Writer w;
  w.bytes_field(1, distribution_id);
  w.varint_field(2, chain_id);
  w.varint_field(3, iteration);
  w.bytes_field(4, ciphertext);
  SenderKeyMessage m;
  m.serialized.push_back(kVersionByte);
  m.serialized.insert(m.serialized.end(), w.bytes().begin(), w.bytes().end());
  auto sig = xeddsa_sign(signing_private, m.serialized);
  m.serialized.insert(m.serialized.end(), sig.begin(), sig.end());
  m.distribution_id = distribution_id;
  m.chain_id = chain_id;
  m.iteration = iteration;
  m.ciphertext = std::move(ciphertext);
  return m;
}

Result<SenderKeyMessage> SenderKeyMessage::parse(std::span<const uint8_t> bytes) {
  if (auto v = check_version(bytes, 1 + kSignatureSize); !v.ok()) return v.error();
  SenderKeyMessage m;
  pb::Seen seen;
  auto r = pb::for_each_field(bytes.subspan(1, bytes.size() - 1 - kSignatureSize), seen, [&](const pb::Field& f) -> Result<void> {
    switch (f.number) {
      case 1: TRY_ASSIGN(m.distribution_id, uuid_field(f)); break;
      case 2: TRY_ASSIGN(m.chain_id, pb::as_u32(f)); break;
      case 3: TRY_ASSIGN(m.iteration, pb::as_u32(f)); break;
      case 4: return copy_bytes(f, m.ciphertext);
    }
    return {};
  });
  if (!r.ok()) return r.error();
  if (!seen.has(1) || !seen.has(2) || !seen.has(3) || !seen.has(4)) return Errc::kMalformed;
  m.serialized.assign(bytes.begin(), bytes.end());
  return m;
}

bool SenderKeyMessage::verify_signature(const PublicKey& signing_public) const {
  if (serialized.size() < 1 + kSignatureSize) return false;
  std::span<const uint8_t> all(serialized);
  return xeddsa_verify(signing_public, all.first(all.size() - kSignatureSize),
                       all.last<kSignatureSize>());
}

SenderKeyDistributionMessage SenderKeyDistributionMessage::make(const Uuid& distribution_id, uint32_t chain_id,
                                                                uint32_t iteration,
                                                                std::span<const uint8_t, 32> chain_key,
                                                                const PublicKey& signing_key) {
  pb::Writer w;
  w.bytes_field(1, distribution_id);
  w.varint_field(2, chain_id);
  w.varint_field(3, iteration);
  w.bytes_field(4, chain_key);
  w.bytes_field(5, serialize_public(signing_key));
  SenderKeyDistributionMessage m;
  m.serialized.push_back(kVersionByte);
  m.serialized.insert(m.serialized.end(), w.bytes().begin(), w.bytes().end());
  m.distribution_id = distribution_id;
  m.chain_id = chain_id;
  m.iteration = iteration;
  std::memcpy(m.chain_key.data(), chain_key.data(), 32);
  m.signing_key = signing_key;
  return m;
}

Result<SenderKeyDistributionMessage> SenderKeyDistributionMessage::parse(std::span<const uint8_t> bytes) {
  if (auto v = check_version(bytes, 1); !v.ok()) return v.error();
  SenderKeyDistributionMessage m;
  pb::Seen seen;
  auto r = pb::for_each_field(bytes.subspan(1), seen, [&](const pb::Field& f) -> Result<void> {
    switch (f.number) {
      case 1: TRY_ASSIGN(m.distribution_id, uuid_field(f)); break;
      case 2: TRY_ASSIGN(m.chain_id, pb::as_u32(f)); break;
      case 3: TRY_ASSIGN(m.iteration, pb::as_u32(f)); break;
      case 4: {
        std::span<const uint8_t> c;
        TRY_ASSIGN(c, pb::as_bytes(f, 32));
        std::memcpy(m.chain_key.data(), c.data(), 32);
        break;
      }
      case 5: TRY_ASSIGN(m.signing_key, key_field(f)); break;
    }
    return {};
  });
  if (!r.ok()) return r.error();
  for (uint32_t n = 1; n <= 5; ++n) {
    if (!seen.has(n)) return Errc::kMalformed;
  }
  m.serialized.assign(bytes.begin(), bytes.end());
  return m;
}

}  // namespace tern::crypto
