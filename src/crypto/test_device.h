// A test device for tern_crypto's tests: identity, registration id, signed prekey and
// one-time prekeys, with the lookups and bundle a peer needs. Test-only. One thread.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "crypto/keys.h"
#include "crypto/session_cipher.h"

namespace tern::crypto::testing {

struct TestDevice {
  IdentityKeyPair identity = KeyPair::generate();
  uint32_t registration_id = generate_registration_id();
  SignedPreKeyRecord signed_prekey = SignedPreKeyRecord::generate(identity, 1, 0);
  std::map<uint32_t, PreKeyRecord> prekeys;
  std::map<std::string, SessionRecord> sessions;  // by peer name

  explicit TestDevice(uint32_t prekey_count = 5) {
    for (auto& p : generate_prekeys(100, prekey_count)) {
      uint32_t id = p.id;
      prekeys.emplace(id, std::move(p));
    }
  }
  LocalDevice local() const { return LocalDevice{identity, registration_id}; }

  // A bundle as the key directory would hand it out: takes a one-time prekey if any is left.
  PreKeyBundle bundle(bool with_one_time = true) {
    PreKeyBundle b;
    b.registration_id = registration_id;
    b.device_id = 1;
    b.signed_pre_key_id = signed_prekey.id;
    b.signed_pre_key = signed_prekey.key.public_key;
    b.signed_pre_key_signature = signed_prekey.signature;
    b.identity_key = identity.public_key;
    if (with_one_time && !prekeys.empty()) {
      b.pre_key_id = prekeys.begin()->first;
      b.pre_key = prekeys.begin()->second.key.public_key;
    }
    return b;
  }

  PreKeyLookup lookup() {
    return PreKeyLookup{
        [this](uint32_t id) -> const KeyPair* { return id == signed_prekey.id ? &signed_prekey.key : nullptr; },
        [this](uint32_t id) -> const KeyPair* {
          auto it = prekeys.find(id);
          return it == prekeys.end() ? nullptr : &it->second.key;
        }};
  }

  // Decrypts either message type from `peer`, deleting a used one-time prekey as an SDK would.
  Result<std::vector<uint8_t>> decrypt(const std::string& peer, const Ciphertext& c, int64_t now_s = 0,
                                       const RatchetLimits& limits = {}) {
    SessionRecord& rec = sessions[peer];
    if (c.type == MessageType::kWhisper) return session_decrypt(rec, c.bytes, now_s, limits);
    auto r = session_decrypt_prekey(rec, local(), lookup(), c.bytes, now_s, limits);
    if (!r.ok()) return r.error();
    if (r->used_pre_key_id) prekeys.erase(*r->used_pre_key_id);
    return std::move(r->plaintext);
  }

  Ciphertext encrypt(const std::string& peer, const std::string& text) {
    auto r = session_encrypt(sessions[peer], std::vector<uint8_t>(text.begin(), text.end()));
    if (!r.ok()) return {};
    return std::move(*r);
  }
};

inline std::string str(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

}  // namespace tern::crypto::testing
