// The store contract: everything Tern keeps durably, shaped like a wide-column model so that
// any backend (embedded RocksDB, Redis) can carry it:
//   accounts      user → devices; token hash → device; last_seen
//   conversations conversation → meta + members (joined/left seq, admin); a channel lists only
//                 its owner and admins, and keeps its subscriber count in the meta
//   user index    user → conversations (with joined/left seq); for a channel, its subscribers
//   message log   partition = conversation, clustering = seq; value = the stored frame
//   cursors       device × conversation → last acked seq
//   inbox index   device × conversation → latest seq with news (fan-out-on-write)
//   receipts      conversation × user → delivered seq, read seq
//   idempotency   device × client_msg_id → (conversation, seq, ts) until expiry
//   device keys   device → identity key, registration id, signed prekey (+ the previous one)
//   prekeys       device × prekey id → one-time prekey public key
//   user records  user × name → small value (blocks, settings, push tokens, account flags)
//   reports       increasing id → opaque report (abuse reports for the operator)
//
// Reads are direct calls. Every write goes through a Batch that commit() applies atomically
// (all or nothing) and, with sync, durably before it returns: the group-commit writer in
// services puts many sends into one Batch so one fsync covers them all.
//
// Writes are blind: no op reads the store. Where a value must only grow (cursor, receipt
// marks, inbox mark), the caller keeps it growing: each conversation's state is owned by one
// event loop, which knows the current value and submits in order (see services/sequencer.h).
// Within one Batch, ops apply in order and a later op on the same key wins. PutConversation
// and PutDevice are the exceptions that read (the previous member list or token hash) — they
// are rare (membership changes, device links), never on the message path.
//
// Thread-safety: every method may be called from any thread; commit() calls are serialized
// by the caller (one writer thread). Ownership: the server's composition root owns the
// Store; everyone else borrows it. User and conversation ids never contain '\0' (wire-v1 ids
// can't); a backend may refuse a batch holding one (kInvalidArgument, nothing written).
#pragma once
#include <cstdint>
#include <optional>
#include <type_traits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "base/ids.h"
#include "base/result.h"

