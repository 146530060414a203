#include "bench_crypto.h"

#include <time.h>

#include <boost/json.hpp>

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

Result<std::string> DeviceCrypto::encrypt(std::string_view plaintext, Counters& c) {
  const int64_t t0 = thread_cpu_ns(), w0 = mono_ns();
  auto r = keyring_->encrypt(peer_key, plaintext);
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
                                  const std::string& device_key, std::string_view ciphertext_b64,
                                  uint32_t registration_id) {
  json::object o;
  o["type"] = "send";
  o["client_msg_id"] = client_msg_id;
  o["conversation_id"] = conversation_id;
  json::object bodies;
  bodies[device_key] = ciphertext_b64;
  o["bodies"] = std::move(bodies);
  if (registration_id != 0) {
    json::object ids;
    ids[device_key] = registration_id;
    o["registration_ids"] = std::move(ids);
  }
  return json::serialize(o);
}

}  // namespace tern::bench
