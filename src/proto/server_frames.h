// The client's side of the wire-v1 codec: server frames parsed into typed values, client
// frames encoded. Used by the client SDK, the CLI and tern-bench; never by the server.
// Pure functions; thread-safe.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/ids.h"
#include "base/result.h"

namespace tern::proto {

struct SentEvent { std::string client_msg_id, conversation_id; Seq seq = 0; int64_t ts = 0; };
struct MessageEvent {
  std::string conversation_id;
  Seq seq = 0;
  std::string sender;
  uint32_t sender_device = 0;
  int64_t ts = 0;
  std::string body;  // base64 as received
  std::optional<Seq> reply_to;
  std::optional<int64_t> expires_at;
  std::optional<std::string> system_json;
};
struct SyncedEvent {};
struct ReceiptEvent { std::string conversation_id, user, status; Seq seq = 0; };
struct TypingEvent { std::string conversation_id, user; bool active = false; };
struct PresenceEvent { std::string user; bool online = false; int64_t last_seen = 0; };
// missing/extra/stale: the devices a device_mismatch names (stale only with registration_ids).
struct ErrorEvent { std::string code, message, ref; std::vector<std::string> missing, extra, stale; };
// [Tern] the device's one-time prekeys ran low (docs/protocol.md §14.6): upload more.
struct PrekeysLowEvent { uint64_t count = 0; };

using ServerFrame = std::variant<SentEvent, MessageEvent, SyncedEvent, ReceiptEvent, TypingEvent,
                                 PresenceEvent, ErrorEvent, PrekeysLowEvent>;

Result<ServerFrame> parse_server_frame(std::string_view text);

// Client frame encoders.
std::string encode_send(std::string_view client_msg_id, std::string_view conversation_id,
                        std::string_view body_b64, std::optional<Seq> reply_to = std::nullopt,
                        std::optional<int64_t> ttl_seconds = std::nullopt,
                        const std::vector<std::string>& media = {});
std::string encode_send_bodies(std::string_view client_msg_id, std::string_view conversation_id,
                               const std::map<std::string, std::string>& bodies_b64);
std::string encode_ack(std::string_view conversation_id, Seq seq);
std::string encode_read(std::string_view conversation_id, Seq seq);
std::string encode_typing_frame(std::string_view conversation_id, bool active);
std::string encode_presence_subscribe(const std::vector<std::string>& users);

}  // namespace tern::proto
