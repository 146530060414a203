#include "client/keyring.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <boost/json.hpp>

#include "base/base64.h"
#include "crypto/keys.h"
#include "crypto/session_cipher.h"
#include "crypto/session_state.h"
#include "crypto/x25519.h"

namespace tern::client {
namespace json = boost::json;
namespace {

constexpr uint8_t kStateVersion = 1;
constexpr size_t kMaxStateBytes = 64 << 20;  // a state file larger than this is refused

Error crypto_error(crypto::Errc e) {
  return make_error(ErrorCode::kInvalidArgument, "crypto: " + std::string(crypto::errc_name(e)));
}
Error io_error(const std::string& what) {
  return make_error(ErrorCode::kInternal, "keyring: " + what + ": " + std::strerror(errno));
}
Error corrupt() { return make_error(ErrorCode::kInternal, "keyring: state file is corrupt"); }

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
std::string str_of(std::span<const uint8_t> b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }
std::string pub33(const crypto::PublicKey& k) {
  auto s = crypto::serialize_public(k);
  return str_of(s);
}

// The plaintext state: u32 little-endian numbers and u32-length-prefixed byte strings.
void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_bytes(std::vector<uint8_t>& out, std::span<const uint8_t> b) {
  put_u32(out, static_cast<uint32_t>(b.size()));
  out.insert(out.end(), b.begin(), b.end());
}
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  bool u32(uint32_t& v) {
    if (in_.size() - pos_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(in_[pos_ + i]) << (8 * i);
    pos_ += 4;
    return true;
  }
  bool bytes(std::span<const uint8_t>& b) {
    uint32_t n = 0;
    if (!u32(n) || in_.size() - pos_ < n) return false;
    b = in_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
};

// Reads a whole file (bounded); nullopt when it does not exist.
Result<std::optional<std::string>> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) return std::optional<std::string>{};
    return io_error("cannot read " + path);
  }
  std::string data((std::istreambuf_iterator<char>(in)), {});
  if (data.size() > kMaxStateBytes) return make_error(ErrorCode::kTooLarge, "keyring: " + path + " is too large");
  return std::optional<std::string>(std::move(data));
}

// Writes `data` to `path` atomically with mode 0600 (temp file, fsync, rename).
Result<void> write_private(const std::string& path, std::span<const uint8_t> data) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot create " + tmp);
  ::fchmod(fd, 0600);  // whatever the umask
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return io_error("cannot write " + tmp);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) return io_error("cannot sync " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return io_error("cannot rename " + tmp);
  return {};
}

Result<crypto::PublicKey> public_field(const json::object& o, std::string_view name) {
  const json::value* v = o.if_contains(name);
  auto raw = v && v->is_string() ? base64_decode(v->as_string()) : std::nullopt;
  if (!raw) return make_error(ErrorCode::kMalformed, "bundle: " + std::string(name) + " missing or not base64");
  auto k = crypto::parse_public(bytes_of(*raw));
  if (!k) return make_error(ErrorCode::kMalformed, "bundle: " + std::string(name) + " is not a 33-byte public key");
  return *k;
}

uint32_t u32_field(const json::object& o, std::string_view name, bool& ok) {
  const json::value* v = o.if_contains(name);
  if (!v || !v->is_number()) {
    ok = false;
    return 0;
  }
  boost::system::error_code ec;
  const uint64_t n = v->to_number<uint64_t>(ec);
  if (ec || n > UINT32_MAX) ok = false;
  return static_cast<uint32_t>(n);
}

}  // namespace

