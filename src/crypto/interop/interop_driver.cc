// Test-only driver for the interop tests (tests run by interop.mjs): one local device of ours
// spoken to over stdin/stdout, one JSON object per line each way. Binary values are base64.
// Commands (field "cmd"):
//   bundle {one_time?}                -> our prekey bundle (Signal's 33-byte key forms)
//   initiate {peer, bundle}           -> starts a session with a peer's bundle (we are Alice)
//   encrypt {peer, plaintext}         -> {type: 2|3, body}
//   decrypt {peer, type, body}        -> {plaintext} (type 3 may create the session)
//   sk_create {dist}                  -> {skdm}: our SenderKeyDistributionMessage
//   sk_process {sender, skdm}
//   sk_encrypt {dist, plaintext}      -> {body}: a SenderKeyMessage
//   sk_decrypt {sender, body}         -> {plaintext}
//   sign {message}                    -> {public_key, signature}: XEdDSA by our identity
//   verify {public_key, message, signature} -> {valid}
//   safety_number {local_id, remote_id, remote_key} -> {number, public_key}: our identity is local
// Every answer has "ok"; failures carry "error" (an Errc name). Single-threaded.
#include <sodium.h>

#include <boost/json.hpp>
#include <iostream>
#include <map>
#include <string>

#include "crypto/fingerprint.h"
#include "crypto/keys.h"
#include "crypto/sender_keys.h"
#include "crypto/session_cipher.h"
#include "crypto/xeddsa.h"

namespace json = boost::json;
using namespace tern::crypto;

