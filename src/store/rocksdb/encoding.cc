#include "store/rocksdb/encoding.h"

#include <cassert>

namespace tern::store::rocks {

namespace {

constexpr char kSep = '\0';
constexpr char kTagUser = 'u';
constexpr char kTagDevice = 'd';
constexpr char kTagLastSeen = 's';
constexpr char kTagRecord = 'r';
constexpr uint8_t kConversationVersion = 2;  // 2 added flags and the subscriber count
constexpr uint8_t kDeviceKeysVersion = 1;

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_bytes(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s);
}

// Bounds-checked cursor over an untrusted value; every getter fails instead of over-reading.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool done() const { return pos_ == in_.size(); }
  size_t remaining() const { return in_.size() - pos_; }

  bool u8(uint8_t& v) {
    if (remaining() < 1) return false;
    v = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }
  bool be64(uint64_t& v) {
    if (remaining() < 8) return false;
    v = get_be64(in_.data() + pos_);
    pos_ += 8;
    return true;
  }
  bool varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = 0;
      if (!u8(b)) return false;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;  // more than 10 bytes: not a varint we wrote
  }
  bool bytes(std::string& s) {
    uint64_t n = 0;
    if (!varint(n) || n > remaining()) return false;
    s.assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace

void put_be32(std::string& out, uint32_t v) {
  char b[4];
  for (int i = 3; i >= 0; --i) {
    b[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  out.append(b, 4);
}

void put_be64(std::string& out, uint64_t v) {
  char b[8];
  for (int i = 7; i >= 0; --i) {
    b[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  out.append(b, 8);
}

uint32_t get_be32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t get_be64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

void account_user_key(std::string& out, std::string_view user) {
  out.clear();
  out.append(user);
  out.push_back(kSep);
  out.push_back(kTagUser);
}

void account_device_prefix(std::string& out, std::string_view user) {
  out.clear();
  out.append(user);
  out.push_back(kSep);
  out.push_back(kTagDevice);
}

void account_device_key(std::string& out, std::string_view user, uint32_t device) {
  account_device_prefix(out, user);
  put_be32(out, device);
}

void account_last_seen_key(std::string& out, std::string_view user) {
  out.clear();
  out.append(user);
  out.push_back(kSep);
  out.push_back(kTagLastSeen);
}

void account_record_key(std::string& out, std::string_view user, std::string_view name) {
  out.clear();
  out.append(user);
  out.push_back(kSep);
  out.push_back(kTagRecord);
  out.append(name);
}

std::optional<std::string_view> user_of_user_key(std::string_view key) {
  if (key.size() < 3 || key[key.size() - 2] != kSep || key.back() != kTagUser) return std::nullopt;
  return key.substr(0, key.size() - 2);
}

void message_prefix(std::string& out, std::string_view conversation_id) {
  out.clear();
  out.reserve(conversation_id.size() + 9);
  out.append(conversation_id);
  out.push_back(kSep);
}

void message_key(std::string& out, std::string_view conversation_id, Seq seq) {
  message_prefix(out, conversation_id);
  put_be64(out, seq);
}

void user_index_prefix(std::string& out, std::string_view user) {
  out.clear();
  out.append(user);
  out.push_back(kSep);
}

void user_index_key(std::string& out, std::string_view user, std::string_view conversation_id) {
  user_index_prefix(out, user);
  out.append(conversation_id);
}

void receipt_prefix(std::string& out, std::string_view conversation_id) {
  out.clear();
  out.append(conversation_id);
  out.push_back(kSep);
}

void receipt_key(std::string& out, std::string_view conversation_id, std::string_view user) {
  receipt_prefix(out, conversation_id);
  out.append(user);
}

void device_prefix(std::string& out, const DeviceRef& device) {
  out.clear();
  out.append(device.user);
  out.push_back(kSep);
  put_be32(out, device.device);
}

void device_key(std::string& out, const DeviceRef& device, std::string_view tail) {
  device_prefix(out, device);
  out.append(tail);
}

void expiry_prefix(std::string& out, int64_t expires_at) {
  out.clear();
  put_be64(out, bias_i64(expires_at));
}

void expiry_key(std::string& out, int64_t expires_at, std::string_view primary_key) {
  expiry_prefix(out, expires_at);
  out.append(primary_key);
}

std::string prefix_successor(std::string_view prefix) {
  std::string s(prefix);
  while (!s.empty()) {
    auto last = static_cast<uint8_t>(s.back());
    if (last != 0xff) {
      s.back() = static_cast<char>(last + 1);
      return s;
    }
    s.pop_back();
  }
  return s;
}

std::string encode_u64(uint64_t v) {
  std::string s;
  put_be64(s, v);
  return s;
}

std::optional<uint64_t> decode_u64(std::string_view v) {
  if (v.size() != 8) return std::nullopt;
  return get_be64(v.data());
}

std::string encode_u64_pair(uint64_t a, uint64_t b) {
  std::string s;
  s.reserve(16);
  put_be64(s, a);
  put_be64(s, b);
  return s;
}

std::optional<std::pair<uint64_t, uint64_t>> decode_u64_pair(std::string_view v) {
  if (v.size() != 16) return std::nullopt;
  return std::pair{get_be64(v.data()), get_be64(v.data() + 8)};
}

std::string encode_user_row(const UserConversation& row) {
  std::string s = encode_u64_pair(row.joined_seq, row.left_seq);
  if (row.fanout_on_read) s.push_back(1);
  return s;
}

std::optional<UserConversation> decode_user_row(std::string_view conversation_id, std::string_view v) {
  // 16 bytes (written before fan-out on read existed), or 17 with the flag byte.
  if (v.size() != 16 && !(v.size() == 17 && v[16] == 1)) return std::nullopt;
  return UserConversation{std::string(conversation_id), get_be64(v.data()), get_be64(v.data() + 8), v.size() == 17};
}

std::string encode_token_value(const DeviceRef& device) {
  std::string s;
  s.reserve(4 + device.user.size());
  put_be32(s, device.device);
  s.append(device.user);
  return s;
}

std::optional<DeviceRef> decode_token_value(std::string_view v) {
  if (v.size() < 4) return std::nullopt;
  return DeviceRef{std::string(v.substr(4)), get_be32(v.data())};
}

void encode_idempotency(std::string& out, const IdempotencyRecord& record) {
  out.clear();
  out.reserve(24 + record.conversation_id.size());
  put_be64(out, bias_i64(record.expires_at));
  put_be64(out, record.seq);
  put_be64(out, bias_i64(record.ts));
  out.append(record.conversation_id);
}

std::optional<IdempotencyRecord> decode_idempotency(std::string_view v) {
  if (v.size() < 24) return std::nullopt;
  IdempotencyRecord r;
  r.expires_at = unbias_i64(get_be64(v.data()));
  r.seq = get_be64(v.data() + 8);
  r.ts = unbias_i64(get_be64(v.data() + 16));
  r.conversation_id.assign(v.substr(24));
  return r;
}

void encode_conversation(std::string& out, const Conversation& c) {
  out.clear();
  size_t estimate = 16 + c.id.size() + c.name.size();
  for (const Member& m : c.members) estimate += 20 + m.user.size();
  out.reserve(estimate);
  out.push_back(static_cast<char>(kConversationVersion));
  out.push_back(static_cast<char>(c.type == ConvType::kGroup ? 1 : c.type == ConvType::kChannel ? 2 : 0));
  put_bytes(out, c.id);
  put_bytes(out, c.name);
  put_be64(out, bias_i64(c.created_ts));
  put_varint(out, c.members.size());
  for (const Member& m : c.members) {
    put_bytes(out, m.user);
    put_be64(out, m.joined_seq);
    put_be64(out, m.left_seq);
    out.push_back(m.admin ? 1 : 0);
  }
  out.push_back(static_cast<char>((c.fanout_on_read ? 1 : 0) | (c.is_public ? 2 : 0)));
  put_be64(out, c.subscribers);
  if (c.disappear_seconds > 0) {
    out.push_back('t');
    put_be64(out, static_cast<uint64_t>(c.disappear_seconds));
  }
}

std::optional<Conversation> decode_conversation(std::string_view v) {
  Reader r(v);
  uint8_t version = 0, type = 0;
  if (!r.u8(version) || version < 1 || version > kConversationVersion) return std::nullopt;
  if (!r.u8(type) || type > 2 || (type == 2 && version < 2)) return std::nullopt;
  Conversation c;
  c.type = type == 1 ? ConvType::kGroup : type == 2 ? ConvType::kChannel : ConvType::kDirect;
  uint64_t created = 0, count = 0;
  if (!r.bytes(c.id) || !r.bytes(c.name) || !r.be64(created) || !r.varint(count)) return std::nullopt;
  c.created_ts = unbias_i64(created);
  // Each member takes at least 18 bytes: a corrupt count must not drive a huge reserve.
  constexpr size_t kMinMemberBytes = 1 + 8 + 8 + 1;
  if (count > r.remaining() / kMinMemberBytes) return std::nullopt;
  c.members.resize(count);
  for (Member& m : c.members) {
    uint8_t admin = 0;
    if (!r.bytes(m.user) || !r.be64(m.joined_seq) || !r.be64(m.left_seq) || !r.u8(admin) || admin > 1) {
      return std::nullopt;
    }
    m.admin = admin == 1;
  }
  if (version >= 2) {
    uint8_t flags = 0;
    if (!r.u8(flags) || flags > 3 || !r.be64(c.subscribers)) return std::nullopt;
    c.fanout_on_read = flags & 1;
    c.is_public = flags & 2;
  }
  // Optional trailing fields, tagged (issue 11): 't' be64 disappear_seconds.
  if (!r.done()) {
    uint8_t tag = 0;
    uint64_t seconds = 0;
    if (!r.u8(tag) || tag != 't' || !r.be64(seconds)) return std::nullopt;
    c.disappear_seconds = static_cast<int64_t>(seconds);
  }
  if (!r.done()) return std::nullopt;
  return c;
}

namespace {
void put_signed_prekey(std::string& out, const SignedPrekey& k) {
  put_varint(out, k.id);
  put_bytes(out, k.public_key);
  put_bytes(out, k.signature);
}
bool get_signed_prekey(Reader& r, SignedPrekey& k) {
  uint64_t id = 0;
  if (!r.varint(id) || id > UINT32_MAX) return false;
  k.id = static_cast<uint32_t>(id);
  return r.bytes(k.public_key) && r.bytes(k.signature);
}
}  // namespace

void encode_device_keys(std::string& out, const DeviceKeys& keys) {
  out.clear();
  out.push_back(static_cast<char>(kDeviceKeysVersion));
  put_bytes(out, keys.identity_key);
  put_varint(out, keys.registration_id);
  put_signed_prekey(out, keys.signed_prekey);
  out.push_back(keys.previous_signed_prekey ? 1 : 0);
  if (keys.previous_signed_prekey) {
    put_signed_prekey(out, *keys.previous_signed_prekey);
    put_be64(out, bias_i64(keys.previous_replaced_at));
  }
}

std::optional<DeviceKeys> decode_device_keys(std::string_view v) {
  Reader r(v);
  uint8_t version = 0, has_previous = 0;
  uint64_t reg = 0;
  DeviceKeys k;
  if (!r.u8(version) || version != kDeviceKeysVersion) return std::nullopt;
  if (!r.bytes(k.identity_key) || !r.varint(reg) || reg > UINT32_MAX) return std::nullopt;
  k.registration_id = static_cast<uint32_t>(reg);
  if (!get_signed_prekey(r, k.signed_prekey) || !r.u8(has_previous) || has_previous > 1) return std::nullopt;
  if (has_previous) {
    SignedPrekey prev;
    uint64_t at = 0;
    if (!get_signed_prekey(r, prev) || !r.be64(at)) return std::nullopt;
    k.previous_signed_prekey = std::move(prev);
    k.previous_replaced_at = unbias_i64(at);
  }
  if (!r.done()) return std::nullopt;
  return k;
}

void media_owner_prefix(std::string& out, std::string_view user) {
  out.clear();
  out.push_back('o');
  out.append(user);
  out.push_back('\0');
}

void media_owner_key(std::string& out, std::string_view user, std::string_view id) {
  media_owner_prefix(out, user);
  out.append(id);
}

void media_id_prefix(std::string& out, std::string_view id) {
  out.clear();
  out.push_back('i');
  out.append(id);
}

void media_id_key(std::string& out, std::string_view id, std::string_view user) {
  media_id_prefix(out, id);
  out.append(user);
}

void media_pending_key(std::string& out, int64_t created_ts, std::string_view id, std::string_view user) {
  out.clear();
  out.push_back('p');
  put_be64(out, bias_i64(created_ts));
  out.append(id);
  out.append(user);
}

void media_ref_prefix(std::string& out, std::string_view id) {
  out.clear();
  out.push_back('r');
  out.append(id);
}

void media_ref_key(std::string& out, std::string_view id, std::string_view conversation_id, Seq seq) {
  media_ref_prefix(out, id);
  out.append(conversation_id);
  out.push_back('\0');
  put_be64(out, seq);
}

void msg_expiry_key(std::string& out, int64_t expires_at, std::string_view conversation_id, Seq seq) {
  out.clear();
  put_be64(out, bias_i64(expires_at));
  out.append(conversation_id);
  out.push_back('\0');
  put_be64(out, seq);
}

bool parse_msg_expiry_key(std::string_view key, int64_t& expires_at, std::string& conversation_id, Seq& seq) {
  if (key.size() < 8 + 1 + 1 + 8 || key[key.size() - 9] != '\0') return false;
  expires_at = unbias_i64(get_be64(key.data()));
  conversation_id.assign(key.substr(8, key.size() - 8 - 9));
  seq = get_be64(key.data() + key.size() - 8);
  return true;
}

}  // namespace tern::store::rocks