Result<std::vector<DeviceBundle>> parse_bundles(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  const json::value* devices = !ec && v.is_object() ? v.as_object().if_contains("devices") : nullptr;
  if (!devices || !devices->is_array()) return make_error(ErrorCode::kMalformed, "bundle answer without devices");
  std::vector<DeviceBundle> out;
  for (const json::value& d : devices->as_array()) {
    if (!d.is_object()) return make_error(ErrorCode::kMalformed, "bundle is not an object");
    const json::object& o = d.as_object();
    crypto::PreKeyBundle bundle;
    crypto::PreKeyBundle* b = &bundle;
    bool ok = true;
    const uint32_t device = u32_field(o, "device", ok);
    b->device_id = device;
    b->registration_id = u32_field(o, "registration_id", ok);
    auto identity = public_field(o, "identity_key");
    if (!identity) return identity.error();
    b->identity_key = *identity;
    const json::value* spk = o.if_contains("signed_prekey");
    if (!spk || !spk->is_object()) return make_error(ErrorCode::kMalformed, "bundle without signed_prekey");
    b->signed_pre_key_id = u32_field(spk->as_object(), "id", ok);
    auto spk_pub = public_field(spk->as_object(), "public_key");
    if (!spk_pub) return spk_pub.error();
    b->signed_pre_key = *spk_pub;
    const json::value* sig = spk->as_object().if_contains("signature");
    auto sig_raw = sig && sig->is_string() ? base64_decode(sig->as_string()) : std::nullopt;
    if (!sig_raw || sig_raw->size() != 64) return make_error(ErrorCode::kMalformed, "bundle: signature must be 64 bytes");
    std::memcpy(b->signed_pre_key_signature.data(), sig_raw->data(), 64);
    if (const json::value* otk = o.if_contains("one_time_prekey"); otk && otk->is_object()) {
      b->pre_key_id = u32_field(otk->as_object(), "id", ok);
      auto otk_pub = public_field(otk->as_object(), "public_key");
      if (!otk_pub) return otk_pub.error();
      b->pre_key = *otk_pub;
    }
    if (!ok) return make_error(ErrorCode::kMalformed, "bundle: ids must be integers 0..4294967295");
    out.push_back(DeviceBundle{device, bundle});
  }
  return out;
}

struct Keyring::State {
  crypto::IdentityKeyPair identity;
  uint32_t registration_id = 0;
  std::optional<crypto::SignedPreKeyRecord> signed_prekey, previous_signed_prekey;
  uint32_t next_signed_id = 1, next_prekey_id = 1;
  std::map<uint32_t, crypto::PreKeyRecord> prekeys;
  struct Peer {
    crypto::SessionRecord record;
    uint32_t registration_id = 0;
    crypto::PublicKey identity{};
  };
  std::map<std::string, Peer> peers;  // by "user:device"
};

Keyring::Keyring(std::string dir) : dir_(std::move(dir)), s_(std::make_unique<State>()) {}
Keyring::~Keyring() = default;

uint32_t Keyring::registration_id() const { return s_->registration_id; }
std::string Keyring::identity_public() const { return pub33(s_->identity.public_key); }
size_t Keyring::one_time_prekeys() const { return s_->prekeys.size(); }

bool Keyring::has_session(const std::string& device_key) const {
  auto it = s_->peers.find(device_key);
  return it != s_->peers.end() && it->second.record.current.has_value();
}

uint32_t Keyring::session_registration(const std::string& device_key) const {
  auto it = s_->peers.find(device_key);
  return it == s_->peers.end() ? 0 : it->second.registration_id;
}

Result<std::unique_ptr<Keyring>> Keyring::open(const std::string& dir) {
  if (sodium_init() < 0) return make_error(ErrorCode::kInternal, "keyring: libsodium failed to initialize");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error(ErrorCode::kInternal, "keyring: cannot create " + dir + ": " + ec.message());
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  std::unique_ptr<Keyring> k(new Keyring(dir));
  if (auto r = k->load(); !r) return r.error();
  return k;
}

