// Micro-benchmarks of tern_crypto (client-side cost of end-to-end encryption): 1-to-1 encrypt
// and decrypt per message (same chain, and with a DH ratchet step on every message), session
// set-up (X3DH on both sides plus the first message), XEdDSA, and a group send to 100 members
// × 3 devices (one SenderKeyMessage, plus the fan-out of the SenderKeyDistributionMessage over
// 300 pairwise sessions, which a sender pays once per key and rotation).
// Run: build/release/bench/crypto_bench (a release build gives meaningful numbers).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "crypto/sender_keys.h"
#include "crypto/test_device.h"
#include "crypto/xeddsa.h"

namespace {
using namespace tern::crypto;
using tern::crypto::testing::TestDevice;

std::vector<uint8_t> payload(size_t n) { return std::vector<uint8_t>(n, 'x'); }

// Alice and Bob with an established session (both have sent and received).
struct Pair {
  TestDevice alice, bob;
  Pair() {
    (void)initiate_session(alice.sessions["bob"], alice.local(), bob.bundle());
    (void)bob.decrypt("alice", alice.encrypt("bob", "hi"));
    (void)alice.decrypt("bob", bob.encrypt("alice", "hi"));
  }
};

void BM_SessionEncrypt(benchmark::State& state) {
  Pair p;
  auto pt = payload(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    auto c = session_encrypt(p.alice.sessions["bob"], pt);
    benchmark::DoNotOptimize(c);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_SessionEncrypt)->Arg(100)->Arg(4096);

// Decrypt in the same receiving chain (no DH step): batches of 256 messages are made with the
// timer paused.
void BM_SessionDecrypt(benchmark::State& state) {
  Pair p;
  auto pt = payload(static_cast<size_t>(state.range(0)));
  std::vector<Ciphertext> batch;
  size_t next = 0;
  for (auto _ : state) {
    if (next == batch.size()) {
      state.PauseTiming();
      batch.clear();
      for (int i = 0; i < 256; ++i) batch.push_back(*session_encrypt(p.alice.sessions["bob"], pt));
      next = 0;
      state.ResumeTiming();
    }
    auto r = session_decrypt(p.bob.sessions["alice"], batch[next++].bytes, 0);
    if (!r.ok()) state.SkipWithError("decrypt failed");
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_SessionDecrypt)->Arg(100)->Arg(4096);

// Ping-pong: every message answers the previous one, so each decrypt does a DH ratchet step
// (two X25519 + two root KDFs + a key pair) — the worst case per message.
void BM_EncryptDecryptWithDhStep(benchmark::State& state) {
  Pair p;
  auto pt = payload(100);
  bool alice_turn = true;
  for (auto _ : state) {
    TestDevice& from = alice_turn ? p.alice : p.bob;
    TestDevice& to = alice_turn ? p.bob : p.alice;
    auto c = session_encrypt(from.sessions[alice_turn ? "bob" : "alice"], pt);
    auto r = session_decrypt(to.sessions[alice_turn ? "alice" : "bob"], c->bytes, 0);
    if (!r.ok()) state.SkipWithError("decrypt failed");
    alice_turn = !alice_turn;
  }
}
BENCHMARK(BM_EncryptDecryptWithDhStep);

// Full session set-up: the initiator verifies the signed prekey and runs X3DH and its first
// root step, encrypts a first message; the responder runs X3DH and decrypts it (DH step).
void BM_SessionSetUp(benchmark::State& state) {
  TestDevice alice, bob(0);
  auto bundle = bob.bundle(false);
  auto pt = payload(100);
  for (auto _ : state) {
    SessionRecord a, b;
    (void)initiate_session(a, alice.local(), bundle);
    auto c = session_encrypt(a, pt);
    auto r = session_decrypt_prekey(b, bob.local(), bob.lookup(), c->bytes, 0);
    if (!r.ok()) state.SkipWithError("set-up failed");
  }
}
BENCHMARK(BM_SessionSetUp);

void BM_XeddsaSign(benchmark::State& state) {
  KeyPair k = KeyPair::generate();
  auto msg = payload(33);
  for (auto _ : state) {
    auto s = xeddsa_sign(std::span<const uint8_t, 32>(k.private_key.data(), 32), msg);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_XeddsaSign);

void BM_XeddsaVerify(benchmark::State& state) {
  KeyPair k = KeyPair::generate();
  auto msg = payload(33);
  auto sig = xeddsa_sign(std::span<const uint8_t, 32>(k.private_key.data(), 32), msg);
  for (auto _ : state) benchmark::DoNotOptimize(xeddsa_verify(k.public_key, msg, sig));
}
BENCHMARK(BM_XeddsaVerify);

Uuid dist_id() {
  Uuid u;
  random_bytes(u);
  return u;
}

// One group message: a single SenderKeyMessage (AES-CBC + XEdDSA signature) for any group size.
void BM_GroupEncrypt(benchmark::State& state) {
  SenderKeyRecord own;
  Uuid dist = dist_id();
  (void)create_sender_key_distribution(own, dist);
  auto pt = payload(100);
  for (auto _ : state) benchmark::DoNotOptimize(group_encrypt(own, dist, pt));
}
BENCHMARK(BM_GroupEncrypt);

void BM_GroupDecrypt(benchmark::State& state) {
  SenderKeyRecord own, member;
  Uuid dist = dist_id();
  (void)process_sender_key_distribution(member, create_sender_key_distribution(own, dist));
  auto pt = payload(100);
  std::vector<std::vector<uint8_t>> batch;
  size_t next = 0;
  for (auto _ : state) {
    if (next == batch.size()) {
      state.PauseTiming();
      batch.clear();
      for (int i = 0; i < 256; ++i) batch.push_back(*group_encrypt(own, dist, pt));
      next = 0;
      state.ResumeTiming();
    }
    auto r = group_decrypt(member, batch[next++], 0);
    if (!r.ok()) state.SkipWithError("decrypt failed");
  }
}
BENCHMARK(BM_GroupDecrypt);

// A new (or rotated) sender key in a group of 100 members × 3 devices: create the SKDM,
// encrypt it over 300 established pairwise sessions, then send one group message. Each
// iteration is a rotation plus one message.
void BM_GroupSendWithKeyFanOut_100x3(benchmark::State& state) {
  constexpr int kDevices = 300;
  TestDevice sender(0);
  std::vector<TestDevice> members;
  members.reserve(kDevices);
  for (int i = 0; i < kDevices; ++i) {
    members.emplace_back(1);
    std::string name = "m" + std::to_string(i);
    (void)initiate_session(sender.sessions[name], sender.local(), members.back().bundle());
    (void)members.back().decrypt("sender", sender.encrypt(name, "hi"));
    (void)sender.decrypt(name, members.back().encrypt("sender", "hi"));
  }
  Uuid dist = dist_id();
  auto pt = payload(100);
  size_t bytes_out = 0;
  for (auto _ : state) {
    SenderKeyRecord own;  // rotation: a fresh key
    auto skdm = create_sender_key_distribution(own, dist);
    for (int i = 0; i < kDevices; ++i) {
      auto c = session_encrypt(sender.sessions["m" + std::to_string(i)], skdm.serialized);
      bytes_out += c->bytes.size();
    }
    auto m = group_encrypt(own, dist, pt);
    bytes_out += m->size();
  }
  state.counters["bytes_per_send"] =
      benchmark::Counter(static_cast<double>(bytes_out) / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_GroupSendWithKeyFanOut_100x3)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
