#include "store/memory/memory_store.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <tuple>

#include "proto/frames.h"

namespace tern::store {

using DevKey = std::pair<std::string, uint32_t>;

struct MemoryStore::State {
  mutable std::mutex mu;
  bool fail = false;
  bool fail_reads = false;
  size_t commits = 0;
  size_t reads = 0;  // read calls (any method but commit/flush/purge)
  std::map<std::string, int64_t> users;                    // user → created
  std::map<std::string, int64_t> last_seen;
  std::map<DevKey, std::string> devices;                   // device → token hash
  std::map<std::string, DeviceRef> tokens;                 // token hash → device
  std::map<std::string, Conversation> conversations;
  std::map<std::pair<std::string, std::string>, UserConversation> user_index;  // (user, conv)
  std::map<std::string, std::map<Seq, std::string>> messages;
  std::map<std::tuple<std::string, uint32_t, std::string>, Seq> cursors;     // (user, dev, conv)
  std::map<std::tuple<std::string, uint32_t, std::string>, Seq> inbox;
  std::map<std::pair<std::string, std::string>, std::pair<Seq, Seq>> receipts;  // (conv, user)
  std::map<std::tuple<std::string, uint32_t, std::string>, IdempotencyRecord> idempotency;
  std::map<DevKey, DeviceKeys> device_keys;
  std::map<std::tuple<std::string, uint32_t, uint32_t>, std::string> prekeys;  // (user, dev, id) → public
  std::map<std::pair<std::string, std::string>, MediaOwner> media;  // (id, owner)
  std::set<std::tuple<int64_t, std::string, std::string>> pending;  // (created, id, owner)
  std::map<std::tuple<std::string, std::string, Seq>, int64_t> refs;  // (id, conv, seq) → expires_at
  std::map<std::tuple<int64_t, std::string, Seq>, std::vector<std::string>> expiry;  // → media
  std::map<std::pair<std::string, std::string>, std::string> records;  // (user, name)
  std::map<uint64_t, std::string> reports;
  // Media marks (kept once keep_media_marks() was called): id → holder → expiry (steady ms).
  bool media_marks = false;
  std::map<std::string, std::map<std::string, int64_t>> media_leases;
  std::map<std::string, std::pair<std::string, int64_t>> media_collecting;
};

namespace {
bool has_nul(const std::string& s) { return s.find('\0') != std::string::npos; }

// PutConversation::expected: each checked against the record as the batch's earlier ops leave it.
std::optional<Error> changed_meanwhile(const MemoryStore::State& s, const Batch& batch) {
  std::map<std::string, const Conversation*> current;  // written earlier in the batch
  for (const Op& op : batch.ops) {
    const auto* put = std::get_if<PutConversation>(&op);
    if (!put) continue;
    const std::string& id = put->conversation.id;
    if (put->expected) {
      const Conversation* now = nullptr;
      if (auto it = current.find(id); it != current.end()) now = it->second;
      else if (auto st = s.conversations.find(id); st != s.conversations.end()) now = &st->second;
      if (!now || !(*now == *put->expected)) return make_error(ErrorCode::kExists, "the conversation changed meanwhile");
    }
    current[id] = &put->conversation;
  }
  return std::nullopt;
}
}  // namespace

MemoryStore::MemoryStore() : state_(std::make_shared<State>()) {}
MemoryStore::MemoryStore(std::shared_ptr<State> state) : state_(std::move(state)) {}
MemoryStore::~MemoryStore() = default;

void MemoryStore::fail_commits(bool fail) {
  std::lock_guard lock(state_->mu);
  state_->fail = fail;
}

void MemoryStore::fail_reads(bool fail) {
  std::lock_guard lock(state_->mu);
  state_->fail_reads = fail;
}

size_t MemoryStore::reads() const {
  std::lock_guard lock(state_->mu);
  return state_->reads;
}

size_t MemoryStore::commits() const {
  std::lock_guard lock(state_->mu);
  return state_->commits;
}

Result<void> MemoryStore::commit(const Batch& batch, bool /*sync*/) {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  if (s.fail) return make_error(ErrorCode::kInternal, "injected commit failure");
  behind_ = {};
  if (dense_) {
    std::map<std::string, Seq> next;
    for (const Op& op : batch.ops) {
      const auto* a = std::get_if<AppendMessage>(&op);
      if (!a) continue;
      auto [it, fresh] = next.try_emplace(a->conversation_id, 0);
      if (fresh) {
        auto m = s.messages.find(a->conversation_id);
        it->second = (m == s.messages.end() || m->second.empty() ? 0 : m->second.rbegin()->first) + 1;
      }
      const bool late = std::find(behind_.conversations.begin(), behind_.conversations.end(), a->conversation_id) !=
                        behind_.conversations.end();
      if (!late && a->seq != it->second) {
        behind_.conversations.push_back(a->conversation_id);
      }
      ++it->second;
    }
    if (!behind_.conversations.empty()) return make_error(ErrorCode::kUnavailable, "appended seq is not the next one");
  }
  for (const Op& op : batch.ops) {
    const bool bad = std::visit(
        [](const auto& o) {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, PutUser> || std::is_same_v<T, SetLastSeen>) return has_nul(o.user);
          else if constexpr (std::is_same_v<T, PutDevice>) return has_nul(o.device.user);
          else if constexpr (std::is_same_v<T, PutConversation>) return has_nul(o.conversation.id);
          else if constexpr (std::is_same_v<T, AppendMessage>) return has_nul(o.conversation_id);
          else if constexpr (std::is_same_v<T, PutIdempotency>) return has_nul(o.device.user);
          else if constexpr (std::is_same_v<T, SetReceipt>) return has_nul(o.user) || has_nul(o.conversation_id);
          else if constexpr (std::is_same_v<T, PutSubscription>) return has_nul(o.user) || has_nul(o.row.conversation_id);
          else if constexpr (std::is_same_v<T, DeleteSubscription>) return has_nul(o.user) || has_nul(o.conversation_id);
          else if constexpr (std::is_same_v<T, PutDeviceKeys> || std::is_same_v<T, PutOneTimePrekey> ||
                             std::is_same_v<T, DeleteOneTimePrekey>)
            return has_nul(o.device.user);
          else if constexpr (std::is_same_v<T, PutMedia> || std::is_same_v<T, DeleteMedia> ||
                             std::is_same_v<T, DropPendingMedia>)
            return has_nul(o.owner) || has_nul(o.id);
          else if constexpr (std::is_same_v<T, MessageExpired>) return has_nul(o.conversation_id);
          else if constexpr (std::is_same_v<T, PutUserRecord> || std::is_same_v<T, DeleteUserRecord>)
            return has_nul(o.user);
          else if constexpr (std::is_same_v<T, PutReport>) return false;
          else return has_nul(o.device.user) || has_nul(o.conversation_id);
        },
        op);
    if (bad) return make_error(ErrorCode::kInvalidArgument, "ids must not contain NUL");
  }
  for (const Op& op : batch.ops)
    if (const auto* d = std::get_if<PutDevice>(&op); d && d->must_be_new && s.devices.count({d->device.user, d->device.device}))
      return make_error(ErrorCode::kExists, "device already exists");
  if (auto e = changed_meanwhile(s, batch)) return *e;
  for (const Op& op : batch.ops) {
    std::visit(
        [&](const auto& o) {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, PutUser>) {
            s.users[o.user] = o.created_ts;
          } else if constexpr (std::is_same_v<T, SetLastSeen>) {
            s.last_seen[o.user] = o.ts;
          } else if constexpr (std::is_same_v<T, PutDevice>) {
            auto& hash = s.devices[{o.device.user, o.device.device}];
            if (!hash.empty() && hash != o.token_hash) s.tokens.erase(hash);
            hash = o.token_hash;
            if (!o.token_hash.empty()) s.tokens[o.token_hash] = o.device;
          } else if constexpr (std::is_same_v<T, PutConversation>) {
            const Conversation& c = o.conversation;
            if (auto old = s.conversations.find(c.id); old != s.conversations.end())
              for (const Member& om : old->second.members)
                if (std::none_of(c.members.begin(), c.members.end(), [&](const Member& m) { return m.user == om.user; }))
                  s.user_index.erase({om.user, c.id});
            for (const Member& m : c.members)
              s.user_index[{m.user, c.id}] = UserConversation{c.id, m.joined_seq, m.left_seq, c.fanout_on_read};
            s.conversations[c.id] = c;
          } else if constexpr (std::is_same_v<T, AppendMessage>) {
            s.messages[o.conversation_id][o.seq] = o.frame;
            for (const auto& id : o.media) s.refs[{id, o.conversation_id, o.seq}] = o.expires_at;
            if (o.expires_at) s.expiry[{o.expires_at, o.conversation_id, o.seq}] = o.media;
          } else if constexpr (std::is_same_v<T, PutMedia>) {
            s.media[{o.id, o.owner}] = MediaOwner{o.owner, o.size, o.created_ts};
            s.pending.insert({o.created_ts, o.id, o.owner});
          } else if constexpr (std::is_same_v<T, DeleteMedia>) {
            s.media.erase({o.id, o.owner});
          } else if constexpr (std::is_same_v<T, DropPendingMedia>) {
            s.pending.erase({o.created_ts, o.id, o.owner});
          } else if constexpr (std::is_same_v<T, MessageExpired>) {
            s.expiry.erase({o.expires_at, o.conversation_id, o.seq});
            for (const auto& id : o.media) s.refs.erase({id, o.conversation_id, o.seq});
          } else if constexpr (std::is_same_v<T, PutIdempotency>) {
            s.idempotency[{o.device.user, o.device.device, o.client_msg_id}] = o.record;
          } else if constexpr (std::is_same_v<T, SetCursor>) {
            s.cursors[{o.device.user, o.device.device, o.conversation_id}] = o.seq;
          } else if constexpr (std::is_same_v<T, SetReceipt>) {
            s.receipts[{o.conversation_id, o.user}] = {o.delivered, o.read};
          } else if constexpr (std::is_same_v<T, PutSubscription>) {
            s.user_index[{o.user, o.row.conversation_id}] = o.row;
          } else if constexpr (std::is_same_v<T, DeleteSubscription>) {
            s.user_index.erase({o.user, o.conversation_id});
          } else if constexpr (std::is_same_v<T, InboxMark>) {
            s.inbox[{o.device.user, o.device.device, o.conversation_id}] = o.seq;
          } else if constexpr (std::is_same_v<T, InboxDelete>) {
            s.inbox.erase({o.device.user, o.device.device, o.conversation_id});
          } else if constexpr (std::is_same_v<T, PutDeviceKeys>) {
            s.device_keys[{o.device.user, o.device.device}] = o.keys;
          } else if constexpr (std::is_same_v<T, PutOneTimePrekey>) {
            s.prekeys[{o.device.user, o.device.device, o.key.id}] = o.key.public_key;
          } else if constexpr (std::is_same_v<T, DeleteOneTimePrekey>) {
            s.prekeys.erase({o.device.user, o.device.device, o.id});
          } else if constexpr (std::is_same_v<T, PutUserRecord>) {
            s.records[{o.user, o.name}] = o.value;
          } else if constexpr (std::is_same_v<T, DeleteUserRecord>) {
            s.records.erase({o.user, o.name});
          } else if constexpr (std::is_same_v<T, PutReport>) {
            s.reports[o.id] = o.value;
          }
        },
        op);
  }
  ++s.commits;
  return {};
}