Result<void> Keyring::load() {
  auto key_file = read_file(dir_ + "/keyring.key");
  if (!key_file) return key_file.error();
  auto state_file = read_file(dir_ + "/keyring.state");
  if (!state_file) return state_file.error();
  if (!*state_file) {
    // A new device: a fresh identity, saved at once (with a new key file).
    s_->identity = crypto::IdentityKeyPair::generate();
    s_->registration_id = crypto::generate_registration_id();
    return save();
  }
  if (!*key_file || (*key_file)->size() != crypto_secretbox_KEYBYTES)
    return make_error(ErrorCode::kInternal, "keyring: " + dir_ + "/keyring.key is missing or not 32 bytes");
  const std::string& boxed = **state_file;
  if (boxed.size() < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) return corrupt();
  std::vector<uint8_t> plain(boxed.size() - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES);
  const auto* nonce = reinterpret_cast<const uint8_t*>(boxed.data());
  if (crypto_secretbox_open_easy(plain.data(), nonce + crypto_secretbox_NONCEBYTES,
                                 boxed.size() - crypto_secretbox_NONCEBYTES, nonce,
                                 reinterpret_cast<const uint8_t*>((*key_file)->data())) != 0)
    return make_error(ErrorCode::kInternal, "keyring: state file does not authenticate with the key file");
  struct Wipe {
    std::vector<uint8_t>& v;
    ~Wipe() { sodium_memzero(v.data(), v.size()); }
  } wipe{plain};
  Reader r(plain);
  std::span<const uint8_t> b;
  uint32_t version = 0, has = 0, n = 0;
  if (!r.u32(version) || version != kStateVersion || !r.bytes(b)) return corrupt();
  auto identity = crypto::parse_identity(b);
  if (!identity) return corrupt();
  s_->identity = std::move(*identity);
  if (!r.u32(s_->registration_id) || !r.u32(s_->next_signed_id) || !r.u32(s_->next_prekey_id)) return corrupt();
  for (auto* slot : {&s_->signed_prekey, &s_->previous_signed_prekey}) {
    if (!r.u32(has)) return corrupt();
    if (!has) continue;
    if (!r.bytes(b)) return corrupt();
    auto spk = crypto::SignedPreKeyRecord::parse(b);
    if (!spk) return corrupt();
    *slot = std::move(*spk);
  }
  if (!r.u32(n)) return corrupt();
  for (uint32_t i = 0; i < n; ++i) {
    if (!r.bytes(b)) return corrupt();
    auto pk = crypto::PreKeyRecord::parse(b);
    if (!pk) return corrupt();
    const uint32_t id = pk->id;
    s_->prekeys.emplace(id, std::move(*pk));
  }
  if (!r.u32(n)) return corrupt();
  for (uint32_t i = 0; i < n; ++i) {
    std::span<const uint8_t> name, rec, ik;
    State::Peer p;
    if (!r.bytes(name) || !r.bytes(rec) || !r.u32(p.registration_id) || !r.bytes(ik) || ik.size() != 32) return corrupt();
    auto record = crypto::SessionRecord::parse(rec);
    if (!record) return corrupt();
    p.record = std::move(*record);
    std::memcpy(p.identity.data(), ik.data(), 32);
    s_->peers.emplace(str_of(name), std::move(p));
  }
  if (!r.done()) return corrupt();
  return {};
}

