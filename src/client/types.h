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

struct ConversationInfo {
  std::string conversation_id;
  std::string type;  // "direct" or "group"
  std::string name;  // groups only (when the server reports it)
  Seq head = 0;      // highest seq
  std::vector<std::string> members;  // when the server reports them
  std::string json;  // the whole object as received, for fields this SDK does not model
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