Result<bool> MemoryStore::user_exists(const std::string& user) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  return state_->users.count(user) > 0;
}

Result<std::vector<uint32_t>> MemoryStore::devices(const std::string& user) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<uint32_t> out;
  for (auto it = state_->devices.lower_bound({user, 0}); it != state_->devices.end() && it->first.first == user; ++it)
    out.push_back(it->first.second);
  return out;
}

Result<std::optional<DeviceRef>> MemoryStore::find_token(const std::string& token_hash) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  auto it = state_->tokens.find(token_hash);
  if (it == state_->tokens.end()) return std::optional<DeviceRef>{};
  return std::optional<DeviceRef>(it->second);
}

Result<int64_t> MemoryStore::last_seen(const std::string& user) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  auto it = state_->last_seen.find(user);
  return it == state_->last_seen.end() ? 0 : it->second;
}

Result<std::optional<Conversation>> MemoryStore::conversation(const std::string& id) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  auto it = state_->conversations.find(id);
  if (it == state_->conversations.end()) return std::optional<Conversation>{};
  return std::optional<Conversation>(it->second);
}

Result<std::vector<UserConversation>> MemoryStore::user_conversations(const std::string& user) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<UserConversation> out;
  for (auto it = state_->user_index.lower_bound({user, ""}); it != state_->user_index.end() && it->first.first == user;
       ++it)
    out.push_back(it->second);
  return out;
}

