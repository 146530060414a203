// Client: one device's live session with a Tern server, keeping the client's side of
// wire-v1's guarantees for the application:
//  - connects to /v1/ws with the device token and reconnects by itself after any drop,
//    with exponential backoff and full jitter (Options::reconnect); a refused token
//    (HTTP 401) stops it for good (state kStopped, error kUnauthorized), and so does a server
//    certificate that does not verify (kStopped, kInvalidArgument "tls: ...");
//  - send() stores the message in the outbox (memory or SQLite) before returning, sends it,
//    and completes when `sent` arrives, with its seq and ts. Everything unacknowledged is
//    re-sent with the same client_msg_id after every reconnect (the server deduplicates).
//    A `rate_limited` (or overloaded / draining) refusal pauses sending for a backoff
//    delay, then re-sends in order; other refusals fail that send (it leaves the outbox);
//  - receiving goes through the Receiver (receiver.h): repeats dropped by
//    (conversation, seq), holes filled by HTTP backfill, messages handed over in seq order
//    (so a reply after what it replies to), cumulative `ack` after the hand-over,
//    coalesced per conversation (Options::ack_delay_ms); with end-to-end encryption the
//    keyring is saved once before each ack flush, for everything decrypted since (keyring.h);
//  - receipts, typing and presence arrive as events; presence subscriptions are remembered
//    and renewed on every connection.
//
// Threading model: all of the Client's work runs on one strand of an io_context: its own
// (one thread, started by create()) or the application's. Every event and every callback
// is delivered on that strand, one at a time, so handlers need no locking among themselves
// but must not block (no waiting on futures, no disk or network I/O of their own). Public
// methods may be called from any thread, handlers included; they never block on the
// network (send() writes the outbox entry locally before it returns). stop() / destruction
// must happen outside the Client's own callbacks.
//
// Errors are values: Result / Error (base/error.h; transport failures are kOverloaded with a
// "network:" message, see errors.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/api.h"
#include "client/backoff.h"
#include "client/local_store.h"
#include "client/types.h"

namespace boost::asio {
class io_context;
}

