#include "client/attachments.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include "base/base64.h"
#include "base/ids.h"
#include "client/attachment_cipher.h"
#include "client/errors.h"

namespace tern::client {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

struct Reply {
  int status = 0;
  std::string content_range;
  std::string body;
};

// One exchange on a fresh connection, bounded by timeout_ms. Transport failures are
// network errors (the caller retries those).
Result<Reply> exchange(const ServerUrl& url, http::verb method, const std::string& target, const std::string& token,
                       const std::vector<std::pair<http::field, std::string>>& headers, std::string_view body,
                       int64_t timeout_ms) {
  net::io_context io;
  beast::tcp_stream stream(io);
  beast::error_code ec;
  net::ip::tcp::resolver resolver(io);
  auto endpoints = resolver.resolve(url.host, std::to_string(url.port), ec);
  if (ec) return network_error("resolve " + url.host + ": " + ec.message());
  stream.expires_after(std::chrono::milliseconds(timeout_ms));
  stream.connect(endpoints, ec);
  if (ec) return network_error("connect: " + ec.message());
  http::request<http::string_body> req(method, url.prefix + target, 11);
  req.set(http::field::host, url.host_header());
  req.set(http::field::authorization, "Bearer " + token);
  for (const auto& [f, v] : headers) req.set(f, v);
  req.body() = std::string(body);
  req.prepare_payload();
  http::write(stream, req, ec);
  if (ec) return network_error("write: " + ec.message());
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxAttachmentBytes + (1 << 20));
  http::read(stream, buf, parser, ec);
  if (ec) return network_error("read: " + ec.message());
  auto res = parser.release();
  Reply r;
  r.status = static_cast<int>(res.result_int());
  r.content_range = std::string(res[http::field::content_range]);
  r.body = std::move(res.body());
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  return r;
}

Error http_error(const Reply& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  std::string code = "internal", message = "HTTP " + std::to_string(r.status);
  if (!ec && v.is_object()) {
    if (auto* c = v.as_object().if_contains("error"); c && c->is_string()) code = std::string(c->as_string());
    if (auto* m = v.as_object().if_contains("message"); m && m->is_string()) message = std::string(m->as_string());
  }
  return make_error(r.status == 404 ? ErrorCode::kNotFound
                    : r.status == 413 ? ErrorCode::kTooLarge
                    : r.status == 429 ? ErrorCode::kRateLimited
                    : r.status == 403 ? ErrorCode::kLimitExceeded
                                      : ErrorCode::kInvalidArgument,
                    code + ": " + message);
}

std::optional<json::object> json_object(const std::string& body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return v.as_object();
}

uint64_t offset_of(const json::object& o) {
  const auto* v = o.if_contains("offset");
  return v && v->is_int64() ? static_cast<uint64_t>(v->as_int64()) : v && v->is_uint64() ? v->as_uint64() : 0;
}

}  // namespace

Result<Attachment> upload_attachment(const ServerUrl& url, const std::string& token, std::string_view plaintext,
                                     std::string type, std::string name, const Progress& progress,
                                     const TransferOptions& options) {
  auto enc = encrypt_attachment(plaintext);
  if (!enc) return enc.error();
  const std::string& blob = enc->blob;
  const uint64_t total = blob.size();
  auto created = exchange(url, http::verb::post, "/v1/media/uploads", token, {{http::field::content_type, "application/json"}},
                          R"({"size":)" + std::to_string(total) + "}", options.timeout_ms);
  if (!created) return created.error();
  if (created->status != 201) return http_error(*created);
  auto o = json_object(created->body);
  const json::value* uid = o ? o->if_contains("upload_id") : nullptr;
  if (!uid || !uid->is_string()) return make_error(ErrorCode::kInternal, "upload: no upload_id in the answer");
  const std::string target = "/v1/media/uploads/" + std::string(uid->as_string());

  uint64_t offset = 0;
  int failures = 0;
  std::string media_id;
  if (progress) progress(0, total);
  while (media_id.empty()) {
    const uint64_t n = std::min<uint64_t>(options.chunk_bytes, total - offset);
    const std::string range = "bytes " + std::to_string(offset) + "-" + std::to_string(offset + n - 1) + "/" +
                              std::to_string(total);
    auto r = exchange(url, http::verb::put, target, token,
                      {{http::field::content_type, "application/octet-stream"}, {http::field::content_range, range}},
                      std::string_view(blob).substr(offset, n), options.timeout_ms);
    if (!r || (r->status != 200 && r->status != 201)) {
      // Dropped, or the server has a different offset: ask where to continue.
      if (r && r->status != 400) return http_error(*r);
      if (++failures >= options.max_attempts) return r ? http_error(*r) : r.error();
      auto st = exchange(url, http::verb::get, target, token, {}, {}, options.timeout_ms);
      if (!st) continue;
      if (st->status != 200) return http_error(*st);
      if (auto so = json_object(st->body)) offset = offset_of(*so);
      continue;
    }
    failures = 0;
    auto ro = json_object(r->body);
    if (!ro) return make_error(ErrorCode::kInternal, "upload: answer is not JSON");
    if (r->status == 201) {
      const json::value* id = ro->if_contains("media_id");
      if (!id || !id->is_string()) return make_error(ErrorCode::kInternal, "upload: no media_id in the answer");
      media_id = std::string(id->as_string());
      offset = total;
    } else {
      offset = offset_of(*ro);
    }
    if (progress) progress(offset, total);
  }
  if (media_id != enc->digest_hex) return make_error(ErrorCode::kInternal, "upload: the server named another digest");
  return Attachment{media_id, enc->key, static_cast<uint64_t>(plaintext.size()), std::move(type), std::move(name)};
}

