#include "services/channel_forwarding.h"

#include "base/byte_codec.h"
#include "services/send_forwarding.h"

namespace tern::services::channel_forwarding {
namespace {

constexpr char kResponseOk = 'k';
constexpr char kResponseError = 'e';
// Bounds on the counts a payload may claim (each entry also needs its bytes, so a count above
// what the payload holds fails on the short read; this keeps reservations small).
constexpr uint64_t kMaxNames = 100000;

Error malformed(std::string_view what) {
  return make_error(ErrorCode::kUnavailable, "a forwarded channel change between nodes was malformed: " + std::string(what));
}

void put_names(std::string& out, const std::vector<std::string>& names) {
  put_u32(out, static_cast<uint32_t>(names.size()));
  for (const auto& n : names) put_str(out, n);
}

bool read_names(ByteReader& r, std::vector<std::string>& out) {
  const uint64_t n = r.num(4);
  if (n > kMaxNames) return false;
  for (uint64_t i = 0; i < n && r.ok; ++i) out.push_back(r.str());
  return r.ok;
}

bool known(uint64_t op) {
  switch (static_cast<Op>(op)) {
    case Op::kJoin:
    case Op::kLeave:
    case Op::kSubscribers:
    case Op::kAdmins: return true;
  }
  return false;
}

}  // namespace

bool is_request(std::string_view payload) { return !payload.empty() && payload.front() == kRequestVersion; }

std::string encode_request(const Request& req) {
  std::string out;
  out.push_back(kRequestVersion);
  out.push_back(static_cast<char>(req.op));
  put_str(out, req.actor.user);
  put_u32(out, req.actor.device);
  put_str(out, req.channel_id);
  put_names(out, req.members.add);
  put_names(out, req.members.remove);
  return out;
}

Result<Request> decode_request(std::string_view payload) {
  ByteReader r{payload};
  if (r.num(1) != static_cast<uint64_t>(kRequestVersion)) return malformed("unknown version");
  const uint64_t op = r.num(1);
  if (!r.ok || !known(op)) return malformed("unknown change");
  Request req;
  req.op = static_cast<Op>(op);
  req.actor.user = r.str();
  req.actor.device = static_cast<uint32_t>(r.num(4));
  req.channel_id = r.str();
  if (!read_names(r, req.members.add) || !read_names(r, req.members.remove)) return malformed("bad names");
  if (!r.ok || !r.in.empty()) return malformed("truncated or trailing bytes");
  if (req.actor.user.empty() || req.channel_id.empty()) return malformed("empty field");
  return req;
}

std::string encode_response(const Result<Answer>& result) {
  std::string out;
  if (result) {
    out.push_back(kResponseOk);
    put_u64(out, result->info.joined_seq);
    put_u64(out, result->info.subscribers);
    put_names(out, result->admins);
  } else {
    out.push_back(kResponseError);
    send_forwarding::put_error(out, result.error());
  }
  return out;
}

Result<Answer> decode_response(std::string_view payload) {
  ByteReader r{payload};
  const uint64_t kind = r.num(1);
  if (kind == static_cast<uint64_t>(kResponseOk)) {
    Answer a;
    a.info.joined_seq = r.num(8);
    a.info.subscribers = r.num(8);
    if (!read_names(r, a.admins) || !r.in.empty()) return malformed("bad answer");
    return a;
  }
  if (kind == static_cast<uint64_t>(kResponseError)) {
    auto e = send_forwarding::read_error(r);
    if (!e || !r.in.empty()) return malformed("bad error answer");
    return *e;
  }
  return malformed(payload.empty() ? "no answer" : "bad answer");
}

}  // namespace tern::services::channel_forwarding
