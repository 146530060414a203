// HistoryTransfer: recent history for a newly linked device (docs/crypto.md, "History for a
// new device"). The carrier is the user's own self conversation ("s-…", docs/protocol.md
// §3.6a), whose only member is the user: a send there needs `bodies` for the user's other
// devices only, so nothing reaches another user.
//  - The new device, at its first start with keys (once per store), when it has the highest
//    device id among the user's devices with keys, sends a history request: an outbox entry
//    with client_msg_id "hr-<device>" whose pairwise plaintext is kind kHistoryRequest.
//  - Every other device of the user that opens the request answers it: the last
//    HistoryOptions::per_conversation messages of each of its HistoryOptions::conversations
//    most recently active encrypted conversations, from its local `messages` table
//    (readable, unexpired), in chunks of at most kMaxHistoryChunk bytes, each an outbox entry
//    "h-<device>-<request seq>-<chunk>" of kind kHistory encrypted for the requesting device
//    alone (the others get ""). The outbox is durable and the server deduplicates by
//    client_msg_id: delivery is at-least-once, stored and replayed like any message.
//  - The receiver writes the entries into its `messages` table, idempotent on
//    (conversation, seq) (a row with a body is kept), arms the expiry of disappearing ones
//    and reports Events::on_history_received; they are not handed over as messages.
//
// Thread-safety: none; one owner, the Client's strand (Hooks::post brings Api callbacks
// back to it). The codec functions are pure.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "client/api.h"
#include "client/local_store.h"
#include "client/types.h"

namespace tern::client {

class SqliteStore;

// Kind bytes of the pairwise plaintext (beside e2e_session.cc's 0x01 application, 0x02
// sender-key distribution); only accepted in the user's own self conversation.
inline constexpr char kHistoryKind = 0x03;
inline constexpr char kHistoryRequestKind = 0x04;
// One chunk's payload: under the server's 64 KiB per entry (docs/protocol.md §9) with room
// for the Signal message around it. A message that alone does not fit is left out.
inline constexpr size_t kMaxHistoryChunk = 48 * 1024;
inline constexpr size_t kMaxHistoryEntries = 4096;  // per decoded payload

struct HistoryOptions {
  size_t per_conversation = 100;  // N: the last N messages of each conversation
  size_t conversations = 50;      // M: the most recently active conversations
};

// The codec: a JSON object {"v":1,"entries":[{"c","s","u","d","t","b"(base64),"r"?,"x"?,"j"?}]}.
// encode splits `entries` (in order) into payloads of at most max_chunk bytes.
std::vector<std::string> encode_history(const std::vector<Message>& entries, size_t max_chunk = kMaxHistoryChunk);
// Refuses (kMalformed / kTooLarge) anything but a well-formed payload of at most
// kMaxHistoryChunk bytes and kMaxHistoryEntries entries of encrypted conversations.
Result<std::vector<Message>> decode_history(std::string_view payload);

// The pairwise kind of an outbox entry, from its client_msg_id: kHistory for "h-…",
// kHistoryRequest for "hr-…", else 0x01 (an application body).
char history_kind(std::string_view client_msg_id);
// "h-<device>-…": the only device that gets the ciphertext.
std::optional<uint32_t> history_target(std::string_view client_msg_id);

class HistoryTransfer {
 public:
  struct Hooks {
    std::function<void(std::function<void()>)> post;  // runs fn on the owner's strand
    std::function<void(OutboxEntry)> enqueue;         // stores the entry in the outbox and sends it
    std::function<void(const Message&)> track_expiry; // a saved entry with expires_at
    std::function<void(size_t entries)> received;     // Events::on_history_received
  };
  HistoryTransfer(Credentials self, Api api, SqliteStore& store, HistoryOptions options, Hooks hooks);

  // Keys are published: asks for history once per store (see above).
  void on_start();
  // A pairwise plaintext of kind kHistory / kHistoryRequest opened from message `m` of the
  // self conversation (kind byte first).
  void on_control(const Message& m, std::string_view plain);
  // Writes history entries into the store; returns how many were new. Public for tests.
  Result<size_t> apply(std::string_view payload);

 private:
  void answer(const Message& request);

  Credentials self_;
  Api api_;
  SqliteStore& store_;
  HistoryOptions options_;
  Hooks hooks_;
};

}  // namespace tern::client
