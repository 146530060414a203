#include "crypto/keys.h"

#include <cstring>

#include "crypto/record_format.h"
#include "crypto/xeddsa.h"

namespace tern::crypto {
namespace {

constexpr size_t kReserve = 256;  // more than any of these records

// Parses a key record: public key in `pub_field`, private key in `priv_field`, other fields
// handed to `extra`. The private key must give the stored public key (else a corrupt record).
template <typename Extra>
Result<KeyPair> parse_key_fields(std::span<const uint8_t> bytes, uint32_t pub_field, uint32_t priv_field,
                                 Extra&& extra) {
  auto body = open_record(bytes);
  if (!body.ok()) return body.error();
  std::span<const uint8_t> pub, priv;
  pb::Seen seen;
  auto r = pb::for_each_field(*body, seen, [&](const pb::Field& f) -> Result<void> {
    if (f.number != pub_field && f.number != priv_field) return extra(f);
    auto b = pb::as_bytes(f, 32);
    if (!b.ok()) return b.error();
    (f.number == pub_field ? pub : priv) = *b;
    return {};
  });
  if (!r.ok()) return r.error();
  if (pub.empty() || priv.empty()) return Errc::kMalformed;
  auto kp = KeyPair::from_private(priv);
  if (!kp.ok()) return kp.error();
  if (std::memcmp(kp->public_key.data(), pub.data(), 32) != 0) return Errc::kInvalidKey;
  return kp;
}

// A required uint32 field into `out`.
Result<void> read_u32(const pb::Field& f, uint32_t& out, bool& present) {
  auto v = pb::as_u32(f);
  if (!v.ok()) return v.error();
  out = *v;
  present = true;
  return {};
}

}  // namespace

uint32_t generate_registration_id() {
  return (random_u32() % 16380) + 1;
}

SecretBytes serialize_identity(const IdentityKeyPair& identity) {
  pb::Writer w(kReserve);
  w.bytes_field(1, identity.public_key);
  w.bytes_field(2, identity.private_key.span());
  return seal_record(w);
}

Result<IdentityKeyPair> parse_identity(std::span<const uint8_t> bytes) {
  return parse_key_fields(bytes, 1, 2, [](const pb::Field&) { return Result<void>(); });
}

SecretBytes PreKeyRecord::serialize() const {
  pb::Writer w(kReserve);
  w.varint_field(1, id);
  w.bytes_field(2, key.public_key);
  w.bytes_field(3, key.private_key.span());
  return seal_record(w);
}

Result<PreKeyRecord> PreKeyRecord::parse(std::span<const uint8_t> bytes) {
  PreKeyRecord rec;
  bool has_id = false;
  auto kp = parse_key_fields(bytes, 2, 3, [&](const pb::Field& f) -> Result<void> {
    return f.number == 1 ? read_u32(f, rec.id, has_id) : Result<void>();
  });
  if (!kp.ok()) return kp.error();
  if (!has_id) return Errc::kMalformed;
  rec.key = std::move(*kp);
  return rec;
}

std::vector<PreKeyRecord> generate_prekeys(uint32_t start, uint32_t count) {
  constexpr uint32_t kMaxId = 0xFFFFFF;  // Signal's Medium::MAX_VALUE
  std::vector<PreKeyRecord> out;
  out.reserve(count);
  uint32_t id = (start == 0 || start > kMaxId) ? 1 : start;
  for (uint32_t i = 0; i < count; ++i) {
    out.push_back(PreKeyRecord{id, KeyPair::generate()});
    id = id >= kMaxId ? 1 : id + 1;
  }
  return out;
}

SignedPreKeyRecord SignedPreKeyRecord::generate(const IdentityKeyPair& identity, uint32_t id, uint64_t now_ms) {
  SignedPreKeyRecord rec;
  rec.id = id;
  rec.key = KeyPair::generate();
  rec.created_at_ms = now_ms;
  auto pub = serialize_public(rec.key.public_key);
  rec.signature = xeddsa_sign(std::span<const uint8_t, 32>(identity.private_key.data(), 32), pub);
  return rec;
}

bool verify_signed_prekey(const PublicKey& identity, const PublicKey& signed_prekey, const Signature& signature) {
  auto pub = serialize_public(signed_prekey);
  return xeddsa_verify(identity, pub, signature);
}

SecretBytes SignedPreKeyRecord::serialize() const {
  pb::Writer w(kReserve);
  w.varint_field(1, id);
  w.bytes_field(2, key.public_key);
  w.bytes_field(3, key.private_key.span());
  w.bytes_field(4, signature);
  w.varint_field(5, created_at_ms);
  return seal_record(w);
}

Result<SignedPreKeyRecord> SignedPreKeyRecord::parse(std::span<const uint8_t> bytes) {
  SignedPreKeyRecord rec;
  bool has_id = false, has_sig = false;
  auto kp = parse_key_fields(bytes, 2, 3, [&](const pb::Field& f) -> Result<void> {
    if (f.number == 1) return read_u32(f, rec.id, has_id);
    if (f.number == 4) {
      auto b = pb::as_bytes(f, 64);
      if (!b.ok()) return b.error();
      std::memcpy(rec.signature.data(), b->data(), 64);
      has_sig = true;
    } else if (f.number == 5) {
      auto v = pb::as_u64(f);
      if (!v.ok()) return v.error();
      rec.created_at_ms = *v;
    }
    return {};
  });
  if (!kp.ok()) return kp.error();
  if (!has_id || !has_sig) return Errc::kMalformed;
  rec.key = std::move(*kp);
  return rec;
}

}  // namespace tern::crypto