namespace tern::store {

struct Member {
  std::string user;
  Seq joined_seq = 0;  // first seq this member may see (its "added" system message)
  Seq left_seq = 0;    // 0 while a member; else the seq of its removal message (last it sees)
  bool admin = false;
  bool active() const { return left_seq == 0; }
  friend bool operator==(const Member&, const Member&) = default;
};

enum class ConvType { kDirect, kGroup, kChannel };

struct Conversation {
  std::string id;
  ConvType type = ConvType::kDirect;
  std::string name;
  int64_t created_ts = 0;
  std::vector<Member> members;  // current and former members (left_seq != 0); a channel: owner + admins
  // Fan-out on read: no per-device inbox marks; a device compares the head with its cursor
  // (channels always; groups at or above --fanout-read-threshold members). Copied into every
  // member's user-index row, so a connecting device finds its read-side conversations there.
  bool fanout_on_read = false;
  bool is_public = false;    // channel: anyone may join by id
  uint64_t subscribers = 0;  // channel: subscriber count (owner and admins included)
  int64_t disappear_seconds = 0;  // the disappearing-messages timer; 0 = off (issue 11)
  friend bool operator==(const Conversation&, const Conversation&) = default;
};

// One row of a user's conversation index.
struct UserConversation {
  std::string conversation_id;
  Seq joined_seq = 0;
  Seq left_seq = 0;
  bool fanout_on_read = false;  // the conversation's flag when this row was written
};

struct IdempotencyRecord {
  std::string conversation_id;
  Seq seq = 0;
  int64_t ts = 0;
  int64_t expires_at = 0;  // ms; ignored (treated as absent) after this
};

struct ReceiptState {
  std::string user;
  Seq delivered = 0;
  Seq read = 0;
};

struct StoredMessage {
  Seq seq = 0;
  std::string frame;  // the `message` frame as stored (see proto::encode_message)
};

// ---- write operations (one Batch holds any mix) ----
struct PutUser { std::string user; int64_t created_ts = 0; };
// Writes the device and its token hash → device mapping; a new hash for an existing device
// revokes the previous one (find_token no longer finds it). An empty hash maps nothing.
// must_be_new (a registration, a device link): if the device is already stored, the whole
// batch is refused with `exists` and nothing is written — two nodes that picked the same
// device number (or user name) at the same moment: the later one must not replace the
// earlier one's token (docs/scaling.md).
struct PutDevice {
  DeviceRef device;
  std::string token_hash;
  bool must_be_new = false;
};
// Replaces meta + members and writes the user-index row (joined/left seq) of every listed
// member; a user dropped from the list entirely loses its row. Former members stay listed
// with left_seq != 0 (their rows show it).
// `expected` (a channel's change, which takes no seq to be checked by): the record the change
// was computed from. If the stored record is another (a node that also took itself for the
// channel's sequencing node changed it first: docs/scaling.md, "Channels across nodes"), the
// whole batch is refused with `exists` and nothing is written; the caller reads the record
// again and makes its change anew. Earlier ops of the batch count: a second change of the
// channel in one batch expects the first one's record.
struct PutConversation {
  PutConversation() = default;
  PutConversation(Conversation conversation_, std::optional<Conversation> expected_ = std::nullopt)  // NOLINT: implicit
      : conversation(std::move(conversation_)), expected(std::move(expected_)) {}
  Conversation conversation;
  std::optional<Conversation> expected;
};
// expires_at (ms, 0 = never) and media (the ids the message names, issue 11) are indexed with
// it: the message → media references (who may fetch what), and the expiry index.
struct AppendMessage {
  AppendMessage() = default;
  AppendMessage(std::string conversation_id_, Seq seq_, std::string frame_, int64_t expires_at_ = 0,
                std::vector<std::string> media_ = {})
      : conversation_id(std::move(conversation_id_)), seq(seq_), frame(std::move(frame_)),
        expires_at(expires_at_), media(std::move(media_)) {}
  std::string conversation_id;
  Seq seq = 0;
  std::string frame;
  int64_t expires_at = 0;
  std::vector<std::string> media;
};
struct PutIdempotency { DeviceRef device; std::string client_msg_id; IdempotencyRecord record; };
struct SetCursor { DeviceRef device; std::string conversation_id; Seq seq = 0; };  // blind put
struct SetReceipt { std::string conversation_id; std::string user; Seq delivered = 0; Seq read = 0; };  // blind put
// The device has news in the conversation up to `seq` (fan-out on write). Blind put.
struct InboxMark { DeviceRef device; std::string conversation_id; Seq seq = 0; };
// The device caught up with the conversation: its inbox entry goes. Blind delete.
struct InboxDelete { DeviceRef device; std::string conversation_id; };
struct SetLastSeen { std::string user; int64_t ts = 0; };
// A small named record of a user; the services name them (services/user_records.h). Blind.
struct PutUserRecord { std::string user; std::string name; std::string value; };
struct DeleteUserRecord { std::string user; std::string name; };
// An abuse report, opaque to the store, under an id the caller makes increasing. Blind put.
struct PutReport { uint64_t id = 0; std::string value; };

// One user-index row, blind: a channel subscription (channels list only their admins).
struct PutSubscription { std::string user; UserConversation row; };
struct DeleteSubscription { std::string user; std::string conversation_id; };

// ---- the key directory (end-to-end encryption; the server only stores public keys) ----
struct SignedPrekey {
  uint32_t id = 0;
  std::string public_key;  // 33 bytes: 0x05 ‖ X25519 u
  std::string signature;   // 64 bytes: XEdDSA by the identity key over public_key
  friend bool operator==(const SignedPrekey&, const SignedPrekey&) = default;
};
struct DeviceKeys {
  std::string identity_key;  // 33 bytes: 0x05 ‖ X25519 u
  uint32_t registration_id = 0;
  SignedPrekey signed_prekey;
  // The signed prekey replaced by the last rotation, kept until previous_replaced_at + grace.
  std::optional<SignedPrekey> previous_signed_prekey;
  int64_t previous_replaced_at = 0;  // ms
  friend bool operator==(const DeviceKeys&, const DeviceKeys&) = default;
};
struct OneTimePrekey {
  uint32_t id = 0;
  std::string public_key;  // 33 bytes
  friend bool operator==(const OneTimePrekey&, const OneTimePrekey&) = default;
};
struct PutDeviceKeys { DeviceRef device; DeviceKeys keys; };         // blind put
struct PutOneTimePrekey { DeviceRef device; OneTimePrekey key; };    // blind put (same id: replaced)
// Blind delete, unless `take` (a bundle handing the key out): then a store shared by several
// nodes (Redis) refuses the whole batch with kUnavailable, writing nothing, if the key was
// gone before the batch (another node handed it out). A single-node store ignores `take`:
// KeyDirectory's in-process marks already serialize the takes of one device there.
struct DeleteOneTimePrekey { DeviceRef device; uint32_t id = 0; bool take = false; };

// ---- media and expiry (issue 11) ----
// An uploaded blob, owned by `owner` (the uploader); also indexed as pending (never sent)
// under created_ts until the garbage collector looks at it.
struct PutMedia { std::string id; std::string owner; uint64_t size = 0; int64_t created_ts = 0; };
// The owner's row of the blob goes (the blob itself is the blob store's).
struct DeleteMedia { std::string id; std::string owner; };
struct DropPendingMedia { std::string id; std::string owner; int64_t created_ts = 0; };
// An expired message was erased: its expiry-index row and its media references go.
struct MessageExpired { std::string conversation_id; Seq seq = 0; int64_t expires_at = 0; std::vector<std::string> media; };

using Op = std::variant<PutUser, PutDevice, PutConversation, AppendMessage, PutIdempotency, SetCursor,
                        SetReceipt, InboxMark, InboxDelete, SetLastSeen, PutSubscription, DeleteSubscription,
                        PutDeviceKeys, PutOneTimePrekey, DeleteOneTimePrekey, PutMedia, DeleteMedia,
                        DropPendingMedia, MessageExpired, PutUserRecord, DeleteUserRecord, PutReport>;

struct MediaOwner { std::string user; uint64_t size = 0; int64_t created_ts = 0; };
// A message naming a blob: (conversation, seq), and when that message expires (0 = never).
struct MediaRef { std::string conversation_id; Seq seq = 0; int64_t expires_at = 0; };
struct PendingMedia { std::string id; std::string owner; int64_t created_ts = 0; };
struct ExpiringMessage { std::string conversation_id; Seq seq = 0; int64_t expires_at = 0; std::vector<std::string> media; };

struct Batch {
  std::vector<Op> ops;
  void add(Op op) { ops.push_back(std::move(op)); }
  bool empty() const { return ops.empty(); }
};

class Store {
 public:
  virtual ~Store() = default;

