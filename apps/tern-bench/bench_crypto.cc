#include "bench_crypto.h"

#include <time.h>

#include <boost/json.hpp>

#include "base/base64.h"
#include "crypto/secret.h"

namespace tern::bench {
namespace json = boost::json;

namespace {
int64_t mono_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
}  // namespace

int64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Result<std::string> DeviceCrypto::encrypt(const std::string& device_key, std::string_view plaintext, Counters& c) {
  const int64_t t0 = thread_cpu_ns(), w0 = mono_ns();
  auto r = keyring_->encrypt(device_key, plaintext);
  c.encrypt_cpu_ns += static_cast<uint64_t>(thread_cpu_ns() - t0);
  c.encrypt_wall_ns += static_cast<uint64_t>(mono_ns() - w0);
  if (r) ++c.encrypted;
  return r;
}

Result<std::string> DeviceCrypto::decrypt(std::string_view sender_key, std::string_view body_b64, Counters& c) {
  const int64_t t0 = thread_cpu_ns(), w0 = mono_ns();
  auto r = keyring_->decrypt(std::string(sender_key), body_b64);
  c.decrypt_cpu_ns += static_cast<uint64_t>(thread_cpu_ns() - t0);
  c.decrypt_wall_ns += static_cast<uint64_t>(mono_ns() - w0);
  if (r) {
    ++c.decrypted;
    ++decrypted_;
  } else {
    ++c.decrypt_failed;
  }
  return r;
}

Result<void> DeviceCrypto::commit(bool sending, Counters& c) {
  if (!keyring_->dirty()) return {};
  const int64_t t0 = thread_cpu_ns(), w0 = mono_ns();
  auto r = keyring_->commit();
  (sending ? c.encrypt_cpu_ns : c.decrypt_cpu_ns) += static_cast<uint64_t>(thread_cpu_ns() - t0);
  (sending ? c.encrypt_wall_ns : c.decrypt_wall_ns) += static_cast<uint64_t>(mono_ns() - w0);
  return r;
}

std::vector<uint64_t>* DeviceCrypto::bits_of(lean::ConvIdx c) {
  for (auto& [conv, bits] : seen_)
    if (conv == c) return &bits;
  return nullptr;
}

bool DeviceCrypto::seen(lean::ConvIdx c, Seq seq) const {
  for (const auto& [conv, bits] : seen_)
    if (conv == c) return seq / 64 < bits.size() && (bits[seq / 64] >> (seq % 64) & 1) != 0;
  return false;
}

void DeviceCrypto::mark_seen(lean::ConvIdx c, Seq seq) {
  if (seq == 0 || seq > lean::Verifier::kMaxSeq) return;  // the verifier counts it as a bad seq
  std::vector<uint64_t>* bits = bits_of(c);
  if (!bits) bits = &seen_.emplace_back(c, std::vector<uint64_t>{}).second;
  if (bits->size() <= seq / 64) bits->resize(std::max<size_t>(seq / 64 + 1, bits->size() * 2));
  (*bits)[seq / 64] |= uint64_t{1} << (seq % 64);
}

std::string encode_encrypted_send(std::string_view client_msg_id, std::string_view conversation_id,
                                  const std::vector<DeviceCiphertext>& entries, bool keys) {
  json::object o;
  o["type"] = "send";
  o["client_msg_id"] = client_msg_id;
  o["conversation_id"] = conversation_id;
  json::object bodies, ids;
  for (const auto& e : entries) {
    bodies[e.device_key] = e.ciphertext_b64;
    if (e.registration_id != 0) ids[e.device_key] = e.registration_id;
  }
  o["bodies"] = std::move(bodies);
  if (!ids.empty()) o["registration_ids"] = std::move(ids);
  if (keys) o["keys"] = true;
  return json::serialize(o);
}

DeviceCrypto::Group& DeviceCrypto::group(lean::ConvIdx c) {
  for (auto& g : groups_)
    if (g.conv == c) return g;
  Group& g = groups_.emplace_back();
  g.conv = c;
  crypto::random_bytes(g.distribution_id);
  return g;
}

std::vector<uint8_t> DeviceCrypto::distribution(lean::ConvIdx c) {
  Group& g = group(c);
  return crypto::create_sender_key_distribution(g.own, g.distribution_id).serialized;
}

Result<void> DeviceCrypto::accept_distribution(lean::ConvIdx c, const std::string& sender_key,
                                               std::span<const uint8_t> skdm) {
  auto m = crypto::SenderKeyDistributionMessage::parse(skdm);
  if (!m) return make_error(ErrorCode::kMalformed, "not a sender key distribution message");
  if (auto r = crypto::process_sender_key_distribution(group(c).senders[sender_key], *m); !r)
    return make_error(ErrorCode::kInvalidArgument, "sender key distribution refused");
  ++distributions_received_;
  return {};
}

Result<std::string> DeviceCrypto::group_encrypt(lean::ConvIdx c, std::string_view plaintext, Counters& counters) {
  const int64_t t0 = thread_cpu_ns(), w0 = mono_ns();
  Group& g = group(c);
  auto m = crypto::group_encrypt(
      g.own, g.distribution_id, {reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size()});
  std::string out;
  if (m) {
    std::string wire(1, static_cast<char>(kSenderKeyType));
    wire.append(reinterpret_cast<const char*>(m->data()), m->size());
    out = base64_encode(wire);
  }
  counters.encrypt_cpu_ns += static_cast<uint64_t>(thread_cpu_ns() - t0);
  counters.encrypt_wall_ns += static_cast<uint64_t>(mono_ns() - w0);
  if (!m) return make_error(ErrorCode::kInternal, "group encrypt: " + std::string(crypto::errc_name(m.error())));
  ++counters.encrypted;
  return out;
}

Result<std::string> DeviceCrypto::group_decrypt(lean::ConvIdx c, const std::string& sender_key,
                                                std::string_view message, Counters& counters) {
  const int64_t t0 = thread_cpu_ns(), w0 = mono_ns();
  Group& g = group(c);
  auto it = g.senders.find(sender_key);
  crypto::Result<std::vector<uint8_t>> plain = crypto::Errc::kNoSession;
  if (it != g.senders.end())
    plain = crypto::group_decrypt(it->second, {reinterpret_cast<const uint8_t*>(message.data()), message.size()},
                                  static_cast<int64_t>(::time(nullptr)));
  std::string out;
  if (plain) out.assign(reinterpret_cast<const char*>(plain->data()), plain->size());
  counters.decrypt_cpu_ns += static_cast<uint64_t>(thread_cpu_ns() - t0);
  counters.decrypt_wall_ns += static_cast<uint64_t>(mono_ns() - w0);
  if (!plain) {
    ++counters.decrypt_failed;
    return make_error(ErrorCode::kInvalidArgument, "group decrypt: " + std::string(crypto::errc_name(plain.error())));
  }
  ++counters.decrypted;
  ++decrypted_;
  return out;
}

}  // namespace tern::bench