Result<std::string> download_attachment(const ServerUrl& url, const std::string& token, const Attachment& a,
                                        const Progress& progress, const TransferOptions& options) {
  if (!valid_media_id(a.media_id)) return make_error(ErrorCode::kInvalidArgument, "not a media id");
  std::string blob;
  uint64_t total = 0;
  bool known = false;
  int failures = 0;
  while (!known || blob.size() < total) {
    const uint64_t last = blob.size() + options.chunk_bytes - 1;
    auto r = exchange(url, http::verb::get, "/v1/media/" + a.media_id, token,
                      {{http::field::range, "bytes=" + std::to_string(blob.size()) + "-" + std::to_string(last)}}, {},
                      options.timeout_ms);
    if (!r) {
      if (++failures >= options.max_attempts) return r.error();
      continue;  // resumes at blob.size()
    }
    if (r->status == 200) {  // the server sent it whole
      blob = std::move(r->body);
      total = blob.size();
      known = true;
    } else if (r->status == 206) {
      const size_t slash = r->content_range.rfind('/');
      if (slash == std::string::npos) return make_error(ErrorCode::kInternal, "download: bad Content-Range");
      total = std::stoull(r->content_range.substr(slash + 1));
      known = true;
      if (total > kMaxAttachmentBytes + 64) return make_error(ErrorCode::kTooLarge, "attachment too large");
      blob += r->body;
    } else {
      return http_error(*r);
    }
    failures = 0;
    if (progress) progress(blob.size(), total);
  }
  return decrypt_attachment(blob, a.key, a.media_id);
}

std::string encode_attachment_body(std::string_view text, const std::vector<Attachment>& attachments) {
  json::array list;
  for (const auto& a : attachments)
    list.emplace_back(json::object{{"media_id", a.media_id}, {"key", base64_encode(a.key)}, {"size", a.size},
                                   {"type", a.type}, {"name", a.name}});
  return json::serialize(json::object{{"text", text}, {"attachments", std::move(list)}});
}

std::optional<std::pair<std::string, std::vector<Attachment>>> parse_attachment_body(std::string_view body) {
  if (body.empty() || body.front() != '{') return std::nullopt;
  boost::system::error_code ec;
  json::parse_options po;
  po.max_depth = 8;
  json::value v = json::parse(body, ec, {}, po);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  const auto* list = o.if_contains("attachments");
  if (!list || !list->is_array()) return std::nullopt;
  std::pair<std::string, std::vector<Attachment>> out;
  if (const auto* t = o.if_contains("text"); t && t->is_string()) out.first = std::string(t->as_string());
  for (const auto& item : list->as_array()) {
    if (!item.is_object()) return std::nullopt;
    const auto& a = item.as_object();
    const auto* id = a.if_contains("media_id");
    const auto* key = a.if_contains("key");
    if (!id || !id->is_string() || !valid_media_id(id->as_string()) || !key || !key->is_string()) return std::nullopt;
    auto raw = base64_decode(key->as_string());
    if (!raw || raw->size() != 32) return std::nullopt;
    Attachment at;
    at.media_id = std::string(id->as_string());
    at.key = std::move(*raw);
    if (const auto* s = a.if_contains("size"); s && s->is_int64() && s->as_int64() >= 0) at.size = static_cast<uint64_t>(s->as_int64());
    if (const auto* s = a.if_contains("type"); s && s->is_string()) at.type = std::string(s->as_string());
    if (const auto* s = a.if_contains("name"); s && s->is_string()) at.name = std::string(s->as_string());
    out.second.push_back(std::move(at));
  }
  return out;
}

}  // namespace tern::client
