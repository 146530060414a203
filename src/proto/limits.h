// Protocol limits. Each is configurable (ternd options) and each has a test; the defaults
// here are what ternd uses when nothing is set. Plain value; thread-safe to share read-only.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tern::proto {

struct Limits {
  size_t max_frame_bytes = 256 * 1024;     // one WebSocket message
  size_t max_body_bytes = 64 * 1024;       // one decoded payload (each entry of `bodies` too)
  size_t max_json_depth = 16;              // nesting of any JSON document we parse
  size_t max_http_body_bytes = 64 * 1024;  // one HTTP request body
  size_t max_presence_users = 256;         // users in one presence_subscribe
  size_t max_members_per_group = 1024;
  size_t max_devices_per_user = 6;
  size_t max_page = 500;                   // backfill page size cap
  int64_t max_ttl_seconds = 365LL * 24 * 3600;
  size_t max_media_per_message = 16;       // ids in a send's `media` (issue 11)
};

}  // namespace tern::proto
