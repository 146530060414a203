#include "proto/frames.h"

#include "proto/json_writer.h"

#include <algorithm>
#include <charconv>
#include <optional>

#include <boost/json.hpp>

#include "base/base64.h"

namespace tern::proto {
namespace json = boost::json;
namespace {

Error malformed(std::string msg) { return make_error(ErrorCode::kMalformed, std::move(msg)); }

Result<json::object> parse_object(std::string_view text, const Limits& limits) {
  json::parse_options opts;
  opts.max_depth = limits.max_json_depth;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec, {}, opts);
  if (ec) return malformed("invalid JSON: " + ec.message());
  if (!v.is_object()) return malformed("frame must be a JSON object");
  return std::move(v.as_object());
}

// Field readers: absent → error, wrong type → error.
Result<std::string> get_string(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return malformed("missing field '" + std::string(key) + "'");
  if (!it->value().is_string()) return malformed("field '" + std::string(key) + "' must be a string");
  return std::string(it->value().as_string());
}

Result<uint64_t> get_uint(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return malformed("missing field '" + std::string(key) + "'");
  const auto& v = it->value();
  if (v.is_uint64()) return v.as_uint64();
  if (v.is_int64() && v.as_int64() >= 0) return static_cast<uint64_t>(v.as_int64());
  return malformed("field '" + std::string(key) + "' must be a non-negative integer");
}

Result<std::string> get_conversation(const json::object& o) {
  auto id = get_string(o, "conversation_id");
  if (!id) return id;
  if (!valid_conversation_id(*id)) return make_error(ErrorCode::kInvalidArgument, "invalid conversation_id");
  return id;
}

Result<void> check_payload(std::string_view b64, const Limits& limits) {
  // Cheap length bound first, so an oversize payload is never decoded.
  if (b64.size() / 4 * 3 > limits.max_body_bytes + 2)
    return make_error(ErrorCode::kTooLarge, "body exceeds " + std::to_string(limits.max_body_bytes) + " bytes");
  auto n = base64_decoded_size(b64);
  if (!n) return malformed("body is not valid padded base64");
  if (*n > limits.max_body_bytes)
    return make_error(ErrorCode::kTooLarge, "body exceeds " + std::to_string(limits.max_body_bytes) + " bytes");
  return {};
}

Result<ClientFrame> parse_send(const json::object& o, const Limits& limits, std::string* ref) {
  SendFrame f;
  auto cmid = get_string(o, "client_msg_id");
  if (!cmid) return cmid.error();
  if (!valid_client_msg_id(*cmid)) return make_error(ErrorCode::kInvalidArgument, "client_msg_id must be 1-64 printable ASCII characters");
  f.client_msg_id = std::move(*cmid);
  if (ref) *ref = f.client_msg_id;
  auto conv = get_conversation(o);
  if (!conv) return conv.error();
  f.conversation_id = std::move(*conv);

  const auto* body = o.if_contains("body");
  const auto* bodies = o.if_contains("bodies");
  if ((body != nullptr) == (bodies != nullptr)) return malformed("exactly one of 'body' and 'bodies' is required");
  if (body) {
    if (!body->is_string()) return malformed("field 'body' must be a string");
    if (auto r = check_payload(body->as_string(), limits); !r) return r.error();
    f.body = std::string(body->as_string());
  } else {
    if (!bodies->is_object() || bodies->as_object().empty()) return malformed("field 'bodies' must be a non-empty object");
    const auto& bo = bodies->as_object();
    if (bo.size() > limits.max_members_per_group * limits.max_devices_per_user)
      return make_error(ErrorCode::kTooLarge, "too many entries in 'bodies'");
    for (const auto& kv : bo) {
      if (!parse_device_key(kv.key())) return make_error(ErrorCode::kInvalidArgument, "bodies key must be 'user:device'");
      if (!kv.value().is_string()) return malformed("each 'bodies' entry must be a string");
      if (auto r = check_payload(kv.value().as_string(), limits); !r) return r.error();
      f.bodies.emplace(std::string(kv.key()), std::string(kv.value().as_string()));
    }
  }
  if (o.contains("reply_to")) {
    auto r = get_uint(o, "reply_to");
    if (!r) return r.error();
    if (*r == 0) return make_error(ErrorCode::kInvalidArgument, "reply_to must be a seq >= 1");
    f.reply_to = *r;
  }
  if (o.contains("ttl")) {
    auto t = get_uint(o, "ttl");
    if (!t) return t.error();
    if (*t == 0 || *t > static_cast<uint64_t>(limits.max_ttl_seconds))
      return make_error(ErrorCode::kInvalidArgument, "ttl must be 1.." + std::to_string(limits.max_ttl_seconds) + " seconds");
    f.ttl_seconds = static_cast<int64_t>(*t);
  }
  if (const auto* keys = o.if_contains("keys")) {
    if (!keys->is_bool()) return malformed("field 'keys' must be a boolean");
    f.keys = keys->as_bool();
  }
  if (const auto* ids = o.if_contains("registration_ids")) {
    if (!ids->is_object()) return malformed("field 'registration_ids' must be an object");
    for (const auto& kv : ids->as_object()) {
      if (!f.bodies.count(std::string(kv.key())))
        return make_error(ErrorCode::kInvalidArgument, "each 'registration_ids' key must be a key of 'bodies'");
      const auto& v = kv.value();
      const uint64_t n = v.is_uint64() ? v.as_uint64() : v.is_int64() && v.as_int64() > 0 ? v.as_int64() : 0;
      if (n == 0 || n > UINT32_MAX)
        return make_error(ErrorCode::kInvalidArgument, "a registration id must be an integer 1..4294967295");
      f.registration_ids.emplace(std::string(kv.key()), static_cast<uint32_t>(n));
    }
  }
  if (const auto* media = o.if_contains("media")) {
    if (!media->is_array()) return malformed("field 'media' must be an array of media ids");
    if (media->as_array().size() > limits.max_media_per_message)
      return make_error(ErrorCode::kTooLarge,
                        "at most " + std::to_string(limits.max_media_per_message) + " media ids per message");
    for (const auto& id : media->as_array()) {
      if (!id.is_string() || !valid_media_id(id.as_string()))
        return make_error(ErrorCode::kInvalidArgument, "each media id must be 64 lowercase hex characters");
      if (std::find(f.media.begin(), f.media.end(), id.as_string()) == f.media.end())
        f.media.emplace_back(id.as_string());
    }
  }
  return ClientFrame{std::move(f)};
}

template <typename F>
Result<ClientFrame> parse_conv_seq(const json::object& o) {
  auto conv = get_conversation(o);
  if (!conv) return conv.error();
  auto seq = get_uint(o, "seq");
  if (!seq) return seq.error();
  return ClientFrame{F{std::move(*conv), *seq}};
}

}  // namespace