namespace tern::client {

enum class ConnectionState {
  kConnecting,    // a connection attempt is under way
  kConnected,     // open; the server is replaying what we missed
  kSynced,        // replay done (`synced`); live from here
  kDisconnected,  // dropped; a reconnect is scheduled
  kStopped,       // stop() was called, the token was refused, or reconnect attempts ran out
};
const char* to_string(ConnectionState s);

struct Options {
  std::string server = "http://127.0.0.1:8080";  // https://: TLS, certificate verified (client/server_url.h)
  // https: a PEM file of CAs trusted besides OpenSSL's default ones (a private CA).
  std::string ca_file;
  Credentials credentials;
  // Outbox and cursors: empty = in memory; else a SQLite file (created 0600).
  std::string store_path;
  BackoffPolicy reconnect{250, 30'000, 0};  // between connection attempts
  BackoffPolicy send_retry{250, 10'000, 0}; // pause after a rate-limited / overloaded send
  ApiOptions api;                           // HTTP calls, backfill included
  size_t max_in_flight = 256;  // sends written and not yet `sent`; the rest wait in order
  size_t max_outbox = 10'000;  // send() fails with kOverloaded past this
  size_t backfill_page = 200;
  int64_t gap_grace_ms = 50;
  int64_t ack_delay_ms = 20;
  int64_t idle_timeout_ms = 30'000;  // WebSocket silence (pings at half of it) → reconnect
  bool receive = true;  // false: ignore incoming messages (no hand-over, no acks), e.g. a one-shot send
  // End-to-end encryption (e2e_session.h, docs/crypto.md) of direct and group conversations
  // (channels are never encrypted): on when the client has a store_path, unless `plaintext`.
  // The keys live in keyring_dir (default: store_path + ".keys"). A client without a
  // store_path cannot keep keys and sends plaintext.
  bool plaintext = false;
  std::string keyring_dir;
  // Protects the keyring with this passphrase (Argon2id; client/keyring.h) instead of its
  // 0600 key file. Must match the mode the keyring was created in.
  std::optional<std::string> keyring_passphrase;
  // History for a newly linked device (history_transfer.h, docs/crypto.md): what this device
  // sends when another device of the user asks: the last N messages of M conversations.
  size_t history_messages = 100;     // N (0: this device answers no history request)
  size_t history_conversations = 50; // M
};

// An incoming message this device could not decrypt: it is acknowledged (delivery goes on)
// and not handed over as a Message.
struct Undecryptable {
  std::string conversation_id;
  Seq seq = 0;
  std::string sender;
  uint32_t sender_device = 0;
  Error error;
};

struct Events {
  std::function<void(const Message&)> on_message;
  std::function<void(const Receipt&)> on_receipt;
  std::function<void(const Typing&)> on_typing;
  std::function<void(const Presence&)> on_presence;
  // State changes; `error` is why the connection dropped or stopped (nullptr otherwise).
  std::function<void(ConnectionState state, const Error* error)> on_state;
  // Every acknowledged send, including outbox entries left by an earlier process.
  std::function<void(const SendResult&)> on_sent;
  // A send the server refused for good (it has left the outbox).
  std::function<void(const std::string& client_msg_id, const Error&)> on_send_failed;
  // An `error` frame not tied to a pending send.
  std::function<void(const Error&)> on_error;
  // The device has fewer one-time prekeys than the server's threshold left (on the drop and on
  // every connect while low): upload more (Api::upload_keys with Keyring::upload_body).
  std::function<void(uint64_t count)> on_prekeys_low;
  // A message handed over earlier (with end-to-end encryption: or sent by this device)
  // reached its expires_at (disappearing messages): the application deletes it now, as the
  // SDK does from its history. At most kMaxExpiryTimers are tracked (the earliest).
  std::function<void(const std::string& conversation_id, Seq seq)> on_expired;
  // End-to-end encryption only.
  std::function<void(const Undecryptable&)> on_undecryptable;
  // A contact's device has another identity key than its session was built for (a
  // re-install, or someone in the middle): compare safety numbers (`tern verify`). Also kept
  // in the store until clear_identity_change().
  std::function<void(const std::string& user, uint32_t device)> on_identity_changed;
  // Another device of the user sent recent history (a newly linked device, end-to-end
  // encrypted): `entries` new messages are now in local_history() (not handed over).
  std::function<void(size_t entries)> on_history_received;
};

inline constexpr size_t kMaxExpiryTimers = 100'000;

struct SendOptions {
  std::optional<Seq> reply_to;
  std::optional<int64_t> ttl_seconds;
  std::string client_msg_id;  // empty: a random one
  std::vector<std::string> media;  // media ids the message names (attachments, issue 11)
};

struct ClientStats {
  uint64_t connects = 0;       // successful upgrades
  uint64_t disconnects = 0;
  uint64_t sends_acked = 0;
  uint64_t resends = 0;        // outbox entries written again after a reconnect or pause
  uint64_t delivered = 0;      // messages handed to the application
  uint64_t duplicates = 0;
  uint64_t backfills = 0;
  uint64_t gaps_accepted = 0;
  uint64_t acks_sent = 0;
  // End-to-end: keyring saves made for received messages and sends: one per send, one per
  // ack flush and per history page when the keys changed (keyring.h, "Saves are batched").
  uint64_t keyring_saves = 0;
};

class Client {
 public:
  // Opens the store (SQLite when Options::store_path is set) and, in the first form, starts
  // an io thread of its own. Nothing connects before start().
  static Result<std::unique_ptr<Client>> create(Options options, Events events);
  static Result<std::unique_ptr<Client>> create(boost::asio::io_context& ioc, Options options, Events events);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void start();
  // Closes the connection, cancels timers and, with its own thread, joins it. Pending send
  // callbacks complete with kDraining (the messages stay in a SQLite outbox for the next
  // run). No event is delivered after stop() returns.
  void stop();

  // Queues `body` (raw bytes; base64 on the wire) for conversation_id. Returns the
  // client_msg_id once the message is in the outbox; `done` (optional) completes on `sent`
  // or on a permanent refusal.
  Result<std::string> send(const std::string& conversation_id, std::string body, SendOptions options = {},
                           Callback<SendResult> done = {});
  // `read` receipt up to seq (cumulative). Kept and sent on connect if offline.
  void mark_read(const std::string& conversation_id, Seq seq);
  // Fire-and-forget; dropped while offline.
  void set_typing(const std::string& conversation_id, bool active);
  // Adds users to the presence subscription (at most 1024 remembered).
  void subscribe_presence(const std::vector<std::string>& users);
  // Drops the current connection and reconnects at once (e.g. the network changed).
  void reconnect_now();

  // HTTP calls with this device's token; callbacks on the io thread.
  const Api& api() const;
  const Credentials& credentials() const;
  ConnectionState state() const;
  ClientStats stats() const;
  size_t outbox_size() const;

  // End-to-end encryption is on (see Options::plaintext).
  bool encrypts() const;
  // The device's own history from its store (decrypted; docs/crypto.md): messages of the
  // conversation with seq > after, increasing, at most `limit`. Needs a store_path.
  Result<std::vector<Message>> local_history(const std::string& conversation_id, Seq after, size_t limit) const;
  // A backfill page (Api::history) as this device reads it: with end-to-end encryption each
  // message decrypted (or taken from the store: own sends, messages opened before), the
  // rest marked `undecryptable`; unchanged otherwise. Works without start(). `done` runs on
  // the Client's strand.
  void open_page(HistoryPage page, Callback<HistoryPage> done);
  // Contacts whose identity key changed since they were last verified; clearing is `tern verify`'s.
  Result<std::vector<std::string>> identity_changes() const;
  Result<void> clear_identity_change(const std::string& user) const;

  struct Impl;

 private:
  Client() = default;
  std::unique_ptr<class IoThread> own_thread_;  // declared first: destroyed last
  std::shared_ptr<Impl> impl_;
  bool stop_called_ = false;
};

}  // namespace tern::client
