// One HTTP/1.1 request over TCP (TLS for an https:// URL, see server_url.h) with Beast: resolve, connect, write, read, close.
// A fresh connection per request keeps the client free of connection-pool state; SDK HTTP
// traffic is control traffic (management calls, gap backfill), not the message path.
// Internal to the SDK (not part of the public header set).
// Thread affinity: the callback runs on the io_context's thread(s), exactly once, after
// at most timeout_ms (the whole exchange is bounded by one deadline).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include <boost/asio/io_context.hpp>

#include "base/result.h"
#include "client/server_url.h"

namespace tern::client {

struct HttpResult {
  int status = 0;
  std::string body;
};

struct HttpCallSpec {
  std::string method;  // "GET" / "POST"
  std::string target;  // path and query, without the URL prefix
  std::string token;   // bearer; empty: no Authorization header
  std::string body;    // JSON; empty for GET
  int64_t timeout_ms = 10'000;
  size_t max_response_bytes = 64 << 20;  // a backfill page of 500 maximal messages fits
};

// Transport failures complete with network_error(); any HTTP status completes with ok.
void http_call(boost::asio::io_context& ioc, const ServerUrl& url, HttpCallSpec spec,
               std::function<void(Result<HttpResult>)> done);

}  // namespace tern::client
