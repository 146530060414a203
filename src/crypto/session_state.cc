#include "crypto/session_state.h"

#include <cstring>

#include "crypto/protobuf.h"
#include "crypto/record_format.h"

namespace tern::crypto {
namespace {

Result<PublicKey> pub32(const pb::Field& f) {
  auto b = pb::as_bytes(f, 32);
  if (!b.ok()) return b.error();
  PublicKey k;
  std::memcpy(k.data(), b->data(), 32);
  return k;
}

Result<Key32> key32(const pb::Field& f) {
  auto b = pb::as_bytes(f, 32);
  if (!b.ok()) return b.error();
  return Key32(std::span<const uint8_t, 32>(b->data(), 32));
}

#define TRY_SET(var, expr)               \
  do {                                   \
    auto tmp_ = (expr);                  \
    if (!tmp_.ok()) return tmp_.error(); \
    var = std::move(*tmp_);              \
  } while (0)

// pb::for_each_field with a local presence tracker (callers check presence by bit masks).
template <typename OnField>
Result<void> for_each_field(std::span<const uint8_t> bytes, uint32_t repeatable, OnField&& on_field) {
  pb::Seen seen;
  return pb::for_each_field(bytes, seen, on_field, repeatable);
}

constexpr size_t kStateReserve = 512;

}  // namespace

void SessionState::serialize_into(std::vector<uint8_t>& out) const {
  pb::Writer w(kStateReserve + skipped.size() * 96);
  w.bytes_field(1, local_identity);
  w.bytes_field(2, remote_identity);
  w.varint_field(3, local_registration_id);
  w.varint_field(4, remote_registration_id);
  w.bytes_field(5, root_key.bytes);
  w.bytes_field(6, sender_ratchet_public);
  w.bytes_field(7, sender_ratchet_private.bytes);
  w.bytes_field(8, sender_chain_key.bytes);
  w.varint_field(9, sender_index);
  w.varint_field(10, previous_counter);
  if (receiver) {
    nested_field(w, 11, 96, [&](pb::Writer& n) {
      n.bytes_field(1, receiver->ratchet_key);
      n.bytes_field(2, receiver->chain_key.bytes);
      n.varint_field(3, receiver->index);
    });
  }
  for (const SkippedKey& k : skipped) {
    nested_field(w, 12, 96, [&](pb::Writer& n) {
      n.bytes_field(1, k.ratchet_key);
      n.varint_field(2, k.counter);
      n.bytes_field(3, k.seed.bytes);
      n.varint_field(4, static_cast<uint64_t>(k.created_at_s));
    });
  }
  if (pending_prekey) {
    nested_field(w, 13, 64, [&](pb::Writer& n) {
      if (pending_prekey->pre_key_id) n.varint_field(1, *pending_prekey->pre_key_id);
      n.varint_field(2, pending_prekey->signed_pre_key_id);
      n.bytes_field(3, pending_prekey->base_key);
    });
  }
  w.bytes_field(14, base_key);
  std::vector<uint8_t> b = w.take();
  out.insert(out.end(), b.begin(), b.end());
  wipe(b);
}

Result<SessionState> SessionState::parse(std::span<const uint8_t> bytes) {
  SessionState s;
  uint32_t required = 0;  // bit per required field seen
  auto r = for_each_field(bytes, 12, [&](const pb::Field& f) -> Result<void> {
    if (f.number <= 10 || f.number == 14) required |= 1u << f.number;
    switch (f.number) {
      case 1: TRY_SET(s.local_identity, pub32(f)); break;
      case 2: TRY_SET(s.remote_identity, pub32(f)); break;
      case 3: TRY_SET(s.local_registration_id, pb::as_u32(f)); break;
      case 4: TRY_SET(s.remote_registration_id, pb::as_u32(f)); break;
      case 5: TRY_SET(s.root_key, key32(f)); break;
      case 6: TRY_SET(s.sender_ratchet_public, pub32(f)); break;
      case 7: TRY_SET(s.sender_ratchet_private, key32(f)); break;
      case 8: TRY_SET(s.sender_chain_key, key32(f)); break;
      case 9: TRY_SET(s.sender_index, pb::as_u32(f)); break;
      case 10: TRY_SET(s.previous_counter, pb::as_u32(f)); break;
      case 11: {
        std::span<const uint8_t> b;
        TRY_SET(b, pb::as_bytes(f));
        ReceiverChain c;
        uint32_t seen = 0;
        auto e = for_each_field(b, 0, [&](const pb::Field& g) -> Result<void> {
          seen |= 1u << std::min<uint32_t>(g.number, 31);
          switch (g.number) {
            case 1: TRY_SET(c.ratchet_key, pub32(g)); break;
            case 2: TRY_SET(c.chain_key, key32(g)); break;
            case 3: TRY_SET(c.index, pb::as_u32(g)); break;
          }
          return {};
        });
        if (!e.ok()) return e;
        if ((seen & 0xe) != 0xe) return Errc::kMalformed;
        s.receiver = c;
        break;
      }
      case 12: {
        if (s.skipped.size() >= kMaxStoredSkippedKeys) return Errc::kTooLarge;
        std::span<const uint8_t> b;
        TRY_SET(b, pb::as_bytes(f));
        SkippedKey k;
        uint32_t seen = 0;
        auto e = for_each_field(b, 0, [&](const pb::Field& g) -> Result<void> {
          seen |= 1u << std::min<uint32_t>(g.number, 31);
          switch (g.number) {
            case 1: TRY_SET(k.ratchet_key, pub32(g)); break;
            case 2: TRY_SET(k.counter, pb::as_u32(g)); break;
            case 3: TRY_SET(k.seed, key32(g)); break;
            case 4: {
              uint64_t v = 0;
              TRY_SET(v, pb::as_u64(g));
              k.created_at_s = static_cast<int64_t>(v);
              break;
            }
          }
          return {};
        });
        if (!e.ok()) return e;
        if ((seen & 0x1e) != 0x1e) return Errc::kMalformed;
        s.skipped.push_back(k);
        break;
      }
      case 13: {
        std::span<const uint8_t> b;
        TRY_SET(b, pb::as_bytes(f));
        PendingPreKey p;
        uint32_t seen = 0;
        auto e = for_each_field(b, 0, [&](const pb::Field& g) -> Result<void> {
          seen |= 1u << std::min<uint32_t>(g.number, 31);
          switch (g.number) {
            case 1: {
              uint32_t id = 0;
              TRY_SET(id, pb::as_u32(g));
              p.pre_key_id = id;
              break;
            }
            case 2: TRY_SET(p.signed_pre_key_id, pb::as_u32(g)); break;
            case 3: TRY_SET(p.base_key, pub32(g)); break;
          }
          return {};
        });
        if (!e.ok()) return e;
        if ((seen & 0xc) != 0xc) return Errc::kMalformed;
        s.pending_prekey = p;
        break;
      }
      case 14: TRY_SET(s.base_key, pub32(f)); break;
      default: break;  // unknown: written by a newer version, skipped
    }
    return {};
  });
  if (!r.ok()) return r.error();
  constexpr uint32_t kRequired = 0x7fe | (1u << 14);  // fields 1..10 and 14
  if ((required & kRequired) != kRequired) return Errc::kMalformed;
  return s;
}

void SessionRecord::promote(SessionState state) {
  if (current) archived.push_front(std::move(*current));
  current = std::move(state);
  while (archived.size() > kMaxArchivedSessions) archived.pop_back();
}

void SessionRecord::archive_current() {
  if (!current) return;
  archived.push_front(std::move(*current));
  current.reset();
  while (archived.size() > kMaxArchivedSessions) archived.pop_back();
}

SecretBytes SessionRecord::serialize() const {
  size_t estimate = 64;
  auto add_estimate = [&](const SessionState& s) { estimate += kStateReserve + s.skipped.size() * 96 + 16; };
  if (current) add_estimate(*current);
  for (const auto& s : archived) add_estimate(s);
  pb::Writer w(estimate);
  std::vector<uint8_t> tmp;
  tmp.reserve(estimate);
  if (current) {
    current->serialize_into(tmp);
    w.bytes_field(1, tmp);
    wipe(tmp);
    tmp.clear();
  }
  for (const auto& s : archived) {
    s.serialize_into(tmp);
    w.bytes_field(2, tmp);
    wipe(tmp);
    tmp.clear();
  }
  return seal_record(w);
}

Result<SessionRecord> SessionRecord::parse(std::span<const uint8_t> bytes) {
  auto body = open_record(bytes);
  if (!body.ok()) return body.error();
  SessionRecord rec;
  auto r = for_each_field(*body, 2, [&](const pb::Field& f) -> Result<void> {
    if (f.number != 1 && f.number != 2) return {};
    std::span<const uint8_t> b;
    TRY_SET(b, pb::as_bytes(f));
    auto s = SessionState::parse(b);
    if (!s.ok()) return s.error();
    if (f.number == 1) {
      rec.current = std::move(*s);
    } else {
      if (rec.archived.size() >= kMaxArchivedSessions) return Errc::kTooLarge;
      rec.archived.push_back(std::move(*s));
    }
    return {};
  });
  if (!r.ok()) return r.error();
  return rec;
}

}  // namespace tern::crypto
