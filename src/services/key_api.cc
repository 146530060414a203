#include "services/key_api.h"

#include <charconv>
#include <set>

#include <boost/json.hpp>

#include "base/base64.h"
#include "base/clock.h"
#include "base/metrics.h"
#include "proto/frames.h"
#include "services/http_reply.h"

namespace tern::services {
namespace json = boost::json;
namespace {

constexpr size_t kPublicKeyBytes = 33;  // 0x05 ‖ X25519 u
constexpr size_t kSignatureBytes = 64;
constexpr char kDjbType = 0x05;

Error invalid(std::string msg) { return make_error(ErrorCode::kInvalidArgument, std::move(msg)); }

// A base64 field of exactly `size` bytes; a public key must also start with the 0x05 type byte.
Result<std::string> key_field(const json::object& o, std::string_view name, size_t size, bool public_key) {
  const json::value* v = o.if_contains(name);
  if (!v) return make_error(ErrorCode::kMalformed, "missing field '" + std::string(name) + "'");
  if (!v->is_string()) return make_error(ErrorCode::kMalformed, "field '" + std::string(name) + "' must be a base64 string");
  const std::string_view text = v->as_string();
  if (text.size() > 4 * ((size + 2) / 3)) return invalid(std::string(name) + " must be " + std::to_string(size) + " bytes");
  auto bytes = base64_decode(text);
  if (!bytes) return make_error(ErrorCode::kMalformed, std::string(name) + " is not valid padded base64");
  if (bytes->size() != size) return invalid(std::string(name) + " must be " + std::to_string(size) + " bytes");
  if (public_key && (*bytes)[0] != kDjbType)
    return invalid(std::string(name) + " must be a 33-byte Curve25519 public key (type byte 0x05)");
  return std::move(*bytes);
}

Result<uint32_t> u32_field(const json::object& o, std::string_view name, uint32_t min) {
  const json::value* v = o.if_contains(name);
  if (!v) return make_error(ErrorCode::kMalformed, "missing field '" + std::string(name) + "'");
  uint64_t n = 0;
  if (v->is_uint64()) n = v->as_uint64();
  else if (v->is_int64() && v->as_int64() >= 0) n = static_cast<uint64_t>(v->as_int64());
  else return make_error(ErrorCode::kMalformed, "field '" + std::string(name) + "' must be a non-negative integer");
  if (n < min || n > UINT32_MAX)
    return invalid(std::string(name) + " must be " + std::to_string(min) + ".." + std::to_string(UINT32_MAX));
  return static_cast<uint32_t>(n);
}

Result<KeyUpload> parse_upload(std::string_view body, const ServiceOptions& options) {
  if (body.size() > options.limits.max_http_body_bytes) return make_error(ErrorCode::kTooLarge, "request body too large");
  json::parse_options po;
  po.max_depth = options.limits.max_json_depth;
  boost::system::error_code ec;
  json::value v = json::parse(body, ec, {}, po);
  if (ec || !v.is_object()) return make_error(ErrorCode::kMalformed, "body must be a JSON object");
  const json::object& o = v.as_object();
  KeyUpload up;
  if (o.contains("identity_key")) {
    auto ik = key_field(o, "identity_key", kPublicKeyBytes, true);
    if (!ik) return ik.error();
    up.identity_key = std::move(*ik);
  }
  if (o.contains("registration_id")) {
    auto reg = u32_field(o, "registration_id", 1);
    if (!reg) return reg.error();
    up.registration_id = *reg;
  }
  if (const json::value* spk = o.if_contains("signed_prekey")) {
    if (!spk->is_object()) return make_error(ErrorCode::kMalformed, "signed_prekey must be an object");
    const json::object& so = spk->as_object();
    auto id = u32_field(so, "id", 0);
    if (!id) return id.error();
    auto pub = key_field(so, "public_key", kPublicKeyBytes, true);
    if (!pub) return pub.error();
    auto sig = key_field(so, "signature", kSignatureBytes, false);
    if (!sig) return sig.error();
    up.signed_prekey = store::SignedPrekey{*id, std::move(*pub), std::move(*sig)};
  }
  if (const json::value* otks = o.if_contains("one_time_prekeys")) {
    if (!otks->is_array()) return make_error(ErrorCode::kMalformed, "one_time_prekeys must be an array");
    if (otks->as_array().size() > options.max_prekeys_per_upload)
      return make_error(ErrorCode::kTooLarge, "at most " + std::to_string(options.max_prekeys_per_upload) +
                                                  " one_time_prekeys per upload");
    std::set<uint32_t> seen;
    for (const json::value& e : otks->as_array()) {
      if (!e.is_object()) return make_error(ErrorCode::kMalformed, "each one_time_prekeys entry must be an object");
      auto id = u32_field(e.as_object(), "id", 0);
      if (!id) return id.error();
      if (!seen.insert(*id).second) return invalid("one_time_prekeys ids must be distinct");
      auto pub = key_field(e.as_object(), "public_key", kPublicKeyBytes, true);
      if (!pub) return pub.error();
      up.one_time_prekeys.push_back(store::OneTimePrekey{*id, std::move(*pub)});
    }
  }
  if (!up.identity_key && !up.registration_id && !up.signed_prekey && up.one_time_prekeys.empty())
    return invalid("nothing to upload");
  return up;
}

json::object status_json(const KeyStatus& st) {
  json::object o{{"count", st.one_time_prekeys}};
  if (st.signed_prekey_id) o["signed_prekey_id"] = *st.signed_prekey_id;
  if (st.previous_signed_prekey_id) {
    o["previous_signed_prekey_id"] = *st.previous_signed_prekey_id;
    o["previous_signed_prekey_until"] = st.previous_signed_prekey_until;
  }
  return o;
}

json::object bundle_json(const Bundle& b) {
  json::object o{{"device", b.device},
                 {"registration_id", b.registration_id},
                 {"identity_key", base64_encode(b.identity_key)},
                 {"signed_prekey", json::object{{"id", b.signed_prekey.id},
                                                {"public_key", base64_encode(b.signed_prekey.public_key)},
                                                {"signature", base64_encode(b.signed_prekey.signature)}}}};
  if (b.one_time_prekey)
    o["one_time_prekey"] = json::object{{"id", b.one_time_prekey->id},
                                        {"public_key", base64_encode(b.one_time_prekey->public_key)}};
  return o;
}

// "/v1/keys/{user}" or "/v1/keys/{user}/{device}".
bool split_keys_path(std::string_view path, std::string& user, std::optional<uint32_t>& device, bool& valid) {
  static constexpr std::string_view prefix = "/v1/keys/";
  if (!path.starts_with(prefix)) return false;
  std::string_view tail = path.substr(prefix.size());
  const size_t slash = tail.find('/');
  user = std::string(tail.substr(0, slash));
  valid = valid_user_id(user);
  if (slash != std::string_view::npos) {
    const std::string_view d = tail.substr(slash + 1);
    uint32_t n = 0;
    auto [p, ec] = std::from_chars(d.data(), d.data() + d.size(), n);
    if (ec != std::errc() || p != d.data() + d.size() || n == 0) valid = false;
    device = n;
  }
  return true;
}

// "/v1/users/{user}/devices".
bool split_devices_path(std::string_view path, std::string& user) {
  static constexpr std::string_view prefix = "/v1/users/", suffix = "/devices";
  if (!path.starts_with(prefix) || !path.ends_with(suffix) || path.size() <= prefix.size() + suffix.size()) return false;
  user = std::string(path.substr(prefix.size(), path.size() - prefix.size() - suffix.size()));
  return true;
}

}  // namespace

KeyApi::KeyApi(KeyDirectory* keys, const ServiceOptions& options, const std::atomic<bool>& draining,
               store::Store* shared_limits)
    : keys_(keys),
      options_(options),
      draining_(draining),
      fetch_limiter_(options.key_fetch_rate_per_sec, options.key_fetch_burst, options.rate_limiter_keys,
                     {shared_limits, "keyfetch"}) {}

bool KeyApi::handle(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply& reply) {
  const std::string& m = req.method;
  std::string user;
  std::optional<uint32_t> device;
  bool valid = true;
  const bool own = req.path == "/v1/keys";
  const bool devices = !own && split_devices_path(req.path, user);
  const bool bundle = !own && !devices && split_keys_path(req.path, user, device, valid);
  if (!own && !devices && !bundle) return false;
  if (!keys_) {
    reply(error_response(make_error(ErrorCode::kNotFound, "no such endpoint")));
    return true;
  }
  const bool writes = (own && m == "PUT") || (bundle && m == "GET");
  if (writes && draining_.load()) {
    reply(error_response(make_error(ErrorCode::kDraining, "server is shutting down")));
    return true;
  }
  if (own && m == "PUT") {
    upload(me, req, std::move(reply));
  } else if (own && m == "GET") {
    auto st = keys_->status(me);
    reply(st ? json_response(200, status_json(*st)) : error_response(st.error()));
  } else if (devices && m == "GET") {
    if (!valid_user_id(user)) {
      reply(error_response(invalid("invalid user id")));
      return true;
    }
    auto ids = keys_->identities(user);
    if (!ids) {
      reply(error_response(ids.error()));
      return true;
    }
    json::array out;
    for (const DeviceIdentity& d : *ids) {
      json::object o{{"device", d.device}};
      if (d.identity_key) {
        o["identity_key"] = base64_encode(*d.identity_key);
        o["registration_id"] = d.registration_id;
      }
      out.emplace_back(std::move(o));
    }
    reply(json_response(200, json::object{{"user", user}, {"devices", std::move(out)}}));
  } else if (bundle && m == "GET") {
    if (!valid) reply(error_response(invalid("path must be /v1/keys/{user} or /v1/keys/{user}/{device}")));
    else bundles(me, user, device, std::move(reply));
  } else {
    reply(error_response(make_error(ErrorCode::kNotFound, "no such endpoint")));
  }
  return true;
}

void KeyApi::upload(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply reply) {
  auto up = parse_upload(req.body, options_);
  if (!up) return reply(error_response(up.error()));
  keys_->upload(me, std::move(*up), [reply](Result<KeyStatus> st) {
    reply(st ? json_response(200, status_json(*st)) : error_response(st.error()));
  });
}

void KeyApi::bundles(const DeviceRef& me, const std::string& user, std::optional<uint32_t> device,
                     gateway::HttpReply reply) {
  // By requesting user, not device: linking more devices does not buy more fetches.
  if (!fetch_limiter_.take(me.user, mono_us()))
    return reply(error_response(make_error(ErrorCode::kRateLimited, "too many key bundle fetches; retry later")));
  keys_->take_bundles(user, device, [reply, user](Result<std::vector<Bundle>> r) {
    if (!r) return reply(error_response(r.error()));
    json::array out;
    for (const Bundle& b : *r) out.emplace_back(bundle_json(b));
    reply(json_response(200, json::object{{"user", user}, {"devices", std::move(out)}}));
  });
}

}  // namespace tern::services