Result<std::optional<UserConversation>> MemoryStore::user_conversation(const std::string& user,
                                                                     const std::string& conversation_id) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  auto it = state_->user_index.find({user, conversation_id});
  if (it == state_->user_index.end()) return std::optional<UserConversation>{};
  return std::optional<UserConversation>(it->second);
}

Result<std::vector<StoredMessage>> MemoryStore::read_messages(const std::string& conversation_id, Seq after_seq,
                                                              size_t limit) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  if (state_->fail_reads) return make_error(ErrorCode::kUnavailable, "injected read failure");
  std::vector<StoredMessage> out;
  auto c = state_->messages.find(conversation_id);
  if (c == state_->messages.end()) return out;
  for (auto it = c->second.upper_bound(after_seq); it != c->second.end() && out.size() < limit; ++it)
    out.push_back(StoredMessage{it->first, it->second});
  return out;
}

Result<Seq> MemoryStore::head(const std::string& conversation_id) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  auto c = state_->messages.find(conversation_id);
  if (c == state_->messages.end() || c->second.empty()) return Seq{0};
  return c->second.rbegin()->first;
}

Result<Seq> MemoryStore::cursor(const DeviceRef& device, const std::string& conversation_id) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  if (state_->fail_reads) return make_error(ErrorCode::kUnavailable, "injected read failure");
  auto it = state_->cursors.find({device.user, device.device, conversation_id});
  return it == state_->cursors.end() ? 0 : it->second;
}