  // Applies every op of the batch atomically; with sync, durable when it returns.
  virtual Result<void> commit(const Batch& batch, bool sync) = 0;
  // A shared store with dense appends (several ternd nodes on Redis, docs/scaling.md): when
  // the last commit() failed because some AppendMessage was not its conversation's next seq
  // (another node appended first), the ids of those conversations, and whether the batch's
  // other ops were applied (a Redis Cluster commits slot by slot) or nothing was (one
  // redis-server). Empty after any other outcome. Only the commit()ing thread calls it.
  struct Behind {
    std::vector<std::string> conversations;
    bool rest_applied = false;
  };
  virtual Behind behind() const { return {}; }
  // True when commit() itself refuses a PutIdempotency whose client_msg_id already has an
  // unexpired record (Redis with dense appends): the commit then writes nothing of that
  // conversation and names it in behind(), so a writer may skip its send_idempotency() read
  // before a first attempt and read it only when the commit was refused (docs/scaling.md).
  virtual bool commit_checks_idempotency() const { return false; }
  // True when a change of a conversation from an expected record (PutConversation::expected)
  // may be left half made by a writer that died, and is finished by the conversation's next
  // such change (a Redis Cluster: the change's rows in other slots are written first, the
  // record after; redis_change_lease.h). A change found already made (a join of a user already
  // subscribed: the dead writer's row) is then committed anyway, the record unchanged, so that
  // a half-made change is finished before it is answered (Channels::settle).
  virtual bool finishes_changes_later() const { return false; }
  // Flushes everything written so far to stable storage (used at shutdown).
  virtual Result<void> flush() = 0;

