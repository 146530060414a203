// The client SDK's public value types: what the application receives (messages, receipts,
// typing, presence), what it gets back from calls (send results, conversations, history
// pages, link codes) and the callback shape of every asynchronous call.
// Plain values; thread-safe to copy and share read-only.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/ids.h"
#include "base/result.h"

namespace tern::client {

// Every asynchronous SDK call completes exactly once through one of these, on the SDK's io
// thread (see client.h for the threading model).
template <typename T>
using Callback = std::function<void(Result<T>)>;

// What a device needs to act as itself. The token is a secret: never log it.
struct Credentials {
  std::string user;
  uint32_t device = 0;
  std::string token;
};

// One message as handed to the application: in seq order within its conversation, each
// (conversation, seq) exactly once per Client lifetime (and across restarts with a SQLite
// store). `body` is the decoded payload bytes (the SDK does not interpret them).
struct Message {
  std::string conversation_id;
  Seq seq = 0;
  std::string sender;
  uint32_t sender_device = 0;
  int64_t ts = 0;
  std::string body;
  std::optional<Seq> reply_to;
  std::optional<int64_t> expires_at;
  std::optional<std::string> system_json;  // membership change etc., as JSON text
  // Its expires_at has passed: the SDK hands it over without a body (the application shows
  // a tombstone, as the server does, and keeps nothing of it).
  bool expired = false;
};

// `sent` for one of this device's sends: the message is durable on the server with this seq.
struct SendResult {
  std::string client_msg_id;
  std::string conversation_id;
  Seq seq = 0;
  int64_t ts = 0;
};

enum class ReceiptStatus { kDelivered, kRead };

// Cumulative: every seq <= `seq` of the conversation reached `user` (delivered) or was read.
struct Receipt {
  std::string conversation_id;
  std::string user;
  ReceiptStatus status = ReceiptStatus::kDelivered;
  Seq seq = 0;
};

struct Typing {
  std::string conversation_id;
  std::string user;
  bool active = false;
};

struct Presence {
  std::string user;
  bool online = false;
  int64_t last_seen = 0;  // ms since epoch; meaningful when !online
};

// How many subscribers read a channel post at least up to `seq` (approximate, server memory).
struct PostViews {
  Seq seq = 0;
  uint64_t views = 0;
};

// One conversation as listed (GET /v1/conversations) or described (GET /v1/conversations/{id}).
// Fields the server does not send keep their defaults; unknown fields are tolerated and kept
// in `json`.
struct ConversationInfo {
  std::string conversation_id;
  std::string type;  // "direct", "group" or "channel"
  std::string name;  // groups and channels (when the server reports it)
  Seq head = 0;      // highest seq
  Seq joined_seq = 0;  // as the server reports it (a channel: the first seq the caller sees)
  std::vector<std::string> members;  // groups and directs, when the server reports them
  // Channels only (a channel has subscribers instead of members).
  bool is_public = false;
  uint64_t subscribers = 0;
  std::vector<std::string> admins;
  std::string owner;              // GET /v1/conversations/{id} only
  std::vector<PostViews> views;   // GET /v1/conversations/{id} only: the last posts
  std::string json;  // the whole object as received, for fields this SDK does not model

  bool is_channel() const { return type == "channel"; }
};

// POST /v1/conversations/{id}/join: the caller is a subscriber and sees the posts from
// joined_seq (the head + 1 when it joined) on.
struct JoinResult {
  std::string conversation_id;
  Seq joined_seq = 0;
  uint64_t subscribers = 0;
};

struct HistoryPage {
  std::vector<Message> messages;  // increasing seq
  Seq head = 0;
};

// A one-time code shown by a signed-in device, entered on a new one (see docs in api.h).
struct LinkCode {
  std::string code;
  int64_t expires_at = 0;
};

}  // namespace tern::client
