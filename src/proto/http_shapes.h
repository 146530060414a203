// Request bodies of wire-v1's HTTP endpoints, parsed and validated. Pure; thread-safe.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "proto/limits.h"

namespace tern::proto {

struct RegisterRequest { std::string user; };
struct CreateConversationRequest {
  bool group = false;
  std::string name;
  std::vector<std::string> members;  // other users; the caller is implied
  bool channel = false;    // "type":"channel" (group is set too; `members` is ignored)
  bool is_public = true;   // channel: "public" (default true)
  bool self = false;       // "type":"self" [Tern extension]: the caller alone (docs/protocol.md §3.6a)
};
struct MembersRequest {
  std::vector<std::string> add;
  std::vector<std::string> remove;
};

Result<RegisterRequest> parse_register(std::string_view body, const Limits& limits);
Result<CreateConversationRequest> parse_create_conversation(std::string_view body, const Limits& limits);
Result<MembersRequest> parse_members(std::string_view body, const Limits& limits);

// Query parameter lookup in a raw query string "a=1&b=2" (no percent-decoding needed for
// the integer and token parameters of wire-v1; tokens are URL-safe).
std::string query_param(std::string_view query, std::string_view name);

}  // namespace tern::proto
