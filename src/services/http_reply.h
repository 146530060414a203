// The JSON answers of the HTTP endpoints (HttpApi, KeyApi): an error body with its status
// (counted in tern_http_errors_total by code), or a JSON value. Pure; thread-safe.
#pragma once
#include <boost/json.hpp>

#include "base/metrics.h"
#include "base/result.h"
#include "gateway/service_interface.h"
#include "proto/frames.h"

namespace tern::services {

inline gateway::HttpResponse error_response(const Error& e) {
  static auto& errors = MetricsRegistry::global().family("tern_http_errors_total", "code", "HTTP errors by code");
  errors.with(std::string(code_name(e.code))).inc();
  return gateway::HttpResponse{http_status(e.code), proto::encode_http_error(e), "application/json"};
}

inline gateway::HttpResponse json_response(int status, const boost::json::value& v) {
  return gateway::HttpResponse{status, boost::json::serialize(v), "application/json"};
}

}  // namespace tern::services