  // accounts
  virtual Result<bool> user_exists(const std::string& user) = 0;
  virtual Result<std::vector<uint32_t>> devices(const std::string& user) = 0;
  // devices() of each user, in order, in one call: a store over the network answers them all
  // in one round trip (a group conversation's warm-up reads every member's list). The default
  // asks one by one.
  virtual Result<std::vector<std::vector<uint32_t>>> devices_of(const std::vector<std::string>& users) {
    return one_by_one(users, [this](const std::string& u) { return devices(u); });
  }
  virtual Result<std::optional<DeviceRef>> find_token(const std::string& token_hash) = 0;
  virtual Result<int64_t> last_seen(const std::string& user) = 0;  // 0 if never

  // conversations
  virtual Result<std::optional<Conversation>> conversation(const std::string& id) = 0;
  // conversation() of each id, in order, in one call (as devices_of): a device's connect
  // reads the snapshots of its inbox's conversations a cache does not hold.
  virtual Result<std::vector<std::optional<Conversation>>> conversations_of(const std::vector<std::string>& ids) {
    return one_by_one(ids, [this](const std::string& id) { return conversation(id); });
  }
  virtual Result<std::vector<UserConversation>> user_conversations(const std::string& user) = 0;
  // One row of the user index (a point read: is this user in that conversation or channel).
  virtual Result<std::optional<UserConversation>> user_conversation(const std::string& user,
                                                                    const std::string& conversation_id) = 0;

  // message log: seq > after_seq, increasing, at most limit
  virtual Result<std::vector<StoredMessage>> read_messages(const std::string& conversation_id, Seq after_seq,
                                                           size_t limit) = 0;
  virtual Result<Seq> head(const std::string& conversation_id) = 0;  // 0 if empty

  // per-device state
  virtual Result<Seq> cursor(const DeviceRef& device, const std::string& conversation_id) = 0;  // 0 if none
  // cursor() of the device in each conversation, in order, in one call: a connect reads the
  // cursors of all its inbox's conversations (one round trip on Redis, where a device's
  // cursors are one hash). The default asks one by one.
  virtual Result<std::vector<Seq>> cursors(const DeviceRef& device, const std::vector<std::string>& conversation_ids) {
    return one_by_one(conversation_ids, [this, &device](const std::string& id) { return cursor(device, id); });
  }
  // conversations with news for a device: (conversation_id, latest seq marked)
  virtual Result<std::vector<std::pair<std::string, Seq>>> inbox(const DeviceRef& device) = 0;
  virtual Result<std::optional<IdempotencyRecord>> idempotency(const DeviceRef& device,
                                                               const std::string& client_msg_id,
                                                               int64_t now_ms) = 0;
  // The record a send into `conversation_id` is answered with when its client_msg_id was
  // seen before (the sender's retry path): the device's record of that id, whatever its
  // conversation, as idempotency() (the default). The conversation is a hint for a store that
  // keeps records by conversation (a Redis Cluster: in the conversation's slot, one read
  // where idempotency() needs two).
  virtual Result<std::optional<IdempotencyRecord>> send_idempotency(const DeviceRef& device,
                                                                    const std::string& client_msg_id,
                                                                    const std::string& conversation_id,
                                                                    int64_t now_ms) {
    (void)conversation_id;
    return idempotency(device, client_msg_id, now_ms);
  }
  virtual Result<std::vector<ReceiptState>> receipts(const std::string& conversation_id) = 0;
  // receipts() of each conversation, in order, in one call: a reconnect re-sends the receipt
  // state of the user's conversations a batch at a time. The default asks one by one.
  virtual Result<std::vector<std::vector<ReceiptState>>> receipts_of(const std::vector<std::string>& conversation_ids) {
    return one_by_one(conversation_ids, [this](const std::string& id) { return receipts(id); });
  }

