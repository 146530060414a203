// Conversions between wire shapes (proto events, HTTP JSON bodies) and the SDK's public
// types. Internal to the SDK. Pure functions; thread-safe.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "client/types.h"
#include "proto/server_frames.h"

namespace tern::client {

// Decodes the base64 body; an undecodable body (a server bug) becomes empty.
Message message_from_event(proto::MessageEvent&& e);
// GET …/messages answer {"messages":[…],"head":H}; messages lacking conversation_id get
// `conversation_id`.
Result<HistoryPage> parse_history(std::string_view body, const std::string& conversation_id);
Result<std::vector<ConversationInfo>> parse_conversations(std::string_view body);
// GET /v1/conversations/{id}: one conversation object (channels with owner, admins,
// subscribers and views).
Result<ConversationInfo> parse_conversation_info(std::string_view body);
// POST …/join → {"conversation_id","joined_seq","subscribers"}
Result<JoinResult> parse_join(std::string_view body);
// A channel's POST …/members → {"subscribers":N}
Result<uint64_t> parse_subscribers_answer(std::string_view body);
// POST …/admins → {"admins":[…]}
Result<std::vector<std::string>> parse_admins_answer(std::string_view body);
// {"user","device","token"}
Result<Credentials> parse_credentials(std::string_view body);
// {"conversation_id"}
Result<std::string> parse_conversation_id(std::string_view body);
// {"members":[…]}
Result<std::vector<std::string>> parse_members_answer(std::string_view body);
// {"code","expires_at"}
Result<LinkCode> parse_link_code(std::string_view body);
// An error answer {"error","message"} (or just a status) as an Error.
Error error_from_http(int status, std::string_view body);

}  // namespace tern::client