Result<ClientFrame> parse_client_frame(std::string_view text, const Limits& limits, std::string* ref) {
  if (text.size() > limits.max_frame_bytes) return make_error(ErrorCode::kTooLarge, "frame too large");
  auto obj = parse_object(text, limits);
  if (!obj) return obj.error();
  const auto& o = *obj;
  auto type = get_string(o, "type");
  if (!type) return type.error();
  if (*type == "send") return parse_send(o, limits, ref);
  if (*type == "ack") return parse_conv_seq<AckFrame>(o);
  if (*type == "read") return parse_conv_seq<ReadFrame>(o);
  if (*type == "typing") {
    auto conv = get_conversation(o);
    if (!conv) return conv.error();
    const auto* active = o.if_contains("active");
    if (!active || !active->is_bool()) return malformed("field 'active' must be a boolean");
    return ClientFrame{TypingFrame{std::move(*conv), active->as_bool()}};
  }
  if (*type == "presence_subscribe") {
    const auto* users = o.if_contains("users");
    if (!users || !users->is_array()) return malformed("field 'users' must be an array of user ids");
    if (users->as_array().size() > limits.max_presence_users)
      return make_error(ErrorCode::kTooLarge, "at most " + std::to_string(limits.max_presence_users) + " users");
    PresenceSubscribeFrame f;
    for (const auto& u : users->as_array()) {
      if (!u.is_string() || !valid_user_id(u.as_string())) return make_error(ErrorCode::kInvalidArgument, "invalid user id in 'users'");
      f.users.emplace_back(u.as_string());
    }
    return ClientFrame{std::move(f)};
  }
  return make_error(ErrorCode::kUnknownType, "unknown frame type");
}