  // Drops idempotency records that expired before now_ms; returns how many.
  virtual Result<size_t> purge_expired(int64_t now_ms) = 0;

  // key directory
  virtual Result<std::optional<DeviceKeys>> device_keys(const DeviceRef& device) = 0;
  // device_keys() of each device, in order, in one call (as devices_of).
  virtual Result<std::vector<std::optional<DeviceKeys>>> device_keys_of(const std::vector<DeviceRef>& devices) {
    return one_by_one(devices, [this](const DeviceRef& d) { return device_keys(d); });
  }
  // The device's one-time prekeys in increasing id, at most `limit`.
  virtual Result<std::vector<OneTimePrekey>> one_time_prekeys(const DeviceRef& device, size_t limit) = 0;
  // ---- media and expiry (issue 11); every read is a bounded index range ----
  virtual Result<std::vector<MediaOwner>> media_owners(const std::string& id) = 0;
  // The blobs `user` uploaded: (id, size), at most limit.
  virtual Result<std::vector<std::pair<std::string, uint64_t>>> user_media(const std::string& user, size_t limit) = 0;
  virtual Result<std::vector<MediaRef>> media_refs(const std::string& id, size_t limit) = 0;
  // Uploads created before before_ms that the collector has not looked at yet, oldest first.
  virtual Result<std::vector<PendingMedia>> pending_media(int64_t before_ms, size_t limit) = 0;
  // Messages whose expires_at <= now_ms still in the expiry index, earliest first.
  virtual Result<std::vector<ExpiringMessage>> expiring_messages(int64_t now_ms, size_t limit) = 0;
  // Erases the payload of these (expired) messages from stable storage: afterwards the log
  // holds only their tombstone (proto::render_expired) and no file of the store holds the
  // old bytes. Call before committing their MessageExpired ops.
  virtual Result<void> erase_expired(const std::vector<ExpiringMessage>& messages) = 0;
  // user records and reports (admin, safety, presence settings, push)
  virtual Result<std::optional<std::string>> user_record(const std::string& user, const std::string& name) = 0;
  // The user's records whose name starts with `prefix`, by name, at most limit.
  virtual Result<std::vector<std::pair<std::string, std::string>>> user_records(const std::string& user,
                                                                               const std::string& prefix,
                                                                               size_t limit) = 0;
  // Registered users after `after` (by id), at most limit. An admin listing, not a hot path.
  virtual Result<std::vector<std::string>> users(const std::string& after, size_t limit) = 0;
  // Reports with id > after_id, increasing, at most limit; and the highest id (0 if none).
  virtual Result<std::vector<std::pair<uint64_t, std::string>>> reports(uint64_t after_id, size_t limit) = 0;
  virtual Result<uint64_t> last_report_id() = 0;

  // ---- shared rate limits ----
  // Takes `n` tokens from the token bucket `key` (refilled at rate_per_sec, holding at most
  // burst; full when first used) if it has them: true if taken. The bucket is shared by
  // every node on this store, so a client's budget does not grow with the nodes behind a
  // load balancer. nullopt: this store keeps no shared buckets (an embedded store serves one
  // node): the caller's own bucket decides. Any thread; Redis reads its own clock.
  virtual Result<std::optional<bool>> take_tokens(const std::string& key, double rate_per_sec, double burst, double n) {
    (void)key, (void)rate_per_sec, (void)burst, (void)n;
    return std::optional<bool>{};
  }

