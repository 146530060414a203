// An end-to-end key installation for the integration tests (keys_test.cc, redis_test.cc):
// a device's identity key pair and registration id, the key upload they make (a signed
// prekey signed with XEdDSA, one-time prekeys), and the upload itself. Test code only.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "crypto/keys.h"
#include "crypto/x25519.h"
#include "crypto/xeddsa.h"
#include "support/server_test.h"

namespace tern::test {

inline std::string pub33(const crypto::PublicKey& k) {
  auto s = crypto::serialize_public(k);
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

// One installation of a device: its identity key pair and registration id.
struct Install {
  crypto::KeyPair identity = crypto::KeyPair::generate();
  uint32_t registration_id = 1 + crypto::random_u32() % 16380;

  std::string identity_b64() const { return b64(pub33(identity.public_key)); }
  json::object signed_prekey(uint32_t id, bool corrupt = false) const {
    const std::string pub = pub33(crypto::KeyPair::generate().public_key);
    auto sig = crypto::xeddsa_sign(std::span<const uint8_t, 32>(identity.private_key.data(), 32),
                                   std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(pub.data()), pub.size()));
    if (corrupt) sig[10] ^= 0x40;
    return json::object{{"id", id},
                        {"public_key", b64(pub)},
                        {"signature", b64(std::string(reinterpret_cast<const char*>(sig.data()), sig.size()))}};
  }
  json::object upload(uint32_t spk_id, uint32_t first_otk, size_t otks) const {
    return json::object{{"identity_key", identity_b64()},
                        {"registration_id", registration_id},
                        {"signed_prekey", signed_prekey(spk_id)},
                        {"one_time_prekeys", prekeys(first_otk, otks)}};
  }
  static json::array prekeys(uint32_t first, size_t n) {
    json::array a;
    for (size_t i = 0; i < n; ++i)
      a.emplace_back(json::object{{"id", first + i}, {"public_key", b64(pub33(crypto::KeyPair::generate().public_key))}});
    return a;
  }
};

inline HttpResult put_keys(uint16_t port, const Account& a, const json::object& body) {
  return http_request(port, "PUT", "/v1/keys", json::serialize(body), a.token);
}

}  // namespace tern::test
