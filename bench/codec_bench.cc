// Micro-benchmarks of the wire-v1 codec on the paths every message takes: the server parsing a
// `send`, encoding the stored `message` frame once, rendering it per device (shared body and
// per-device `bodies`), and the client side parsing `message` / `sent` and encoding `send` and
// `ack`. Bodies are 100 bytes before base64, like the reference measurements in issue 2.
#include <benchmark/benchmark.h>

#include <map>
#include <string>

#include "base/base64.h"
#include "proto/frames.h"
#include "proto/server_frames.h"

namespace {
using namespace tern;

const std::string kConv = "d-bca3fa4f2d3d3a1b5f11890b2e1f522d";
const std::string kBody = base64_encode(std::string(100, 'x'));

proto::MessageRecord record() {
  proto::MessageRecord m;
  m.conversation_id = kConv;
  m.seq = 123456;
  m.sender = "tb62b1e275-0-17";
  m.sender_device = 1;
  m.ts = 1700000000000;
  m.body = kBody;
  return m;
}

void BM_ParseSendFrame(benchmark::State& state) {
  const std::string frame = proto::encode_send("m12345", kConv, kBody);
  const proto::Limits limits;
  for (auto _ : state) {
    auto f = proto::parse_client_frame(frame, limits);
    benchmark::DoNotOptimize(f);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * frame.size()));
}
BENCHMARK(BM_ParseSendFrame);

void BM_ParseAckFrame(benchmark::State& state) {
  const std::string frame = proto::encode_ack(kConv, 123456);
  const proto::Limits limits;
  for (auto _ : state) {
    auto f = proto::parse_client_frame(frame, limits);
    benchmark::DoNotOptimize(f);
  }
}
BENCHMARK(BM_ParseAckFrame);

void BM_EncodeMessage(benchmark::State& state) {
  const auto m = record();
  for (auto _ : state) {
    auto s = proto::encode_message(m);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_EncodeMessage);

void BM_EncodeSent(benchmark::State& state) {
  for (auto _ : state) {
    auto s = proto::encode_sent("m12345", kConv, 123456, 1700000000000);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_EncodeSent);

// The common case: one shared body, sent as stored.
void BM_RenderSharedBody(benchmark::State& state) {
  const std::string stored = proto::encode_message(record());
  const DeviceRef dev{"bob", 1};
  for (auto _ : state) {
    auto s = proto::render_message_for(stored, dev);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_RenderSharedBody);

// Per-device payloads: the stored frame holds every device's body; each device gets its own.
void BM_RenderPerDevice(benchmark::State& state) {
  auto m = record();
  m.body.reset();
  for (int i = 0; i < state.range(0); ++i) m.bodies["user" + std::to_string(i) + ":1"] = kBody;
  const std::string stored = proto::encode_message(m);
  const DeviceRef dev{"user0", 1};
  for (auto _ : state) {
    auto s = proto::render_message_for(stored, dev);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_RenderPerDevice)->Arg(2)->Arg(8)->Arg(64);

void BM_StoredMeta(benchmark::State& state) {
  const std::string stored = proto::encode_message(record());
  for (auto _ : state) {
    auto s = proto::stored_meta(stored);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_StoredMeta);

// Client side (tern-bench, the SDK).
void BM_ClientParseMessage(benchmark::State& state) {
  const std::string frame = proto::encode_message(record());
  for (auto _ : state) {
    auto f = proto::parse_server_frame(frame);
    benchmark::DoNotOptimize(f);
  }
}
BENCHMARK(BM_ClientParseMessage);

void BM_ClientParseSent(benchmark::State& state) {
  const std::string frame = proto::encode_sent("m12345", kConv, 123456, 1700000000000);
  for (auto _ : state) {
    auto f = proto::parse_server_frame(frame);
    benchmark::DoNotOptimize(f);
  }
}
BENCHMARK(BM_ClientParseSent);

void BM_ClientEncodeSend(benchmark::State& state) {
  for (auto _ : state) {
    auto s = proto::encode_send("m12345", kConv, kBody);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_ClientEncodeSend);

void BM_ClientEncodeAck(benchmark::State& state) {
  for (auto _ : state) {
    auto s = proto::encode_ack(kConv, 123456);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_ClientEncodeAck);

}  // namespace

BENCHMARK_MAIN();