std::string_view peek_send_ref(std::string_view text) {
  constexpr std::string_view kType = R"("type":"send")";
  constexpr std::string_view kKey = R"("client_msg_id":")";
  if (text.find(kType) == std::string_view::npos) return {};
  const size_t at = text.find(kKey);
  if (at == std::string_view::npos) return {};
  const size_t start = at + kKey.size();
  const size_t end = text.find('"', start);
  if (end == std::string_view::npos) return {};
  const std::string_view id = text.substr(start, end - start);
  if (id.find('\\') != std::string_view::npos || !valid_client_msg_id(id)) return {};
  return id;
}

std::string_view frame_type_name(const ClientFrame& frame) {
  static constexpr std::string_view names[] = {"send", "ack", "read", "typing", "presence_subscribe"};
  return names[frame.index()];
}

std::string encode_message(const MessageRecord& m) {
  // Key order is the stored format's (and what boost::json gave before): readers of old
  // and new records see the same bytes.
  std::string o;
  o.reserve(160 + m.conversation_id.size() + m.sender.size() + (m.body ? m.body->size() : 0) +
            (m.system_json ? m.system_json->size() : 0));
  o += R"({"type":"message",)";
  append_key(o, "conversation_id");
  append_json_string(o, m.conversation_id);
  o += ',';
  append_key(o, "seq");
  append_uint(o, m.seq);
  o += ',';
  append_key(o, "sender");
  append_json_string(o, m.sender);
  o += ',';
  append_key(o, "sender_device");
  append_uint(o, m.sender_device);
  o += ',';
  append_key(o, "ts");
  append_int(o, m.ts);
  if (m.body) {
    o += ',';
    append_key(o, "body");
    append_json_string(o, *m.body);
  }
  if (!m.bodies.empty()) {
    o += ',';
    append_key(o, "bodies");
    o += '{';
    bool first = true;
    for (const auto& [k, v] : m.bodies) {
      if (!first) o += ',';
      first = false;
      append_json_string(o, k);
      o += ':';
      append_json_string(o, v);
    }
    o += '}';
  }
  if (m.reply_to) {
    o += ',';
    append_key(o, "reply_to");
    append_uint(o, *m.reply_to);
  }
  if (m.expires_at) {
    o += ',';
    append_key(o, "expires_at");
    append_int(o, *m.expires_at);
  }
  if (!m.media.empty()) {
    o += ',';
    append_key(o, "media");
    o += '[';
    for (size_t i = 0; i < m.media.size(); ++i) {
      if (i) o += ',';
      append_json_string(o, m.media[i]);
    }
    o += ']';
  }
  if (m.system_json) {
    o += ',';
    append_key(o, "system");
    o += *m.system_json;  // already serialized JSON, built by the server
  }
  if (!m.withheld_from.empty()) {
    o += ',';
    append_key(o, "withheld_from");
    append_json_string(o, m.withheld_from);
  }
  o += '}';
  return o;
}

