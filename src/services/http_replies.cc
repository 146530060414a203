#include "services/http_replies.h"

#include "base/metrics.h"
#include "proto/frames.h"

namespace tern::services {
namespace json = boost::json;

gateway::HttpResponse error_response(const Error& e) {
  static auto& errors = MetricsRegistry::global().family("tern_http_errors_total", "code", "HTTP errors by code");
  errors.with(std::string(code_name(e.code))).inc();
  return gateway::HttpResponse{http_status(e.code), proto::encode_http_error(e), "application/json"};
}

gateway::HttpResponse json_response(int status, const json::value& v) {
  return gateway::HttpResponse{status, json::serialize(v), "application/json"};
}

Result<json::object> parse_json_object(const std::string& body, size_t max_bytes, unsigned max_depth) {
  if (body.size() > max_bytes) return make_error(ErrorCode::kTooLarge, "request body too large");
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = max_depth;
  json::value v = json::parse(body, ec, {}, opts);
  if (ec || !v.is_object()) return make_error(ErrorCode::kMalformed, "body must be a JSON object");
  return std::move(v.as_object());
}

}  // namespace tern::services
