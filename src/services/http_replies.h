// JSON answers of the HTTP APIs (HttpApi, SafetyApi, AdminApi): an error as wire-v1's error
// body with its HTTP status (counted in tern_http_errors_total), or a JSON value. Thread-safe.
#pragma once
#include <boost/json.hpp>

#include "base/result.h"
#include "gateway/service_interface.h"

namespace tern::services {

gateway::HttpResponse error_response(const Error& e);
gateway::HttpResponse json_response(int status, const boost::json::value& v);
// Parses a JSON object body within the limits, or answers why not (malformed / too_large).
Result<boost::json::object> parse_json_object(const std::string& body, size_t max_bytes, unsigned max_depth);

}  // namespace tern::services