  // ---- report ids shared by the nodes (services/safety_api.h) ----
  // The id for a new abuse report, handed out once: a store that nodes share counts them for
  // all (above every report stored before the counter existed), so two nodes never write one
  // id and a report never replaces another. An id whose report then fails to commit is never
  // used. nullopt: this store keeps no counter (an embedded store serves one node, which
  // counts from last_report_id()). Any thread.
  virtual Result<std::optional<uint64_t>> next_report_id() { return std::optional<uint64_t>{}; }

  // ---- link codes shared by the nodes (services/accounts.h) ----
  // A code is shown through one node and entered on the new device, which a load balancer
  // may send to any other: a store that nodes share keeps the user's outstanding codes, by
  // hash (`code_hash`, never the code), each until ttl_ms after it was added, by the store's
  // own clock (so the nodes' clocks do not matter).
  // add_link_code: adds the code unless the user holds max_per_user unexpired codes; answers
  // its expiry (ms since the epoch, the store's clock), or 0 when the user's codes are full.
  // take_link_code: removes the code if held and unexpired: true if it was (single use: of
  // two nodes taking the same code at once, one gets true).
  // nullopt from either: this store keeps no codes (an embedded store serves one node, which
  // keeps them in memory). Any thread.
  virtual Result<std::optional<int64_t>> add_link_code(const std::string& user, const std::string& code_hash,
                                                       int64_t ttl_ms, size_t max_per_user) {
    (void)user, (void)code_hash, (void)ttl_ms, (void)max_per_user;
    return std::optional<int64_t>{};
  }
  virtual Result<std::optional<bool>> take_link_code(const std::string& user, const std::string& code_hash) {
    (void)user, (void)code_hash;
    return std::optional<bool>{};
  }

  // ---- media marks shared by the nodes (services/media_leases.h) ----
  // A node's MediaLeases keep its sweep off a blob that one of its sends names (a lease, from
  // the send's access check until its commit), and its sends off a blob its sweep is
  // collecting. With several nodes on one store, every node must see both marks: a store that
  // nodes share keeps them here, each expiring ttl_ms after it was taken, so a node that dies
  // holding one blocks no one for longer.
  //   kLease: many holders at once; refused (false) while the blob is being collected.
  //   kCollect: one holder; refused (false) while a lease that has not expired is held, or
  //   another holder collects.
  // true: taken. nullopt: this store keeps no marks (an embedded store serves one node, whose
  // own marks decide). Any thread; Redis reads its own clock.
  enum class MediaMark { kLease, kCollect };
  virtual Result<std::optional<bool>> mark_media(const std::string& id, MediaMark kind, const std::string& holder,
                                                 int64_t ttl_ms) {
    (void)id, (void)kind, (void)holder, (void)ttl_ms;
    return std::optional<bool>{};
  }
  // Drops the mark `holder` took on `id` (nothing if it expired, or another holder's replaced it).
  virtual Result<void> unmark_media(const std::string& id, MediaMark kind, const std::string& holder) {
    (void)id, (void)kind, (void)holder;
    return {};
  }

 protected:
  // The defaults of the batched reads above (devices_of, conversations_of, cursors,
  // receipts_of, device_keys_of): read(x) for each x, in order; the first error ends it.
  template <typename In, typename Read>
  static auto one_by_one(const std::vector<In>& in, Read read)
      -> Result<std::vector<std::decay_t<decltype(read(in.front()).value())>>> {
    std::vector<std::decay_t<decltype(read(in.front()).value())>> out;
    out.reserve(in.size());
    for (const auto& x : in) {
      auto r = read(x);
      if (!r) return r.error();
      out.push_back(std::move(*r));
    }
    return out;
  }
};

}  // namespace tern::store