namespace {

std::string b64(std::span<const uint8_t> b) {
  std::string out(sodium_base64_encoded_len(b.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), b.data(), b.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

std::vector<uint8_t> unb64(const json::value& v) {
  std::string_view s = v.as_string();
  std::vector<uint8_t> out(s.size());
  size_t len = 0;
  if (sodium_base642bin(out.data(), out.size(), s.data(), s.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_ORIGINAL) != 0) {
    throw std::runtime_error("bad base64");
  }
  out.resize(len);
  return out;
}

PublicKey key33(const json::value& v) {
  auto bytes = unb64(v);
  auto k = parse_public(bytes);
  if (!k.ok()) throw std::runtime_error("bad public key");
  return *k;
}

Uuid uuid(std::string_view s) {
  Uuid u{};
  size_t n = 0;
  for (size_t i = 0; i + 1 < s.size() && n < 16;) {
    if (s[i] == '-') {
      ++i;
      continue;
    }
    u[n++] = static_cast<uint8_t>(std::stoi(std::string(s.substr(i, 2)), nullptr, 16));
    i += 2;
  }
  if (n != 16) throw std::runtime_error("bad uuid");
  return u;
}

struct Driver {
  IdentityKeyPair identity = KeyPair::generate();
  uint32_t registration_id = generate_registration_id();
  SignedPreKeyRecord spk = SignedPreKeyRecord::generate(identity, 7, 0);
  std::map<uint32_t, PreKeyRecord> prekeys;
  uint32_t next_prekey = 100;
  std::map<std::string, SessionRecord> sessions;
  std::map<std::string, SenderKeyRecord> own_sender_keys;  // by distribution id string
  std::map<std::string, SenderKeyRecord> sender_keys;      // by "sender/dist"

  LocalDevice local() const { return {identity, registration_id}; }

  json::object handle(const json::object& req) {
    json::object res;
    std::string cmd(req.at("cmd").as_string());
    auto fail = [&](Errc e) {
      res["ok"] = false;
      res["error"] = std::string(errc_name(e));
      return res;
    };
    if (cmd == "bundle") {
      bool one_time = !req.contains("one_time") || req.at("one_time").as_bool();
      json::object b;
      b["registrationId"] = registration_id;
      b["identityKey"] = b64(serialize_public(identity.public_key));
      b["signedPreKeyId"] = spk.id;
      b["signedPreKey"] = b64(serialize_public(spk.key.public_key));
      b["signature"] = b64(spk.signature);
      if (one_time) {
        PreKeyRecord p{next_prekey++, KeyPair::generate()};
        b["preKeyId"] = p.id;
        b["preKey"] = b64(serialize_public(p.key.public_key));
        prekeys.emplace(p.id, std::move(p));
      }
      res["bundle"] = b;
    } else if (cmd == "initiate") {
      const auto& b = req.at("bundle").as_object();
      PreKeyBundle bundle;
      bundle.registration_id = static_cast<uint32_t>(b.at("registrationId").to_number<int64_t>());
      bundle.identity_key = key33(b.at("identityKey"));
      bundle.signed_pre_key_id = static_cast<uint32_t>(b.at("signedPreKeyId").to_number<int64_t>());
      bundle.signed_pre_key = key33(b.at("signedPreKey"));
      auto sig = unb64(b.at("signature"));
      if (sig.size() != 64) throw std::runtime_error("bad signature size");
      std::copy(sig.begin(), sig.end(), bundle.signed_pre_key_signature.begin());
      if (b.contains("preKeyId")) {
        bundle.pre_key_id = static_cast<uint32_t>(b.at("preKeyId").to_number<int64_t>());
        bundle.pre_key = key33(b.at("preKey"));
      }
      auto r = initiate_session(sessions[std::string(req.at("peer").as_string())], local(), bundle);
      if (!r.ok()) return fail(r.error());
    } else if (cmd == "encrypt") {
      auto pt = unb64(req.at("plaintext"));
      auto r = session_encrypt(sessions[std::string(req.at("peer").as_string())], pt);
      if (!r.ok()) return fail(r.error());
      res["type"] = static_cast<int>(r->type);
      res["body"] = b64(r->bytes);
    } else if (cmd == "decrypt") {
      auto body = unb64(req.at("body"));
      auto& rec = sessions[std::string(req.at("peer").as_string())];
      int64_t type = req.at("type").to_number<int64_t>();
      if (type == static_cast<int>(MessageType::kPreKey)) {
        PreKeyLookup lookup{
            [this](uint32_t id) -> const KeyPair* { return id == spk.id ? &spk.key : nullptr; },
            [this](uint32_t id) -> const KeyPair* {
              auto it = prekeys.find(id);
              return it == prekeys.end() ? nullptr : &it->second.key;
            }};
        auto r = session_decrypt_prekey(rec, local(), lookup, body, 0);
        if (!r.ok()) return fail(r.error());
        if (r->used_pre_key_id) prekeys.erase(*r->used_pre_key_id);
        res["plaintext"] = b64(r->plaintext);
      } else {
        auto r = session_decrypt(rec, body, 0);
        if (!r.ok()) return fail(r.error());
        res["plaintext"] = b64(*r);
      }
    } else if (cmd == "sk_create") {
      std::string dist(req.at("dist").as_string());
      auto m = create_sender_key_distribution(own_sender_keys[dist], uuid(dist));
      res["skdm"] = b64(m.serialized);
    } else if (cmd == "sk_process") {
      auto bytes = unb64(req.at("skdm"));
      auto m = SenderKeyDistributionMessage::parse(bytes);
      if (!m.ok()) return fail(m.error());
      std::string key = std::string(req.at("sender").as_string()) + "/" + b64(m->distribution_id);
      auto r = process_sender_key_distribution(sender_keys[key], *m);
      if (!r.ok()) return fail(r.error());
    } else if (cmd == "sk_encrypt") {
      std::string dist(req.at("dist").as_string());
      auto r = group_encrypt(own_sender_keys[dist], uuid(dist), unb64(req.at("plaintext")));
      if (!r.ok()) return fail(r.error());
      res["body"] = b64(*r);
    } else if (cmd == "sk_decrypt") {
      auto bytes = unb64(req.at("body"));
      auto m = SenderKeyMessage::parse(bytes);
      if (!m.ok()) return fail(m.error());
      std::string key = std::string(req.at("sender").as_string()) + "/" + b64(m->distribution_id);
      auto r = group_decrypt(sender_keys[key], bytes, 0);
      if (!r.ok()) return fail(r.error());
      res["plaintext"] = b64(*r);
    } else if (cmd == "sign") {
      auto msg = unb64(req.at("message"));
      auto sig = xeddsa_sign(std::span<const uint8_t, 32>(identity.private_key.data(), 32), msg);
      res["public_key"] = b64(serialize_public(identity.public_key));
      res["signature"] = b64(sig);
    } else if (cmd == "verify") {
      auto key = key33(req.at("public_key"));
      auto msg = unb64(req.at("message"));
      auto sig = unb64(req.at("signature"));
      if (sig.size() != 64) throw std::runtime_error("bad signature size");
      res["valid"] = xeddsa_verify(key, msg, std::span<const uint8_t, 64>(sig.data(), 64));
    } else if (cmd == "safety_number") {
      auto local_id = unb64(req.at("local_id"));
      auto remote_id = unb64(req.at("remote_id"));
      auto r = safety_number(kSafetyNumberIterations, local_id, identity.public_key, remote_id,
                             key33(req.at("remote_key")));
      if (!r.ok()) return fail(r.error());
      res["number"] = *r;
      res["public_key"] = b64(serialize_public(identity.public_key));
    } else {
      throw std::runtime_error("unknown cmd " + cmd);
    }
    res["ok"] = true;
    return res;
  }
};

}  // namespace

int main() {
  init();
  Driver d;
  std::string line;
  while (std::getline(std::cin, line)) {
    json::object res;
    try {
      res = d.handle(json::parse(line).as_object());
    } catch (const std::exception& e) {  // a bug in the test script, not a crypto failure
      res["ok"] = false;
      res["error"] = std::string("driver: ") + e.what();
    }
    std::cout << json::serialize(res) << "\n" << std::flush;
  }
  return 0;
}
