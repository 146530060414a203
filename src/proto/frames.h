// The wire-v1 WebSocket frames: client frames parsed into typed values (every field
// validated; failures are Errors with stable codes), server frames encoded to JSON text.
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
#include "proto/limits.h"

namespace tern::proto {

// ---- client → server ----
struct SendFrame {
  std::string client_msg_id;
  std::string conversation_id;
  std::optional<std::string> body;           // base64, validated
  std::map<std::string, std::string> bodies;  // "user:device" → base64 (instead of body)
  std::optional<Seq> reply_to;
  std::optional<int64_t> ttl_seconds;
  // [Tern] "keys": true marks key-management traffic (session set-up, sender-key
  // distribution) for the server's metrics; it is not stored or forwarded.
  bool keys = false;
  // [Tern] "registration_ids": per `bodies` key, the registration id of the device's keys
  // the sender encrypted for; a mismatch answers device_mismatch with the device as `stale`.
  std::map<std::string, uint32_t> registration_ids;
  std::vector<std::string> media;  // [Tern extension] media ids the message names (validated form)
};
struct AckFrame { std::string conversation_id; Seq seq = 0; };
struct ReadFrame { std::string conversation_id; Seq seq = 0; };
struct TypingFrame { std::string conversation_id; bool active = false; };
struct PresenceSubscribeFrame { std::vector<std::string> users; };

using ClientFrame = std::variant<SendFrame, AckFrame, ReadFrame, TypingFrame, PresenceSubscribeFrame>;

// Parses one text frame. On failure `*ref` (if given) receives the frame's client_msg_id
// when one could be read, for the `ref` of the error frame.
Result<ClientFrame> parse_client_frame(std::string_view text, const Limits& limits,
                                       std::string* ref = nullptr);
// Name of a parsed frame's type, for metrics.
// The client_msg_id of a frame that looks like a `send`, found without parsing it (for the
// `ref` of a refusal that comes before parsing, e.g. the frame-rate limit). Empty if the
// frame is not recognisably a send or the id is not a valid client_msg_id.
std::string_view peek_send_ref(std::string_view text);

std::string_view frame_type_name(const ClientFrame& frame);

// ---- stored message ----
// A message as stored in the log and sent as a `message` frame. The stored bytes ARE the
// frame (encode once, share across recipients), except that a per-device message keeps its
// whole `bodies` map and is rendered per device by render_message_for().
struct MessageRecord {
  std::string conversation_id;
  Seq seq = 0;
  std::string sender;
  uint32_t sender_device = 0;
  int64_t ts = 0;
  std::optional<std::string> body;
  std::map<std::string, std::string> bodies;
  std::optional<Seq> reply_to;
  std::optional<int64_t> expires_at;
  std::optional<std::string> system_json;  // the `system` object, as JSON text
  std::vector<std::string> media;          // [Tern extension] media ids, clear metadata (issue 11)
  std::string withheld_from{};  // issue 12: stored only; this user's devices get a tombstone (blocks.h)
};

std::string encode_message(const MessageRecord& m);
// The frame one device receives for a stored message: the stored text itself unless the
// message carries `bodies`, in which case `body` is that device's entry, or `withheld_from`
// (never sent): removed for everyone, and for that user's devices the message becomes a
// tombstone ("body":"","withheld":true).
Result<std::string> render_message_for(std::string_view stored, const DeviceRef& device);
// The frame for a message whose ttl has passed: its place in the seq order stays (so clients
// see no gap) but its payload is gone: "body":"" and "expired":true [Tern extension]; its
// `bodies` and `media` are dropped too.
Result<std::string> render_expired(std::string_view stored);
// Cheap reads of a stored frame without a full decode.
struct StoredMeta {
  Seq seq = 0;
  std::string sender;
  uint32_t sender_device = 0;
  std::optional<int64_t> expires_at;
  bool per_device = false;
  bool system = false;
};
Result<StoredMeta> stored_meta(std::string_view stored);

// ---- server → client ----
std::string encode_sent(std::string_view client_msg_id, std::string_view conversation_id, Seq seq, int64_t ts);
std::string encode_synced();
std::string encode_receipt(std::string_view conversation_id, std::string_view user, std::string_view status, Seq seq);
std::string encode_typing(std::string_view conversation_id, std::string_view user, bool active);
std::string encode_presence(std::string_view user, bool online, int64_t last_seen);
std::string encode_error(const Error& error, std::string_view ref = {});
// Error body of an HTTP answer: {"error":"<code>","message":"…"} plus optional extra fields.
std::string encode_http_error(const Error& error);

}  // namespace tern::proto