Result<void> Keyring::save() {
  std::vector<uint8_t> plain;
  struct Wipe {
    std::vector<uint8_t>& v;
    ~Wipe() { sodium_memzero(v.data(), v.size()); }
  } wipe{plain};
  put_u32(plain, kStateVersion);
  {
    auto id = crypto::serialize_identity(s_->identity);
    put_bytes(plain, id.span());
  }
  put_u32(plain, s_->registration_id);
  put_u32(plain, s_->next_signed_id);
  put_u32(plain, s_->next_prekey_id);
  for (const auto* slot : {&s_->signed_prekey, &s_->previous_signed_prekey}) {
    put_u32(plain, slot->has_value() ? 1 : 0);
    if (*slot) {
      auto b = (*slot)->serialize();
      put_bytes(plain, b.span());
    }
  }
  put_u32(plain, static_cast<uint32_t>(s_->prekeys.size()));
  for (const auto& [id, pk] : s_->prekeys) {
    auto b = pk.serialize();
    put_bytes(plain, b.span());
  }
  put_u32(plain, static_cast<uint32_t>(s_->peers.size()));
  for (const auto& [name, p] : s_->peers) {
    put_bytes(plain, bytes_of(name));
    auto rec = p.record.serialize();
    put_bytes(plain, rec.span());
    put_u32(plain, p.registration_id);
    put_bytes(plain, p.identity);
  }

  // The key file is made once, never rewritten: O_EXCL so that two processes cannot race two keys.
  const std::string key_path = dir_ + "/keyring.key";
  auto key = read_file(key_path);
  if (!key) return key.error();
  std::string key_bytes;
  if (!*key) {
    key_bytes.resize(crypto_secretbox_KEYBYTES);
    randombytes_buf(key_bytes.data(), key_bytes.size());
    int fd = ::open(key_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return io_error("cannot create " + key_path);
    ::fchmod(fd, 0600);
    const bool ok = ::write(fd, key_bytes.data(), key_bytes.size()) == static_cast<ssize_t>(key_bytes.size()) &&
                    ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) return io_error("cannot write " + key_path);
  } else {
    key_bytes = std::move(**key);
    if (key_bytes.size() != crypto_secretbox_KEYBYTES) return make_error(ErrorCode::kInternal, "keyring: bad key file");
  }
  std::vector<uint8_t> boxed(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plain.size());
  randombytes_buf(boxed.data(), crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(boxed.data() + crypto_secretbox_NONCEBYTES, plain.data(), plain.size(), boxed.data(),
                        reinterpret_cast<const uint8_t*>(key_bytes.data()));
  sodium_memzero(key_bytes.data(), key_bytes.size());
  return write_private(dir_ + "/keyring.state", boxed);
}

Result<std::string> Keyring::upload_body(bool full, size_t new_prekeys) {
  json::object o;
  if (full) {
    const uint64_t now = static_cast<uint64_t>(std::time(nullptr)) * 1000;
    auto spk = crypto::SignedPreKeyRecord::generate(s_->identity, s_->next_signed_id++, now);
    // The replaced one stays usable for session set-ups built on the old bundle.
    if (s_->signed_prekey) s_->previous_signed_prekey = std::move(s_->signed_prekey);
    s_->signed_prekey = std::move(spk);
    o["identity_key"] = base64_encode(identity_public());
    o["registration_id"] = s_->registration_id;
    o["signed_prekey"] = json::object{{"id", s_->signed_prekey->id},
                                      {"public_key", base64_encode(pub33(s_->signed_prekey->key.public_key))},
                                      {"signature", base64_encode(str_of(s_->signed_prekey->signature))}};
  }
  json::array otks;
  for (auto& pk : crypto::generate_prekeys(s_->next_prekey_id, static_cast<uint32_t>(new_prekeys))) {
    otks.emplace_back(json::object{{"id", pk.id}, {"public_key", base64_encode(pub33(pk.key.public_key))}});
    const uint32_t id = pk.id;
    s_->prekeys.emplace(id, std::move(pk));
  }
  s_->next_prekey_id += static_cast<uint32_t>(new_prekeys);
  o["one_time_prekeys"] = std::move(otks);
  if (auto r = save(); !r) return r.error();
  return json::serialize(o);
}

Result<void> Keyring::start_session(const std::string& device_key, const crypto::PreKeyBundle& bundle,
                                    bool* identity_changed) {
  // On a copy of the record: a refused bundle (bad signature) changes nothing.
  crypto::SessionRecord record;
  auto existing = s_->peers.find(device_key);
  const bool known = existing != s_->peers.end() && existing->second.registration_id != 0;
  const bool changed = known && existing->second.identity != bundle.identity_key;
  if (existing != s_->peers.end()) {
    auto copy = crypto::SessionRecord::parse(existing->second.record.serialize().span());
    if (!copy) return crypto_error(copy.error());
    record = std::move(*copy);
  }
  if (changed) record.archive_current();
  auto r = crypto::initiate_session(record, crypto::LocalDevice{s_->identity, s_->registration_id}, bundle);
  if (!r) return crypto_error(r.error());
  State::Peer& p = s_->peers[device_key];
  p.record = std::move(record);
  p.registration_id = bundle.registration_id;
  p.identity = bundle.identity_key;
  if (identity_changed) *identity_changed = changed;
  return save();
}

Result<std::string> Keyring::encrypt(const std::string& device_key, std::string_view plaintext) {
  auto it = s_->peers.find(device_key);
  if (it == s_->peers.end() || !it->second.record.current)
    return make_error(ErrorCode::kNotFound, "no session with " + device_key);
  auto c = crypto::session_encrypt(it->second.record, bytes_of(plaintext));
  if (!c) return crypto_error(c.error());
  std::string wire(1, static_cast<char>(c->type));
  wire.append(reinterpret_cast<const char*>(c->bytes.data()), c->bytes.size());
  if (auto r = save(); !r) return r.error();
  return base64_encode(wire);
}

Result<std::string> Keyring::decrypt(const std::string& device_key, std::string_view ciphertext_b64,
                                     bool* identity_changed) {
  auto wire = base64_decode(ciphertext_b64);
  if (!wire || wire->empty()) return make_error(ErrorCode::kMalformed, "ciphertext is not base64");
  const auto type = static_cast<uint8_t>((*wire)[0]);
  const auto body = bytes_of(std::string_view(*wire).substr(1));
  const int64_t now_s = std::time(nullptr);
  auto existing = s_->peers.find(device_key);
  // Work on a copy: a failure leaves the stored record as it was.
  State::Peer p;
  if (existing != s_->peers.end()) {
    auto copy = crypto::SessionRecord::parse(existing->second.record.serialize().span());
    if (!copy) return crypto_error(copy.error());
    p.record = std::move(*copy);
    p.registration_id = existing->second.registration_id;
    p.identity = existing->second.identity;
  }
  std::vector<uint8_t> plain;
  if (type == static_cast<uint8_t>(crypto::MessageType::kPreKey)) {
    crypto::PreKeyLookup lookup{
        [this](uint32_t id) -> const crypto::KeyPair* {
          for (const auto* spk : {&s_->signed_prekey, &s_->previous_signed_prekey})
            if (*spk && (*spk)->id == id) return &(*spk)->key;
          return nullptr;
        },
        [this](uint32_t id) -> const crypto::KeyPair* {
          auto k = s_->prekeys.find(id);
          return k == s_->prekeys.end() ? nullptr : &k->second.key;
        }};
    auto d = crypto::session_decrypt_prekey(p.record, crypto::LocalDevice{s_->identity, s_->registration_id}, lookup,
                                            body, now_s);
    if (!d) return crypto_error(d.error());
    const bool changed = p.registration_id != 0 && p.identity != d->remote_identity;
    if (identity_changed) *identity_changed = changed;
    p.identity = d->remote_identity;
    p.registration_id = d->remote_registration_id;
    if (d->used_pre_key_id) s_->prekeys.erase(*d->used_pre_key_id);
    plain = std::move(d->plaintext);
  } else if (type == static_cast<uint8_t>(crypto::MessageType::kWhisper)) {
    if (existing == s_->peers.end()) return make_error(ErrorCode::kNotFound, "no session with " + device_key);
    auto d = crypto::session_decrypt(p.record, body, now_s);
    if (!d) return crypto_error(d.error());
    plain = std::move(*d);
  } else {
    return make_error(ErrorCode::kMalformed, "unknown ciphertext type");
  }
  s_->peers[device_key] = std::move(p);
  if (auto r = save(); !r) return r.error();
  std::string out(reinterpret_cast<const char*>(plain.data()), plain.size());
  sodium_memzero(plain.data(), plain.size());
  return out;
}

}  // namespace tern::client
