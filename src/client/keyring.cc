#include "client/keyring.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>

#include <boost/json.hpp>

#include "base/base64.h"
#include "crypto/keys.h"
#include "crypto/secret.h"
#include "crypto/sender_keys.h"
#include "crypto/session_cipher.h"
#include "crypto/session_state.h"
#include "crypto/x25519.h"

namespace tern::client {
namespace json = boost::json;
namespace {

constexpr uint8_t kStateVersion = 1;
constexpr size_t kMaxStateBytes = 64 << 20;  // a state file larger than this is refused

Error crypto_error(crypto::Errc e) {
  // A replay (a message key already used) is kExists, so that callers can tell it apart.
  return make_error(e == crypto::Errc::kDuplicate ? ErrorCode::kExists : ErrorCode::kInvalidArgument,
                    "crypto: " + std::string(crypto::errc_name(e)));
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

// Passphrase mode: the Argon2id parameters a keyring was made with, in <dir>/keyring.salt:
// version 1, the algorithm (crypto_pwhash_ALG_ARGON2ID13), opslimit and memlimit (u64
// little-endian) and the 16-byte salt. Kept with the salt so that a later change of the
// defaults still opens old keyrings; bounded on read so that a tampered file cannot ask for
// more than libsodium's SENSITIVE limits (1 GiB).
struct PassParams {
  uint64_t opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
  uint64_t memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
  std::array<uint8_t, crypto_pwhash_SALTBYTES> salt{};

  static constexpr size_t kBytes = 2 + 8 + 8 + crypto_pwhash_SALTBYTES;
  static PassParams fresh() {
    PassParams p;
    randombytes_buf(p.salt.data(), p.salt.size());
    return p;
  }
  std::string serialize() const {
    std::string out{char{1}, static_cast<char>(crypto_pwhash_ALG_ARGON2ID13)};
    for (uint64_t v : {opslimit, memlimit})
      for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
    out.append(reinterpret_cast<const char*>(salt.data()), salt.size());
    return out;
  }
};

Result<PassParams> parse_salt_file(const std::string& data) {
  const auto bad = [] { return make_error(ErrorCode::kInternal, "keyring: keyring.salt is corrupt"); };
  if (data.size() != PassParams::kBytes || data[0] != 1 || data[1] != crypto_pwhash_ALG_ARGON2ID13) return bad();
  PassParams p;
  uint64_t v[2] = {0, 0};
  for (int k = 0; k < 2; ++k)
    for (int i = 0; i < 8; ++i) v[k] |= static_cast<uint64_t>(static_cast<uint8_t>(data[2 + 8 * k + i])) << (8 * i);
  p.opslimit = v[0];
  p.memlimit = v[1];
  if (p.opslimit < crypto_pwhash_OPSLIMIT_MIN || p.opslimit > crypto_pwhash_OPSLIMIT_SENSITIVE ||
      p.memlimit < crypto_pwhash_MEMLIMIT_MIN || p.memlimit > crypto_pwhash_MEMLIMIT_SENSITIVE)
    return bad();
  std::memcpy(p.salt.data(), data.data() + 18, p.salt.size());
  return p;
}

// The 32-byte state key from a passphrase (Argon2id), in sodium_malloc memory.
Result<crypto::SecretBytes> derive_key(std::string_view passphrase, const PassParams& p) {
  crypto::SecretBytes key(crypto_secretbox_KEYBYTES);
  if (crypto_pwhash(key.data(), key.size(), passphrase.data(), passphrase.size(), p.salt.data(), p.opslimit,
                    static_cast<size_t>(p.memlimit), crypto_pwhash_ALG_ARGON2ID13) != 0)
    return make_error(ErrorCode::kInternal, "keyring: key derivation ran out of memory");
  return key;
}

// Opens a state file's box (nonce ‖ secretbox); nullopt when it does not authenticate.
std::optional<std::vector<uint8_t>> open_box(const std::string& boxed, const uint8_t* key) {
  if (boxed.size() < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) return std::nullopt;
  std::vector<uint8_t> plain(boxed.size() - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES);
  const auto* nonce = reinterpret_cast<const uint8_t*>(boxed.data());
  if (crypto_secretbox_open_easy(plain.data(), nonce + crypto_secretbox_NONCEBYTES,
                                 boxed.size() - crypto_secretbox_NONCEBYTES, nonce, key) != 0)
    return std::nullopt;
  return plain;
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
  // Sender Keys. `used` orders them for eviction (not persisted: load order stands in).
  struct OwnSenderKey {
    crypto::Uuid distribution_id{};
    crypto::SenderKeyRecord record;
    std::set<std::string> given;  // "user:device" that hold the current key
    uint64_t used = 0;
  };
  std::map<std::string, OwnSenderKey> own_sender_keys;  // by conversation
  struct PeerSenderKey {
    crypto::SenderKeyRecord record;
    uint64_t used = 0;
  };
  std::map<std::string, PeerSenderKey> peer_sender_keys;  // by conversation '\n' "user:device"
  uint64_t tick = 0;
};

struct Keyring::PassKey {
  crypto::SecretBytes key;  // 32 bytes, derived from the passphrase
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

Result<std::unique_ptr<Keyring>> Keyring::open(const std::string& dir) { return open(dir, KeyringOptions{}); }

Result<std::unique_ptr<Keyring>> Keyring::open(const std::string& dir, const KeyringOptions& options) {
  if (sodium_init() < 0) return make_error(ErrorCode::kInternal, "keyring: libsodium failed to initialize");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error(ErrorCode::kInternal, "keyring: cannot create " + dir + ": " + ec.message());
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  std::unique_ptr<Keyring> k(new Keyring(dir));
  if (auto r = k->load(options); !r) return r.error();
  return k;
}

std::unique_ptr<Keyring> Keyring::in_memory() {
  if (sodium_init() < 0) return nullptr;
  std::unique_ptr<Keyring> k(new Keyring(std::string()));
  k->persist_ = false;
  k->new_identity();
  return k;
}

void Keyring::new_identity() {
  s_->identity = crypto::IdentityKeyPair::generate();
  s_->registration_id = crypto::generate_registration_id();
}

Result<void> Keyring::load(const KeyringOptions& options) {
  const std::string key_path = dir_ + "/keyring.key", salt_path = dir_ + "/keyring.salt";
  auto key_file = read_file(key_path);
  if (!key_file) return key_file.error();
  auto salt_file = read_file(salt_path);
  if (!salt_file) return salt_file.error();
  auto state_file = read_file(dir_ + "/keyring.state");
  if (!state_file) return state_file.error();

  if (options.passphrase) {
    PassParams params;
    if (*salt_file) {
      auto p = parse_salt_file(**salt_file);
      if (!p) return p.error();
      params = *p;
    } else if (*key_file || *state_file) {
      return make_error(ErrorCode::kInvalidArgument, "keyring: " + dir_ +
                                                         " is protected by its key file, not a passphrase (open it "
                                                         "without one; set_passphrase switches)");
    } else {
      params = PassParams::fresh();
    }
    auto derived = derive_key(*options.passphrase, params);
    if (!derived) return derived.error();
    if (!*state_file) {
      // A new device in passphrase mode: the salt first, so that the state is never written
      // under a key whose salt is not on disk.
      if (!*salt_file)
        if (auto w = write_private(salt_path, bytes_of(params.serialize())); !w) return w.error();
      pass_key_ = std::make_unique<PassKey>(PassKey{std::move(*derived)});
      new_identity();
      return save();
    }
    auto plain = open_box(**state_file, derived->data());
    if (!plain) return make_error(ErrorCode::kUnauthorized, "keyring: wrong passphrase (or the state file is corrupt)");
    struct Wipe {
      std::vector<uint8_t>& v;
      ~Wipe() { sodium_memzero(v.data(), v.size()); }
    } wipe{*plain};
    if (auto r = load_state(*plain); !r) return r;
    pass_key_ = std::make_unique<PassKey>(PassKey{std::move(*derived)});
    // A switch to the passphrase, cut short: finish it. (A failure leaves the file; the next
    // open tries again, and the state opens either way.)
    std::error_code rm;
    if (*key_file) std::filesystem::remove(key_path, rm);
    return {};
  }

  if (!*state_file) {
    if (*salt_file)  // a passphrase keyring cut short before its first state: not ours to reuse
      return make_error(ErrorCode::kInvalidArgument, "keyring: " + dir_ + " is protected by a passphrase");
    // A new device: a fresh identity, saved at once (with a new key file).
    new_identity();
    return save();
  }
  if (*salt_file && !*key_file)
    return make_error(ErrorCode::kInvalidArgument,
                      "keyring: " + dir_ + " is protected by a passphrase (open it with the passphrase)");
  if (!*key_file || (*key_file)->size() != crypto_secretbox_KEYBYTES)
    return make_error(ErrorCode::kInternal, "keyring: " + dir_ + "/keyring.key is missing or not 32 bytes");
  auto plain = open_box(**state_file, reinterpret_cast<const uint8_t*>((*key_file)->data()));
  if (!plain) {
    if (*salt_file)  // a switch to the key file cut short: the passphrase still opens it
      return make_error(ErrorCode::kInvalidArgument,
                        "keyring: " + dir_ + " is protected by a passphrase (open it with the passphrase)");
    return make_error(ErrorCode::kInternal, "keyring: state file does not authenticate with the key file");
  }
  struct Wipe {
    std::vector<uint8_t>& v;
    ~Wipe() { sodium_memzero(v.data(), v.size()); }
  } wipe{*plain};
  if (auto r = load_state(*plain); !r) return r;
  // A switch to the passphrase cut short before the state was written, or a switch back to
  // the key file cut short after it: the key file opens the state, so the salt goes.
  std::error_code rm;
  if (*salt_file) std::filesystem::remove(salt_path, rm);
  return {};
}

Result<void> Keyring::load_state(std::span<const uint8_t> plain) {
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
  if (r.done()) return {};  // written before sender keys existed
  if (!r.u32(n) || n > kMaxOwnSenderKeys) return corrupt();
  for (uint32_t i = 0; i < n; ++i) {
    std::span<const uint8_t> conv, id, rec, given;
    State::OwnSenderKey k;
    uint32_t count = 0;
    if (!r.bytes(conv) || !r.bytes(id) || id.size() != k.distribution_id.size() || !r.bytes(rec) || !r.u32(count))
      return corrupt();
    std::memcpy(k.distribution_id.data(), id.data(), id.size());
    auto record = crypto::SenderKeyRecord::parse(rec);
    if (!record) return corrupt();
    k.record = std::move(*record);
    for (uint32_t g = 0; g < count; ++g) {
      if (!r.bytes(given)) return corrupt();
      k.given.insert(str_of(given));
    }
    k.used = ++s_->tick;
    s_->own_sender_keys.emplace(str_of(conv), std::move(k));
  }
  if (!r.u32(n) || n > kMaxPeerSenderKeys) return corrupt();
  for (uint32_t i = 0; i < n; ++i) {
    std::span<const uint8_t> name, rec;
    if (!r.bytes(name) || !r.bytes(rec)) return corrupt();
    auto record = crypto::SenderKeyRecord::parse(rec);
    if (!record) return corrupt();
    s_->peer_sender_keys.emplace(str_of(name), State::PeerSenderKey{std::move(*record), ++s_->tick});
  }
  if (!r.done()) return corrupt();
  return {};
}

std::vector<uint8_t> Keyring::serialize_state() const {
  std::vector<uint8_t> plain;
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
  put_u32(plain, static_cast<uint32_t>(s_->own_sender_keys.size()));
  for (const auto& [conv, k] : s_->own_sender_keys) {
    put_bytes(plain, bytes_of(conv));
    put_bytes(plain, k.distribution_id);
    auto rec = k.record.serialize();
    put_bytes(plain, rec.span());
    put_u32(plain, static_cast<uint32_t>(k.given.size()));
    for (const auto& g : k.given) put_bytes(plain, bytes_of(g));
  }
  put_u32(plain, static_cast<uint32_t>(s_->peer_sender_keys.size()));
  for (const auto& [name, k] : s_->peer_sender_keys) {
    put_bytes(plain, bytes_of(name));
    auto rec = k.record.serialize();
    put_bytes(plain, rec.span());
  }
  return plain;
}

Result<void> Keyring::write_state(std::span<const uint8_t> plain, const uint8_t* key) {
  std::vector<uint8_t> boxed(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plain.size());
  randombytes_buf(boxed.data(), crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(boxed.data() + crypto_secretbox_NONCEBYTES, plain.data(), plain.size(), boxed.data(), key);
  return write_private(dir_ + "/keyring.state", boxed);
}

Result<void> Keyring::commit() {
  if (!dirty_) return {};
  if (auto r = save(); !r) return r;
  dirty_ = false;
  return {};
}

Result<void> Keyring::save() {
  if (!persist_) return {};
  ++saves_;
  std::vector<uint8_t> plain = serialize_state();
  struct Wipe {
    std::vector<uint8_t>& v;
    ~Wipe() { sodium_memzero(v.data(), v.size()); }
  } wipe{plain};
  if (pass_key_) return write_state(plain, pass_key_->key.data());

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
  auto r = write_state(plain, reinterpret_cast<const uint8_t*>(key_bytes.data()));
  sodium_memzero(key_bytes.data(), key_bytes.size());
  return r;
}

Result<void> Keyring::set_passphrase(std::optional<std::string_view> passphrase) {
  if (!persist_) return make_error(ErrorCode::kInvalidArgument, "keyring: an in-memory keyring has no protection to switch");
  const std::string key_path = dir_ + "/keyring.key", salt_path = dir_ + "/keyring.salt";
  std::vector<uint8_t> plain = serialize_state();
  struct Wipe {
    std::vector<uint8_t>& v;
    ~Wipe() { sodium_memzero(v.data(), v.size()); }
  } wipe{plain};
  if (passphrase) {
    // New salt, then the state under the new key, then the old key file goes (see the header
    // for what a crash in between leaves).
    const PassParams params = PassParams::fresh();
    auto derived = derive_key(*passphrase, params);
    if (!derived) return derived.error();
    if (auto w = write_private(salt_path, bytes_of(params.serialize())); !w) return w;
    if (auto w = write_state(plain, derived->data()); !w) return w;
    dirty_ = false;  // the whole state was just written
    pass_key_ = std::make_unique<PassKey>(PassKey{std::move(*derived)});
    std::error_code ec;
    std::filesystem::remove(key_path, ec);
    if (ec) return make_error(ErrorCode::kInternal, "keyring: cannot remove " + key_path + ": " + ec.message());
    return {};
  }
  if (!pass_key_) return {};  // already key-file mode
  std::vector<uint8_t> key(crypto_secretbox_KEYBYTES);
  randombytes_buf(key.data(), key.size());
  auto w = write_private(key_path, key);
  if (w) w = write_state(plain, key.data());
  sodium_memzero(key.data(), key.size());
  if (!w) return w;
  dirty_ = false;
  pass_key_.reset();
  std::error_code ec;
  std::filesystem::remove(salt_path, ec);
  if (ec) return make_error(ErrorCode::kInternal, "keyring: cannot remove " + salt_path + ": " + ec.message());
  return {};
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
  // Saved at once: the body goes to the server, which must never hand out a prekey we lost.
  touch();
  if (auto r = commit(); !r) return r.error();
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
  touch();
  return {};
}

Result<std::string> Keyring::encrypt(const std::string& device_key, std::string_view plaintext) {
  auto it = s_->peers.find(device_key);
  if (it == s_->peers.end() || !it->second.record.current)
    return make_error(ErrorCode::kNotFound, "no session with " + device_key);
  auto c = crypto::session_encrypt(it->second.record, bytes_of(plaintext));
  if (!c) return crypto_error(c.error());
  std::string wire(1, static_cast<char>(c->type));
  wire.append(reinterpret_cast<const char*>(c->bytes.data()), c->bytes.size());
  touch();
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
  touch();
  std::string out(reinterpret_cast<const char*>(plain.data()), plain.size());
  sodium_memzero(plain.data(), plain.size());
  return out;
}

// ---- Sender Keys ----

namespace {
// Drops the least recently used entry of `m` when it holds more than `max`.
template <typename Map>
void evict_oldest(Map& m, size_t max) {
  while (m.size() > max) {
    auto oldest = m.begin();
    for (auto it = m.begin(); it != m.end(); ++it)
      if (it->second.used < oldest->second.used) oldest = it;
    m.erase(oldest);
  }
}
std::string peer_sender_name(const std::string& conv, const std::string& device_key) { return conv + "\n" + device_key; }
}  // namespace

Result<std::vector<uint8_t>> Keyring::sender_key_distribution(const std::string& conv) {
  auto [it, created] = s_->own_sender_keys.try_emplace(conv);
  auto& k = it->second;
  k.used = ++s_->tick;
  if (created || k.record.empty()) {
    crypto::random_bytes(k.distribution_id);
    k.given.clear();
  }
  auto m = crypto::create_sender_key_distribution(k.record, k.distribution_id);
  if (created) evict_oldest(s_->own_sender_keys, kMaxOwnSenderKeys);
  touch();
  return m.serialized;
}

Result<void> Keyring::rotate_sender_key(const std::string& conv) {
  if (s_->own_sender_keys.erase(conv) == 0) return {};
  touch();
  return {};
}

bool Keyring::sender_key_given(const std::string& conv, const std::string& device_key) const {
  auto it = s_->own_sender_keys.find(conv);
  return it != s_->own_sender_keys.end() && it->second.given.contains(device_key);
}

std::vector<std::string> Keyring::sender_key_holders(const std::string& conv) const {
  auto it = s_->own_sender_keys.find(conv);
  if (it == s_->own_sender_keys.end()) return {};
  return {it->second.given.begin(), it->second.given.end()};
}

Result<void> Keyring::note_sender_key_given(const std::string& conv, const std::vector<std::string>& device_keys) {
  auto it = s_->own_sender_keys.find(conv);
  if (it == s_->own_sender_keys.end()) return make_error(ErrorCode::kNotFound, "no sender key for " + conv);
  it->second.given.insert(device_keys.begin(), device_keys.end());
  touch();
  return {};
}

Result<std::string> Keyring::group_encrypt(const std::string& conv, std::string_view plaintext) {
  auto it = s_->own_sender_keys.find(conv);
  if (it == s_->own_sender_keys.end() || it->second.record.empty())
    return make_error(ErrorCode::kNotFound, "no sender key for " + conv);
  it->second.used = ++s_->tick;
  auto c = crypto::group_encrypt(it->second.record, it->second.distribution_id, bytes_of(plaintext));
  if (!c) return crypto_error(c.error());
  std::string wire(1, static_cast<char>(kSenderKeyType));
  wire.append(reinterpret_cast<const char*>(c->data()), c->size());
  touch();
  return base64_encode(wire);
}

Result<void> Keyring::process_sender_key(const std::string& conv, const std::string& device_key,
                                         std::span<const uint8_t> distribution) {
  auto m = crypto::SenderKeyDistributionMessage::parse(distribution);
  if (!m) return crypto_error(m.error());
  const std::string name = peer_sender_name(conv, device_key);
  auto [it, created] = s_->peer_sender_keys.try_emplace(name);
  it->second.used = ++s_->tick;
  if (auto r = crypto::process_sender_key_distribution(it->second.record, *m); !r) {
    if (created) s_->peer_sender_keys.erase(it);
    return crypto_error(r.error());
  }
  if (created) evict_oldest(s_->peer_sender_keys, kMaxPeerSenderKeys);
  touch();
  return {};
}

Result<std::string> Keyring::group_decrypt(const std::string& conv, const std::string& device_key,
                                           std::string_view ciphertext_b64) {
  auto wire = base64_decode(ciphertext_b64);
  if (!wire || wire->empty() || static_cast<uint8_t>((*wire)[0]) != kSenderKeyType)
    return make_error(ErrorCode::kMalformed, "not a group ciphertext");
  auto it = s_->peer_sender_keys.find(peer_sender_name(conv, device_key));
  if (it == s_->peer_sender_keys.end()) return make_error(ErrorCode::kNotFound, "no sender key from " + device_key);
  auto plain = crypto::group_decrypt(it->second.record, bytes_of(std::string_view(*wire).substr(1)), std::time(nullptr));
  if (!plain) {
    if (plain.error() == crypto::Errc::kNoSession)
      return make_error(ErrorCode::kNotFound, "no sender key from " + device_key + " for this chain");
    return crypto_error(plain.error());
  }
  it->second.used = ++s_->tick;
  touch();
  std::string out = str_of(*plain);
  crypto::wipe(*plain);
  return out;
}

}  // namespace tern::client
