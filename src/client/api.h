// The HTTP side of wire-v1 as asynchronous calls: registration, device linking, conversations
// and membership, history (backfill). Every call completes exactly once, with a value or an
// Error, on a thread running the given io_context; calls may be made from any thread.
//
// Rate limits: a 429 answer is retried after an exponential backoff with full jitter (the
// `retry` policy); a GET is also retried on 503 and on transport failures. Other errors
// are returned at once.
//
// Device linking (an addition to wire-v1, implemented by ternd):
//   POST /v1/devices/link-codes   (auth)    {}  → 201 {"code":"XXXX-XXXX","expires_at":ms}
//        a one-time code for the caller's user, valid 10 minutes, single use.
//   POST /v1/devices/link         (no auth) {"user":"alice","code":"XXXX-XXXX"}
//        → 201 {"user":"alice","device":N,"token":"…"}; errors as JSON errors:
//        404 unknown user or code, 410 expired or already used, 429 too many attempts.
//
// Ownership: Api is a cheap handle (shared state); copies talk to the same server with the
// same token. The io_context must outlive every call in flight.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "client/backoff.h"
#include "client/server_url.h"
#include "client/types.h"

namespace boost::asio {
class io_context;
}

namespace tern::client {

// A link code as a person types it, in the form the server issued it ("XXXX-XXXX"):
// upper-cased, spaces and dashes ignored. An error (no attempt used) when it cannot be a
// code: not 8 characters of A-Z / 2-9 without the look-alikes 0, O, 1 and I.
Result<std::string> normalize_link_code(std::string_view typed);

struct ApiOptions {
  int64_t timeout_ms = 10'000;            // per attempt
  BackoffPolicy retry{200, 5'000, 6};     // for 429 (and 503 / network on GET)
};

class Api {
 public:
  Api(boost::asio::io_context& ioc, ServerUrl url, std::string token = {}, ApiOptions options = {});
  ~Api();
  Api(const Api&);
  Api& operator=(const Api&);

  const ServerUrl& url() const;

  // Unauthenticated.
  void register_user(const std::string& user, Callback<Credentials> cb) const;          // POST /v1/users
  // `code` goes through normalize_link_code() first (a malformed one fails at once).
  void link_device(const std::string& user, const std::string& code, Callback<Credentials> cb) const;
  void healthz(Callback<void> cb) const;

  // Authenticated with the token.
  void create_link_code(Callback<LinkCode> cb) const;
  void add_device(Callback<Credentials> cb) const;                                     // POST /v1/devices
  void create_direct(const std::string& user, Callback<std::string> cb) const;         // → conversation id
  void create_self(Callback<std::string> cb) const;  // the caller's own "s-…" conversation (protocol.md §3.6a)
  void create_group(const std::string& name, const std::vector<std::string>& members,
                    Callback<std::string> cb) const;
  void add_members(const std::string& conversation_id, const std::vector<std::string>& users,
                   Callback<std::vector<std::string>> cb) const;                       // → members
  void remove_members(const std::string& conversation_id, const std::vector<std::string>& users,
                      Callback<std::vector<std::string>> cb) const;
  void conversations(Callback<std::vector<ConversationInfo>> cb) const;
  // GET /v1/conversations/{id}: one conversation the caller is in (for a channel: owner,
  // admins, subscribers, head and the views of the last posts).
  void conversation_info(const std::string& conversation_id, Callback<ConversationInfo> cb) const;

  // Channels (issue 9; docs/protocol.md): one owner, admins post, subscribers read.
  // A public channel is joined by id; a private one only through an admin's
  // change_subscribers(). The creator is the owner.
  void create_channel(const std::string& name, bool is_public, Callback<std::string> cb) const;  // → "ch-…"
  void join_channel(const std::string& conversation_id, Callback<JoinResult> cb) const;
  void leave_channel(const std::string& conversation_id, Callback<void> cb) const;        // the owner cannot
  // By an admin; → the number of subscribers after the change.
  void change_subscribers(const std::string& conversation_id, const std::vector<std::string>& add,
                          const std::vector<std::string>& remove, Callback<uint64_t> cb) const;
  // By the owner; → the admins after the change.
  void change_admins(const std::string& conversation_id, const std::vector<std::string>& add,
                     const std::vector<std::string>& remove, Callback<std::vector<std::string>> cb) const;
  // Messages with seq > after_seq, increasing, at most `limit` (the server caps it).
  void history(const std::string& conversation_id, Seq after_seq, size_t limit, Callback<HistoryPage> cb) const;

  // The key directory (docs/protocol.md §14). `body` of upload_keys: Keyring::upload_body().
  // Both answer the device's remaining one-time prekey count.
  void upload_keys(const std::string& body, Callback<size_t> cb) const;                 // PUT /v1/keys
  void key_count(Callback<size_t> cb) const;                                           // GET /v1/keys
  // The bundle answer as JSON, for parse_bundles() (keyring.h); device 0: all the user's devices.
  void key_bundles(const std::string& user, uint32_t device, Callback<std::string> cb) const;
  // GET /v1/users/{user}/devices: every device, with its registration id (0: no keys uploaded).
  void user_devices(const std::string& user, Callback<std::vector<UserDevice>> cb) const;

 struct State;  // implementation detail (api.cc)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace tern::client
