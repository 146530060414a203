// Key and value encodings of the RocksDB store: pure functions over bytes, thread-safe.
//
// Keys are ordered byte strings built so that one prefix (or one seek) answers each read:
//   accounts       user \0 'u'                      → be64 created_ts          (user exists)
//                  user \0 'd' be32 device          → token_hash               (devices of a user)
//                  user \0 's'                      → be64 last_seen
//                  user \0 'r' name                 → value            (user records)
//   tokens         token_hash                       → be32 device, user
//   conversations  conversation_id                  → encode_conversation()
//   user_index     user \0 conversation_id          → be64 joined, be64 left [, 0x01 fan-out on read]
//   messages       conversation_id \0 be64 seq      → frame bytes
//   cursors        user \0 be32 device conversation_id → be64 seq
//   inbox          user \0 be32 device conversation_id → be64 seq
//   receipts       conversation_id \0 user          → be64 delivered, be64 read
//   idempotency    user \0 be32 device client_msg_id   → encode_idempotency()
//   idem_expiry    be64 biased(expires_at) <idempotency key> → empty
//   device_keys    user \0 be32 device                → encode_device_keys()
//   prekeys        user \0 be32 device be32 prekey id → public key bytes
//   media          'o' user \0 media_id            → be64 size, be64 biased(created)  (a user's uploads)
//                  'i' media_id user                → be64 size, be64 biased(created)  (owners of a blob)
//                  'p' be64 biased(created) media_id user → empty                    (not yet collected)
//                  'r' media_id conversation_id \0 be64 seq → be64 biased(expires_at) or 0 (references)
//   msg_expiry     be64 biased(expires_at) conversation_id \0 be64 seq → media ids, 64 bytes each
//   (media ids are 64 hex characters: fixed width, no terminator needed)
//   reports        be64 id                          → value
//
// Big-endian fixed-width numbers sort like the numbers, so a conversation's log iterates in
// seq order and its head is the last key under its prefix. The \0 after a variable-length id
// ends it unambiguously because user and conversation ids never contain \0 (has_nul() is
// checked at the store boundary); whatever follows the \0 is fixed-width or the last field.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/ids.h"
#include "store/store.h"

namespace tern::store::rocks {

inline bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

void put_be32(std::string& out, uint32_t v);
void put_be64(std::string& out, uint64_t v);
uint32_t get_be32(const char* p);
uint64_t get_be64(const char* p);

// Signed times sort correctly as unsigned once the sign bit is flipped.
inline uint64_t bias_i64(int64_t v) { return static_cast<uint64_t>(v) ^ (uint64_t{1} << 63); }
inline int64_t unbias_i64(uint64_t v) { return static_cast<int64_t>(v ^ (uint64_t{1} << 63)); }

// Every key builder clears `out` first, so callers reuse one buffer per key kind.
void account_user_key(std::string& out, std::string_view user);
void account_device_key(std::string& out, std::string_view user, uint32_t device);
void account_device_prefix(std::string& out, std::string_view user);
void account_last_seen_key(std::string& out, std::string_view user);
void account_record_key(std::string& out, std::string_view user, std::string_view name);  // name "" = prefix
// The user of an accounts key whose tag is 'u' (a registered user), or nullopt.
std::optional<std::string_view> user_of_user_key(std::string_view key);
void message_prefix(std::string& out, std::string_view conversation_id);
void message_key(std::string& out, std::string_view conversation_id, Seq seq);
void user_index_prefix(std::string& out, std::string_view user);
void user_index_key(std::string& out, std::string_view user, std::string_view conversation_id);
void receipt_prefix(std::string& out, std::string_view conversation_id);
void receipt_key(std::string& out, std::string_view conversation_id, std::string_view user);
// Per-device keys (cursors, inbox, idempotency): user \0 be32 device, then `tail`.
void device_prefix(std::string& out, const DeviceRef& device);
void device_key(std::string& out, const DeviceRef& device, std::string_view tail);
void expiry_prefix(std::string& out, int64_t expires_at);
void expiry_key(std::string& out, int64_t expires_at, std::string_view primary_key);

// ---- media and message expiry (issue 11) ----
void media_owner_key(std::string& out, std::string_view user, std::string_view id);
void media_owner_prefix(std::string& out, std::string_view user);
void media_id_key(std::string& out, std::string_view id, std::string_view user);
void media_id_prefix(std::string& out, std::string_view id);
void media_pending_key(std::string& out, int64_t created_ts, std::string_view id, std::string_view user);
void media_ref_key(std::string& out, std::string_view id, std::string_view conversation_id, Seq seq);
void media_ref_prefix(std::string& out, std::string_view id);
void msg_expiry_key(std::string& out, int64_t expires_at, std::string_view conversation_id, Seq seq);
// The (conversation, seq) after the expiry prefix of a msg_expiry key; false if malformed.
bool parse_msg_expiry_key(std::string_view key, int64_t& expires_at, std::string& conversation_id, Seq& seq);

// The smallest key greater than every key starting with `prefix` (an iterator upper bound).
// Empty when no such key exists (prefix all 0xff): iterate unbounded then.
std::string prefix_successor(std::string_view prefix);

// ---- values ----
std::string encode_u64(uint64_t v);
std::optional<uint64_t> decode_u64(std::string_view v);
std::string encode_u64_pair(uint64_t a, uint64_t b);
std::optional<std::pair<uint64_t, uint64_t>> decode_u64_pair(std::string_view v);

// User-index row: be64 joined, be64 left, then 0x01 if the conversation fans out on read.
std::string encode_user_row(const UserConversation& row);
std::optional<UserConversation> decode_user_row(std::string_view conversation_id, std::string_view v);

std::string encode_token_value(const DeviceRef& device);
std::optional<DeviceRef> decode_token_value(std::string_view v);

void encode_idempotency(std::string& out, const IdempotencyRecord& record);
std::optional<IdempotencyRecord> decode_idempotency(std::string_view v);

// Conversation: version byte, then length-prefixed fields; decode rejects anything malformed
// (truncated, trailing bytes, unknown version or type) instead of guessing.
void encode_conversation(std::string& out, const Conversation& conversation);
std::optional<Conversation> decode_conversation(std::string_view v);

// Device keys: version byte, then length-prefixed fields (same rules as the conversation).
void encode_device_keys(std::string& out, const DeviceKeys& keys);
std::optional<DeviceKeys> decode_device_keys(std::string_view v);

}  // namespace tern::store::rocks
