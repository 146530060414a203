#include "services/channel_forwarding.h"

#include "base/byte_codec.h"
#include "services/send_forwarding.h"

namespace tern::services::channel_forwarding {
namespace {

constexpr char kResponseOk = 'k';
constexpr char kResponseError = 'e';
// The bounds (channel_forwarding.h) keep what a payload makes us hold small: each entry also
// needs its bytes, so a count above what the payload holds fails on the short read.

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
    case Op::kAdmins:
    case Op::kReads:
    case Op::kViews: return true;
  }
  return false;
}

// The node's own requests name no actor.
bool from_node(Op op) { return op == Op::kReads || op == Op::kViews; }

bool read_reads(ByteReader& r, std::vector<std::pair<std::string, Seq>>& out) {
  const uint64_t n = r.num(4);
  if (n > kMaxReads) return false;
  for (uint64_t i = 0; i < n && r.ok; ++i) {
    std::string user = r.str();
    const Seq seq = r.num(8);
    if (user.empty()) return false;
    out.emplace_back(std::move(user), seq);
  }
  return r.ok;
}

bool read_views(ByteReader& r, std::vector<std::pair<Seq, uint64_t>>& out) {
  const uint64_t n = r.num(4);
  if (n > kMaxViews) return false;
  for (uint64_t i = 0; i < n && r.ok; ++i) {
    const Seq seq = r.num(8);
    out.emplace_back(seq, r.num(8));
  }
  return r.ok;
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
  if (req.op == Op::kReads) {  // only here: the other ops' form is as nodes before it knew them
    put_u32(out, static_cast<uint32_t>(req.reads.size()));
    for (const auto& [user, seq] : req.reads) {
      put_str(out, user);
      put_u64(out, seq);
    }
  }
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
  if (req.op == Op::kReads && !read_reads(r, req.reads)) return malformed("bad read markers");
  if (!r.ok || !r.in.empty()) return malformed("truncated or trailing bytes");
  if (req.actor.user.empty() != from_node(req.op) || req.channel_id.empty()) return malformed("empty field");
  return req;
}

std::string encode_response(const Result<Answer>& result) {
  std::string out;
  if (result) {
    out.push_back(kResponseOk);
    put_u64(out, result->info.joined_seq);
    put_u64(out, result->info.subscribers);
    put_names(out, result->admins);
    if (!result->views.empty()) {  // only then: a change's answer is as nodes before views knew it
      put_u32(out, static_cast<uint32_t>(result->views.size()));
      for (const auto& [seq, n] : result->views) {
        put_u64(out, seq);
        put_u64(out, n);
      }
    }
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
    if (!read_names(r, a.admins)) return malformed("bad answer");
    if (!r.in.empty() && !read_views(r, a.views)) return malformed("bad views");
    if (!r.in.empty()) return malformed("bad answer");
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