namespace {

// Reads the stored format exactly as encode_message() writes it, without a JSON DOM (replay
// reads every message's meta). Returns nullopt on anything unexpected (escapes included),
// and the caller falls back to the full parser.
class StoredScanner {
 public:
  explicit StoredScanner(std::string_view s) : s_(s) {}
  bool lit(std::string_view l) {
    if (s_.substr(pos_, l.size()) != l) return false;
    pos_ += l.size();
    return true;
  }
  bool str(std::string_view* out) {  // after the opening quote; no escapes allowed
    const size_t end = s_.find('"', pos_);
    if (end == std::string_view::npos) return false;
    const std::string_view v = s_.substr(pos_, end - pos_);
    if (v.find('\\') != std::string_view::npos) return false;
    if (out) *out = v;
    pos_ = end + 1;
    return true;
  }
  template <typename T>
  bool num(T* out) {
    auto r = std::from_chars(s_.data() + pos_, s_.data() + s_.size(), *out);
    if (r.ec != std::errc()) return false;
    pos_ = static_cast<size_t>(r.ptr - s_.data());
    return true;
  }
  bool skip_flat_array() {  // ["a","b",...]: no nesting, no escapes
    const size_t end = s_.find(']', pos_);
    if (end == std::string_view::npos) return false;
    if (s_.substr(pos_, end - pos_).find_first_of("[{\\") != std::string_view::npos) return false;
    pos_ = end + 1;
    return true;
  }
  bool skip_flat_object() {  // {"k":"v",...}: no nesting, no escapes
    const size_t end = s_.find('}', pos_);
    if (end == std::string_view::npos) return false;
    if (s_.substr(pos_, end - pos_).find_first_of("{\\") != std::string_view::npos) return false;
    pos_ = end + 1;
    return true;
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

std::optional<StoredMeta> scan_stored_meta(std::string_view stored) {
  StoredScanner sc(stored);
  StoredMeta m;
  std::string_view sender;
  if (!sc.lit(R"({"type":"message","conversation_id":")") || !sc.str(nullptr) || !sc.lit(R"(,"seq":)") ||
      !sc.num(&m.seq) || !sc.lit(R"(,"sender":")") || !sc.str(&sender) || !sc.lit(R"(,"sender_device":)") ||
      !sc.num(&m.sender_device))
    return std::nullopt;
  int64_t ts = 0;
  if (!sc.lit(R"(,"ts":)") || !sc.num(&ts)) return std::nullopt;
  if (sc.lit(R"(,"body":")") && !sc.str(nullptr)) return std::nullopt;
  if (sc.lit(R"(,"bodies":)")) {
    if (!sc.skip_flat_object()) return std::nullopt;
    m.per_device = true;
  }
  Seq reply_to = 0;
  if (sc.lit(R"(,"reply_to":)") && !sc.num(&reply_to)) return std::nullopt;
  if (sc.lit(R"(,"expires_at":)")) {
    int64_t e = 0;
    if (!sc.num(&e)) return std::nullopt;
    m.expires_at = e;
  }
  if (sc.lit(R"(,"media":[)") && !sc.skip_flat_array()) return std::nullopt;
  if (sc.lit(R"(,"system":)")) {
    m.system = true;
  } else if (!sc.lit("}")) {
    return std::nullopt;
  }
  m.sender = std::string(sender);
  return m;
}

}  // namespace

Result<StoredMeta> stored_meta(std::string_view stored) {
  if (auto fast = scan_stored_meta(stored)) return std::move(*fast);
  boost::system::error_code ec;
  json::value v = json::parse(stored, ec);
  if (ec || !v.is_object()) return make_error(ErrorCode::kInternal, "corrupt stored message");
  const auto& o = v.as_object();
  StoredMeta m;
  auto seq = get_uint(o, "seq");
  auto sender = get_string(o, "sender");
  auto dev = get_uint(o, "sender_device");
  if (!seq || !sender || !dev) return make_error(ErrorCode::kInternal, "corrupt stored message");
  m.seq = *seq;
  m.sender = std::move(*sender);
  m.sender_device = static_cast<uint32_t>(*dev);
  if (const auto* e = o.if_contains("expires_at"); e && e->is_int64()) m.expires_at = e->as_int64();
  m.per_device = o.contains("bodies");
  m.system = o.contains("system");
  return m;
}

Result<std::string> render_message_for(std::string_view stored, const DeviceRef& device) {
  // Fast path: a message with one shared body is sent exactly as stored.
  const bool withheld = stored.find("\"withheld_from\"") != std::string_view::npos;
  if (!withheld && stored.find("\"bodies\"") == std::string_view::npos) return std::string(stored);
  boost::system::error_code ec;
  json::value v = json::parse(stored, ec);
  if (ec || !v.is_object()) return make_error(ErrorCode::kInternal, "corrupt stored message");
  auto& o = v.as_object();
  if (auto* w = o.if_contains("withheld_from")) {
    const bool for_blocker = w->is_string() && w->as_string() == device.user;
    o.erase("withheld_from");
    if (for_blocker) {
      o.erase("bodies");
      o.erase("reply_to");
      o["body"] = "";
      o["withheld"] = true;
      return json::serialize(o);
    }
  }
  auto* bodies = o.if_contains("bodies");
  if (!bodies || !bodies->is_object()) return withheld ? json::serialize(o) : std::string(stored);
  const auto key = device.key();
  auto* mine = bodies->as_object().if_contains(key);
  json::value body = mine ? *mine : json::value("");
  o.erase("bodies");
  o["body"] = std::move(body);
  return json::serialize(o);
}

Result<std::string> render_expired(std::string_view stored) {
  boost::system::error_code ec;
  json::value v = json::parse(stored, ec);
  if (ec || !v.is_object()) return make_error(ErrorCode::kInternal, "corrupt stored message");
  auto& o = v.as_object();
  o.erase("bodies");
  o.erase("media");
  o.erase("withheld_from");
  o["body"] = "";
  o["expired"] = true;
  return json::serialize(o);
}

std::string encode_sent(std::string_view client_msg_id, std::string_view conversation_id, Seq seq, int64_t ts) {
  std::string o;
  o.reserve(96 + client_msg_id.size() + conversation_id.size());
  o += R"({"type":"sent",)";
  append_key(o, "client_msg_id");
  append_json_string(o, client_msg_id);
  o += ',';
  append_key(o, "conversation_id");
  append_json_string(o, conversation_id);
  o += ',';
  append_key(o, "seq");
  append_uint(o, seq);
  o += ',';
  append_key(o, "ts");
  append_int(o, ts);
  o += '}';
  return o;
}

std::string encode_synced() { return R"({"type":"synced"})"; }

std::string encode_receipt(std::string_view conversation_id, std::string_view user, std::string_view status, Seq seq) {
  std::string o;
  o.reserve(96 + conversation_id.size() + user.size());
  o += R"({"type":"receipt",)";
  append_key(o, "conversation_id");
  append_json_string(o, conversation_id);
  o += ',';
  append_key(o, "user");
  append_json_string(o, user);
  o += ',';
  append_key(o, "status");
  append_json_string(o, status);
  o += ',';
  append_key(o, "seq");
  append_uint(o, seq);
  o += '}';
  return o;
}

std::string encode_typing(std::string_view conversation_id, std::string_view user, bool active) {
  json::object o;
  o["type"] = "typing";
  o["conversation_id"] = conversation_id;
  o["user"] = user;
  o["active"] = active;
  return json::serialize(o);
}

std::string encode_presence(std::string_view user, bool online, int64_t last_seen) {
  json::object o;
  o["type"] = "presence";
  o["user"] = user;
  o["online"] = online;
  if (last_seen > 0) o["last_seen"] = last_seen;
  return json::serialize(o);
}

namespace {
json::object error_object(const Error& error) {
  json::object o;
  if (!error.detail_json.empty()) {
    boost::system::error_code ec;
    json::value d = json::parse(error.detail_json, ec);
    if (!ec && d.is_object()) o = std::move(d.as_object());
  }
  return o;
}
}  // namespace

std::string encode_error(const Error& error, std::string_view ref) {
  json::object o = error_object(error);
  o["type"] = "error";
  o["code"] = code_name(error.code);
  o["message"] = error.message;
  if (!ref.empty()) o["ref"] = ref;
  return json::serialize(o);
}

std::string encode_http_error(const Error& error) {
  json::object o = error_object(error);
  o["error"] = code_name(error.code);
  o["message"] = error.message;
  return json::serialize(o);
}

}  // namespace tern::proto
