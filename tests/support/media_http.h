// Media helpers for integration tests (issue 11): raw HTTP requests with arbitrary headers
// and binary bodies (Range, Content-Range, octet-stream uploads), uploads cut off mid-body,
// and a look through every file under a directory for a byte string.
// Thread affinity: the calling thread; each call opens and closes its own socket.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "support/test_client.h"

namespace tern::test {

struct RawHttp {
  int status = 0;  // 0: network failure or timeout
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  json::object obj() const;  // the body parsed as a JSON object (empty if it is not one)
};

// One request on a fresh connection; `headers` are sent as given (Host and Content-Length
// are added). Bounded by `timeout`.
RawHttp raw_http(uint16_t port, std::string_view method, std::string_view target,
                 const std::map<std::string, std::string>& headers, std::string_view body,
                 ms timeout = kDefaultTimeout);
// POST /v1/media with the bytes; returns the answer.
RawHttp upload(uint16_t port, std::string_view token, std::string_view bytes);
// GET /v1/media/{id}, with a Range header unless empty.
RawHttp download(uint16_t port, std::string_view token, std::string_view id, std::string_view range = {});
// Sends the headers of a request announcing `announced` body bytes, then only `body`, then
// drops the connection without reading an answer.
bool send_truncated(uint16_t port, std::string_view method, std::string_view target,
                    const std::map<std::string, std::string>& headers, uint64_t announced, std::string_view body);

std::string sha256_hex(std::string_view bytes);
std::string random_bytes(size_t n);
// Files (regular, recursively) under `dir` that contain `needle`.
std::vector<std::string> files_containing(const std::string& dir, std::string_view needle);
// The same under each of `dirs` (e.g. TestServer::disk_dirs()).
std::vector<std::string> files_containing(const std::vector<std::string>& dirs, std::string_view needle);
// Regular files under `dir` (recursively).
size_t count_files(const std::string& dir);
// Polls `cond` every 50 ms until it holds or `timeout` passes; returns its last value.
bool eventually(const std::function<bool()>& cond, ms timeout = kDefaultTimeout);

}  // namespace tern::test