Result<std::vector<std::pair<std::string, Seq>>> MemoryStore::inbox(const DeviceRef& device) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<std::pair<std::string, Seq>> out;
  for (auto it = state_->inbox.lower_bound({device.user, device.device, ""});
       it != state_->inbox.end() && std::get<0>(it->first) == device.user && std::get<1>(it->first) == device.device;
       ++it)
    out.emplace_back(std::get<2>(it->first), it->second);
  return out;
}

Result<std::optional<IdempotencyRecord>> MemoryStore::idempotency(const DeviceRef& device,
                                                                  const std::string& client_msg_id, int64_t now_ms) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  auto it = state_->idempotency.find({device.user, device.device, client_msg_id});
  if (it == state_->idempotency.end() || now_ms > it->second.expires_at) return std::optional<IdempotencyRecord>{};
  return std::optional<IdempotencyRecord>(it->second);
}

Result<std::vector<ReceiptState>> MemoryStore::receipts(const std::string& conversation_id) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<ReceiptState> out;
  for (auto it = state_->receipts.lower_bound({conversation_id, ""});
       it != state_->receipts.end() && it->first.first == conversation_id; ++it)
    out.push_back(ReceiptState{it->first.second, it->second.first, it->second.second});
  return out;
}

Result<size_t> MemoryStore::purge_expired(int64_t now_ms) {
  std::lock_guard lock(state_->mu);
  size_t n = 0;
  for (auto it = state_->idempotency.begin(); it != state_->idempotency.end();) {
    if (it->second.expires_at < now_ms) {
      it = state_->idempotency.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

Result<std::optional<DeviceKeys>> MemoryStore::device_keys(const DeviceRef& device) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  auto it = state_->device_keys.find({device.user, device.device});
  if (it == state_->device_keys.end()) return std::optional<DeviceKeys>{};
  return std::optional<DeviceKeys>(it->second);
}

Result<std::vector<OneTimePrekey>> MemoryStore::one_time_prekeys(const DeviceRef& device, size_t limit) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<OneTimePrekey> out;
  for (auto it = state_->prekeys.lower_bound({device.user, device.device, 0});
       it != state_->prekeys.end() && out.size() < limit && std::get<0>(it->first) == device.user &&
       std::get<1>(it->first) == device.device;
       ++it)
    out.push_back(OneTimePrekey{std::get<2>(it->first), it->second});
  return out;
}

Result<std::vector<MediaOwner>> MemoryStore::media_owners(const std::string& id) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<MediaOwner> out;
  for (auto it = state_->media.lower_bound({id, ""}); it != state_->media.end() && it->first.first == id; ++it)
    out.push_back(it->second);
  return out;
}

Result<std::vector<std::pair<std::string, uint64_t>>> MemoryStore::user_media(const std::string& user, size_t limit) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const auto& [key, owner] : state_->media)  // a fake: a full walk is fine
    if (key.second == user && out.size() < limit) out.emplace_back(key.first, owner.size);
  return out;
}

Result<std::vector<MediaRef>> MemoryStore::media_refs(const std::string& id, size_t limit) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<MediaRef> out;
  for (auto it = state_->refs.lower_bound({id, "", 0});
       it != state_->refs.end() && std::get<0>(it->first) == id && out.size() < limit; ++it)
    out.push_back(MediaRef{std::get<1>(it->first), std::get<2>(it->first), it->second});
  return out;
}

