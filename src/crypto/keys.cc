#include "crypto/keys.h"

#include <cstring>

#include "crypto/protobuf.h"
#include "crypto/xeddsa.h"

namespace tern::crypto {
namespace {

// Copies an encoded record into sodium memory behind the version byte, then wipes the
// ordinary heap copy (writers here reserve kReserve bytes, more than any of these records).
SecretBytes seal(pb::Writer& w) {
  std::vector<uint8_t> body = w.take();
  SecretBytes out(body.size() + 1);
  out.data()[0] = kRecordVersion;
  std::memcpy(out.data() + 1, body.data(), body.size());
  wipe(body);
  return out;
}

Result<std::span<const uint8_t>> open(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return Errc::kMalformed;
  if (bytes[0] != kRecordVersion) return Errc::kUnsupportedVersion;
  return bytes.subspan(1);
}

constexpr size_t kReserve = 256;

// Parses {1: public(32), 2: private(32)} plus extra fields handed to `extra`.
template <typename Extra>
Result<KeyPair> parse_key_fields(std::span<const uint8_t> body, uint32_t pub_field, uint32_t priv_field, Extra extra) {
  pb::Reader r(body);
  pb::Field f;
  pb::Seen seen;
  std::span<const uint8_t> pub, priv;
  for (;;) {
    auto more = r.next(f);
    if (!more.ok()) return more.error();
    if (!*more) break;
    if (!seen.mark(f.number)) return Errc::kMalformed;
    if (f.number == pub_field || f.number == priv_field) {
      auto b = pb::as_bytes(f);
      if (!b.ok()) return b.error();
      (f.number == pub_field ? pub : priv) = *b;
    } else if (auto e = extra(f); !e.ok()) {
      return e.error();
    }
  }
  if (pub.size() != 32 || priv.size() != 32) return Errc::kMalformed;
  auto kp = KeyPair::from_private(priv);
  if (!kp.ok()) return kp.error();
  if (std::memcmp(kp->public_key.data(), pub.data(), 32) != 0) return Errc::kInvalidKey;  // corrupt record
  return kp;
}

}  // namespace

uint32_t generate_registration_id() {
  return (random_u32() % 16380) + 1;
}

SecretBytes serialize_identity(const IdentityKeyPair& identity) {
  pb::Writer w(kReserve);
  w.bytes_field(1, identity.public_key);
  w.bytes_field(2, identity.private_key.span());
  return seal(w);
}

Result<IdentityKeyPair> parse_identity(std::span<const uint8_t> bytes) {
  auto body = open(bytes);
  if (!body.ok()) return body.error();
  return parse_key_fields(*body, 1, 2, [](const pb::Field&) { return Result<void>(); });
}

SecretBytes PreKeyRecord::serialize() const {
  pb::Writer w(kReserve);
  w.varint_field(1, id);
  w.bytes_field(2, key.public_key);
  w.bytes_field(3, key.private_key.span());
  return seal(w);
}

Result<PreKeyRecord> PreKeyRecord::parse(std::span<const uint8_t> bytes) {
  auto body = open(bytes);
  if (!body.ok()) return body.error();
  PreKeyRecord rec;
  bool has_id = false;
  auto kp = parse_key_fields(*body, 2, 3, [&](const pb::Field& f) -> Result<void> {
    if (f.number != 1) return {};
    auto v = pb::as_u32(f);
    if (!v.ok()) return v.error();
    rec.id = *v;
    has_id = true;
    return {};
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
  return seal(w);
}

Result<SignedPreKeyRecord> SignedPreKeyRecord::parse(std::span<const uint8_t> bytes) {
  auto body = open(bytes);
  if (!body.ok()) return body.error();
  SignedPreKeyRecord rec;
  bool has_id = false, has_sig = false;
  auto kp = parse_key_fields(*body, 2, 3, [&](const pb::Field& f) -> Result<void> {
    if (f.number == 1) {
      auto v = pb::as_u32(f);
      if (!v.ok()) return v.error();
      rec.id = *v;
      has_id = true;
    } else if (f.number == 4) {
      auto b = pb::as_bytes(f);
      if (!b.ok()) return b.error();
      if (b->size() != 64) return Errc::kMalformed;
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
