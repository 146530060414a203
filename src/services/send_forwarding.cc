#include "services/send_forwarding.h"

#include "base/byte_codec.h"

namespace tern::services::send_forwarding {
namespace {

constexpr char kRequestVersion = 1;
constexpr char kResponseOk = 'k';
constexpr char kResponseError = 'e';
// Bounds on the counts a request may claim (each entry also needs its bytes, so a count
// above what the payload holds fails on the short read; these keep reservations small).
constexpr uint64_t kMaxEntries = 100000;

enum Flags : uint8_t { kBody = 1, kReplyTo = 2, kTtl = 4, kKeys = 8 };

Error malformed(std::string_view what) {
  return make_error(ErrorCode::kUnavailable, "a forwarded send between nodes was malformed: " + std::string(what));
}

}  // namespace

std::string encode_request(const DeviceRef& device, const proto::SendFrame& f) {
  std::string out;
  out.push_back(kRequestVersion);
  put_str(out, device.user);
  put_u32(out, device.device);
  put_str(out, f.client_msg_id);
  put_str(out, f.conversation_id);
  out.push_back(static_cast<char>((f.body ? kBody : 0) | (f.reply_to ? kReplyTo : 0) | (f.ttl_seconds ? kTtl : 0) |
                                  (f.keys ? kKeys : 0)));
  put_str(out, f.body ? std::string_view(*f.body) : std::string_view());
  put_u64(out, f.reply_to.value_or(0));
  put_u64(out, static_cast<uint64_t>(f.ttl_seconds.value_or(0)));
  put_u32(out, static_cast<uint32_t>(f.bodies.size()));
  for (const auto& [k, v] : f.bodies) {
    put_str(out, k);
    put_str(out, v);
  }
  put_u32(out, static_cast<uint32_t>(f.registration_ids.size()));
  for (const auto& [k, v] : f.registration_ids) {
    put_str(out, k);
    put_u32(out, v);
  }
  put_u32(out, static_cast<uint32_t>(f.media.size()));
  for (const auto& m : f.media) put_str(out, m);
  return out;
}

Result<std::pair<DeviceRef, proto::SendFrame>> decode_request(std::string_view payload) {
  ByteReader r{payload};
  if (r.num(1) != static_cast<uint64_t>(kRequestVersion)) return malformed("unknown version");
  DeviceRef device;
  device.user = r.str();
  device.device = static_cast<uint32_t>(r.num(4));
  proto::SendFrame f;
  f.client_msg_id = r.str();
  f.conversation_id = r.str();
  const uint64_t flags = r.num(1);
  std::string body = r.str();
  if (flags & kBody) f.body = std::move(body);
  const uint64_t reply_to = r.num(8);
  if (flags & kReplyTo) f.reply_to = reply_to;
  const uint64_t ttl = r.num(8);
  if (flags & kTtl) f.ttl_seconds = static_cast<int64_t>(ttl);
  f.keys = flags & kKeys;
  const uint64_t bodies = r.num(4);
  if (bodies > kMaxEntries) return malformed("too many bodies");
  for (uint64_t i = 0; i < bodies && r.ok; ++i) {
    std::string k = r.str();
    f.bodies[std::move(k)] = r.str();
  }
  const uint64_t regs = r.num(4);
  if (regs > kMaxEntries) return malformed("too many registration ids");
  for (uint64_t i = 0; i < regs && r.ok; ++i) {
    std::string k = r.str();
    f.registration_ids[std::move(k)] = static_cast<uint32_t>(r.num(4));
  }
  const uint64_t media = r.num(4);
  if (media > kMaxEntries) return malformed("too many media ids");
  for (uint64_t i = 0; i < media && r.ok; ++i) f.media.push_back(r.str());
  if (!r.ok || !r.in.empty()) return malformed("truncated or trailing bytes");
  if (device.user.empty() || f.conversation_id.empty() || f.client_msg_id.empty()) return malformed("empty field");
  return std::make_pair(std::move(device), std::move(f));
}

std::string encode_response(const Result<SentInfo>& result) {
  std::string out;
  if (result) {
    out.push_back(kResponseOk);
    put_str(out, result->client_msg_id);
    put_str(out, result->conversation_id);
    put_u64(out, result->seq);
    put_u64(out, static_cast<uint64_t>(result->ts));
  } else {
    out.push_back(kResponseError);
    put_error(out, result.error());
  }
  return out;
}

void put_error(std::string& out, const Error& e) {
  put_u32(out, static_cast<uint32_t>(e.code));
  put_str(out, e.message);
  put_str(out, e.detail_json);
}

std::optional<Error> read_error(ByteReader& r) {
  const uint64_t code = r.num(4);
  Error e;
  e.message = r.str();
  e.detail_json = r.str();
  if (!r.ok || code == 0 || code > static_cast<uint64_t>(kLastErrorCode)) return std::nullopt;
  e.code = static_cast<ErrorCode>(code);
  return e;
}

Result<SentInfo> decode_response(std::string_view payload) {
  ByteReader r{payload};
  const uint64_t kind = r.num(1);
  if (kind == static_cast<uint64_t>(kResponseOk)) {
    SentInfo info;
    info.client_msg_id = r.str();
    info.conversation_id = r.str();
    info.seq = r.num(8);
    info.ts = static_cast<int64_t>(r.num(8));
    if (!r.ok || !r.in.empty() || info.seq == 0) return malformed("bad answer");
    return info;
  }
  if (kind == static_cast<uint64_t>(kResponseError)) {
    auto e = read_error(r);
    if (!e || !r.in.empty()) return malformed("bad error answer");
    return *e;
  }
  return malformed(payload.empty() ? "no answer (the node does not serve forwarded sends)" : "bad answer");
}

}  // namespace tern::services::send_forwarding