Result<std::vector<PendingMedia>> MemoryStore::pending_media(int64_t before_ms, size_t limit) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<PendingMedia> out;
  for (const auto& [created, id, owner] : state_->pending) {
    if (created >= before_ms || out.size() >= limit) break;
    out.push_back(PendingMedia{id, owner, created});
  }
  return out;
}

Result<std::vector<ExpiringMessage>> MemoryStore::expiring_messages(int64_t now_ms, size_t limit) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<ExpiringMessage> out;
  for (const auto& [key, media] : state_->expiry) {
    if (std::get<0>(key) > now_ms || out.size() >= limit) break;
    out.push_back(ExpiringMessage{std::get<1>(key), std::get<2>(key), std::get<0>(key), media});
  }
  return out;
}

Result<void> MemoryStore::erase_expired(const std::vector<ExpiringMessage>& messages) {
  std::lock_guard lock(state_->mu);
  for (const auto& m : messages) {
    auto c = state_->messages.find(m.conversation_id);
    if (c == state_->messages.end()) continue;
    auto it = c->second.find(m.seq);
    if (it == c->second.end()) continue;
    if (auto tomb = proto::render_expired(it->second)) it->second = std::move(*tomb);
  }
  return {};
}

Result<std::optional<std::string>> MemoryStore::user_record(const std::string& user, const std::string& name) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  auto it = state_->records.find({user, name});
  if (it == state_->records.end()) return std::optional<std::string>{};
  return std::optional<std::string>(it->second);
}

Result<std::vector<std::pair<std::string, std::string>>> MemoryStore::user_records(const std::string& user,
                                                                                  const std::string& prefix,
                                                                                  size_t limit) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = state_->records.lower_bound({user, prefix});
       it != state_->records.end() && out.size() < limit && it->first.first == user &&
       it->first.second.compare(0, prefix.size(), prefix) == 0;
       ++it)
    out.emplace_back(it->first.second, it->second);
  return out;
}

Result<std::vector<std::string>> MemoryStore::users(const std::string& after, size_t limit) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<std::string> out;
  for (auto it = state_->users.upper_bound(after); it != state_->users.end() && out.size() < limit; ++it)
    out.push_back(it->first);
  return out;
}

Result<std::vector<std::pair<uint64_t, std::string>>> MemoryStore::reports(uint64_t after_id, size_t limit) {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  std::vector<std::pair<uint64_t, std::string>> out;
  for (auto it = state_->reports.upper_bound(after_id); it != state_->reports.end() && out.size() < limit; ++it)
    out.emplace_back(it->first, it->second);
  return out;
}

Result<uint64_t> MemoryStore::last_report_id() {
  std::lock_guard lock(state_->mu);
  ++state_->reads;
  return state_->reports.empty() ? uint64_t{0} : state_->reports.rbegin()->first;
}

void MemoryStore::keep_media_marks() {
  std::lock_guard lock(state_->mu);
  state_->media_marks = true;
}

Result<std::optional<bool>> MemoryStore::mark_media(const std::string& id, MediaMark kind, const std::string& holder,
                                                    int64_t ttl_ms) {
  std::lock_guard lock(state_->mu);
  if (!state_->media_marks) return std::optional<bool>{};
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  auto& leases = state_->media_leases[id];
  std::erase_if(leases, [&](const auto& l) { return l.second <= now; });
  auto c = state_->media_collecting.find(id);
  if (c != state_->media_collecting.end() && c->second.second <= now) {
    state_->media_collecting.erase(c);
    c = state_->media_collecting.end();
  }
  if (c != state_->media_collecting.end()) return std::optional<bool>(false);
  if (kind == MediaMark::kLease) {
    leases[holder] = now + ttl_ms;
    return std::optional<bool>(true);
  }
  if (!leases.empty()) return std::optional<bool>(false);
  state_->media_collecting[id] = {holder, now + ttl_ms};
  return std::optional<bool>(true);
}

Result<void> MemoryStore::unmark_media(const std::string& id, MediaMark kind, const std::string& holder) {
  std::lock_guard lock(state_->mu);
  if (kind == MediaMark::kLease) {
    if (auto it = state_->media_leases.find(id); it != state_->media_leases.end()) it->second.erase(holder);
  } else if (auto it = state_->media_collecting.find(id);
             it != state_->media_collecting.end() && it->second.first == holder) {
    state_->media_collecting.erase(it);
  }
  return {};
}

}  // namespace tern::store
