#include "store/redis/redis_store.h"

#include "base/fiber.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <deque>
#include <random>

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "proto/frames.h"
#include "store/redis/redis_cluster_commit.h"
#include "store/redis/redis_scripts.h"
#include "store/rocksdb/encoding.h"
#include "store/store_metrics.h"

namespace tern::store::redis {

namespace {

std::string user_key(std::string_view user) { return "{u:" + std::string(user) + "}"; }
std::string conv_key(std::string_view id) { return "{c:" + std::string(id) + "}"; }
std::string device_key(const DeviceRef& d) { return "{d:" + d.user + "/" + std::to_string(d.device) + "}"; }
std::string token_key(std::string_view hash) { return "{t:" + std::string(hash) + "}"; }

// Seqs in the log: 16 lowercase hex digits, so lexicographic order is numeric order.
std::string seq_hex(Seq seq) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(seq));
  return std::string(buf, 16);
}

// One-time prekey members: 8 hex digits of the id, then the key. The exclusive upper bound of
// one id's members for ZRANGEBYLEX/ZREMRANGEBYLEX ("+" past the largest id).
std::string prekey_hex(uint32_t id) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", id);
  return std::string(buf, 8);
}
std::string prekey_bound(uint32_t id) { return id == UINT32_MAX ? "+" : "(" + prekey_hex(id + 1); }

Error corrupt(const char* what) { return make_error(ErrorCode::kInternal, std::string("redis: corrupt ") + what); }

std::string_view str(const redisReply* r) { return std::string_view(r->str, r->len); }
bool is_string(const redisReply* r) { return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS; }

template <typename T>
std::optional<T> parse_int(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<Seq> parse_hex(std::string_view s) {
  Seq v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (ec != std::errc() || p != s.data() + s.size() || s.size() != 16) return std::nullopt;
  return v;
}

// An error reply becomes `internal` (a bug or a corrupt server), except a server that is
// loading its data or read-only (a replica after failover), and a dense-append conflict
// (TERNSEQ: this node's head was behind), which are `unavailable`: retry.
Error reply_error(const redisReply* r) { return redis_reply_error(str(r)); }

// The slot a command's key lives in (EVAL/EVALSHA: KEYS[1]); commands without a key go to
// any node (slot 0's master).
uint16_t command_slot(const std::vector<std::string_view>& argv) {
  if (argv.size() >= 4 && (argv[0] == "EVALSHA" || argv[0] == "EVAL")) return argv[2] == "0" ? 0 : key_slot(argv[3]);
  if (argv.size() >= 2 && argv[0] != "WAIT" && argv[0] != "SCRIPT") return key_slot(argv[1]);
  return 0;
}

// Checks the reply for an error and a type; nil passes as "absent".
Result<const redisReply*> expect(const Reply& r, int type) {
  if (r->type == REDIS_REPLY_ERROR) return reply_error(r.get());
  if (r->type != type && r->type != REDIS_REPLY_NIL) return make_error(ErrorCode::kInternal, "redis: unexpected reply type");
  return r.get();
}

}  // namespace

Result<std::unique_ptr<RedisStore>> RedisStore::open(RedisStoreOptions options) {
  std::unique_ptr<RedisStore> s(new RedisStore(std::move(options)));
  (void)reads_counter();  // listed in /metrics from the start, at 0
  // Load the scripts (and learn their SHA1s); this also checks the address.
  for (auto [text, sha] : {std::pair{scripts::kCommit, &s->commit_sha_}, std::pair{scripts::kReadMessages, &s->read_sha_},
                            std::pair{scripts::kPurge, &s->purge_sha_}, std::pair{scripts::kRange, &s->range_sha_},
                            std::pair{scripts::kTakeTokens, &s->tokens_sha_},
                            std::pair{scripts::kMediaMark, &s->media_mark_sha_},
                            std::pair{scripts::kLinkCode, &s->link_code_sha_},
                            std::pair{scripts::kNextReportId, &s->report_id_sha_}}) {
    auto r = s->run1({"SCRIPT", "LOAD", text});
    if (!r) return r.error();
    if ((*r)->type == REDIS_REPLY_ERROR) return reply_error(r->get());
    if (!is_string(r->get())) return make_error(ErrorCode::kInternal, "redis: SCRIPT LOAD: unexpected reply");
    *sha = std::string(str(r->get()));
  }
  if (auto c = s->connection(); c) s->cluster_ = (*c)->is_cluster();
  return s;
}

RedisStore::~RedisStore() = default;

Result<RedisCluster*> RedisStore::connection() {
  Slot* slot;
  LoopShare* shared = nullptr;
  {
    std::lock_guard lock(mu_);
    Fiber* fiber = Fiber::current();
    auto& s = fiber ? fiber_slots_[fiber] : slots_[std::this_thread::get_id()];
    if (!s) {
      s = std::make_unique<Slot>();
      s->backoff = ReconnectBackoff(options_.retry_backoff, options_.retry_backoff * 10);
    }
    slot = s.get();
    if (fiber) {
      auto& l = loop_shares_[&fiber->io()];
      if (!l) l = std::make_unique<LoopShare>();
      shared = l.get();
    }
  }
  if (!slot->cluster) {
    const auto now = std::chrono::steady_clock::now();
    if (now < slot->retry_after) return make_error(ErrorCode::kUnavailable, "redis: unreachable (backing off)");
    RedisClusterOptions o;
    o.seeds = options_.seeds.empty() ? std::vector<RedisAddress>{options_.address} : options_.seeds;
    o.credentials = options_.credentials;
    o.connect_timeout = options_.connect_timeout;
    o.command_timeout = options_.command_timeout;
    o.max_backoff = std::max(options_.retry_backoff, o.retry_backoff);
    if (shared) {
      o.shared = &shared->connections;
      o.topology = &shared->topology;
    }
    auto c = RedisCluster::open(std::move(o));
    if (!c) {
      slot->retry_after = now + slot->backoff.next();
      return c.error();
    }
    slot->backoff.reset();
    slot->cluster = std::move(c).value();
  }
  return slot->cluster.get();
}

Result<std::vector<Reply>> RedisStore::run(const std::vector<std::vector<std::string_view>>& commands) {
  auto c = connection();
  if (!c) return c.error();
  const uint16_t first = commands.empty() ? 0 : command_slot(commands.front());
  bool one_slot = true;
  for (const auto& cmd : commands) one_slot = one_slot && command_slot(cmd) == first;
  if (one_slot || !(*c)->is_cluster()) return (*c)->run(first, commands);
  // Keys of several slots (e.g. frames of several conversations): one pipeline per slot, sent
  // to all their nodes at once; the replies in the commands' order.
  std::vector<SlotCommands> batches;
  std::vector<std::pair<size_t, size_t>> at(commands.size());  // command → (batch, index)
  std::unordered_map<uint16_t, size_t> batch_of;
  for (size_t i = 0; i < commands.size(); ++i) {
    const uint16_t slot = command_slot(commands[i]);
    auto [it, fresh] = batch_of.emplace(slot, batches.size());
    if (fresh) batches.push_back(SlotCommands{slot, {}});
    at[i] = {it->second, batches[it->second].commands.size()};
    batches[it->second].commands.push_back(commands[i]);
  }
  auto r = (*c)->run_many(batches);
  if (!r) return r.error();
  std::vector<Reply> out;
  out.reserve(commands.size());
  for (const auto& [b, k] : at) out.push_back(std::move((*r)[b][k]));
  return out;
}

Result<Reply> RedisStore::run1(const std::vector<std::string_view>& argv) {
  auto r = run({argv});
  if (!r) return r.error();
  return std::move(r->front());
}

Result<Reply> RedisStore::eval(std::string_view script, const std::string& sha,
                               const std::vector<std::string_view>& keys, const std::vector<std::string_view>& args) {
  const std::string nkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(sha);
  argv.push_back(nkeys);
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run1(argv);
  if (!r) return r.error();
  // A restarted Redis has forgotten the script: send it whole (this also caches it again).
  if ((*r)->type == REDIS_REPLY_ERROR && str(r->get()).rfind("NOSCRIPT", 0) == 0) {
    argv[0] = "EVAL";
    argv[1] = script;
    return run1(argv);
  }
  return r;
}

std::string RedisStore::random_token() {
  std::random_device rd;
  char buf[24];
  std::snprintf(buf, sizeof buf, "n%08x%08x", rd(), rd());
  return buf;
}

Result<void> RedisStore::commit(const Batch& batch, bool /*sync*/) {
  behind_ = {};
  if (batch.empty()) return {};
  // Everything the ops reference must outlive the argv views: strings built here live in
  // `owned` (a deque keeps addresses stable).
  std::deque<std::string> owned;
  std::vector<std::string_view> args = {options_.dense_appends ? std::string_view(node_token_) : "0"};
  auto own = [&](std::string s) -> std::string_view { return owned.emplace_back(std::move(s)); };
  const bool check_idempotency = commit_checks_idempotency();
  std::string_view now;  // for check_idempotency: a record that expired before it is no duplicate
  bool nul = false;
  auto id = [&](const std::string& s) -> std::string_view {
    if (rocks::has_nul(s)) nul = true;
    return s;
  };
  for (const Op& op : batch.ops) {
    std::visit(
        [&](const auto& o) {
          using T = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<T, PutUser>) {
            args.insert(args.end(), {"U", id(o.user), own(std::to_string(o.created_ts))});
          } else if constexpr (std::is_same_v<T, PutDevice>) {
            const std::string_view uk = own(user_key(id(o.device.user)));
            const std::string_view dn = own(std::to_string(o.device.device));
            if (o.must_be_new) args.insert(args.end(), {"n", uk, dn});
            args.insert(args.end(), {"D", uk, dn, o.token_hash, own(rocks::encode_token_value(o.device))});
          } else if constexpr (std::is_same_v<T, PutConversation>) {
            const Conversation& c = o.conversation;
            if (o.expected) {
              // Compared with the stored meta as bytes: one encoding per record (encoding.h).
              std::string expected;
              rocks::encode_conversation(expected, *o.expected);
              args.insert(args.end(), {"e", id(c.id), own(std::move(expected))});
            }
            std::string meta;
            rocks::encode_conversation(meta, c);
            args.insert(args.end(), {"C", id(c.id), own(std::move(meta)), own(std::to_string(c.members.size()))});
            for (const Member& m : c.members) {
              UserConversation row{c.id, m.joined_seq, m.left_seq, c.fanout_on_read};
              args.insert(args.end(), {id(m.user), own(rocks::encode_user_row(row))});
            }
          } else if constexpr (std::is_same_v<T, AppendMessage>) {
            args.insert(args.end(), {"A", id(o.conversation_id), own(seq_hex(o.seq)), o.frame,
                                     own(std::to_string(o.expires_at)), own(std::to_string(o.media.size()))});
            for (const std::string& m : o.media) args.push_back(id(m));
          } else if constexpr (std::is_same_v<T, PutIdempotency>) {
            std::string rec;
            rocks::encode_idempotency(rec, o.record);
            id(o.device.user);
            id(o.record.conversation_id);
            const std::string_view dk = own(device_key(o.device));
            const std::string_view expires = own(std::to_string(o.record.expires_at));
            if (check_idempotency) {
              // Refused if the client_msg_id has a record: its expiry-index member, as the 'I' op
              // below writes it, and its expiry (the check writes the entry: redis_scripts.h).
              if (now.empty()) now = own(std::to_string(now_ms()));
              const std::string hk = std::string(dk) + ":idem";
              args.insert(args.end(), {"i", own(std::to_string(hk.size()) + ":" + hk + o.client_msg_id),
                                       o.record.conversation_id, now, expires});
            }
            args.insert(args.end(), {"I", dk, o.client_msg_id, own(std::move(rec)), expires});
          } else if constexpr (std::is_same_v<T, SetCursor>) {
            args.insert(args.end(), {"h", own(device_key(o.device) + ":cur"), id(o.conversation_id), own(std::to_string(o.seq))});
            id(o.device.user);
          } else if constexpr (std::is_same_v<T, SetReceipt>) {
            args.insert(args.end(), {"R", own(conv_key(id(o.conversation_id))), id(o.user),
                                     own(std::to_string(o.delivered) + " " + std::to_string(o.read))});
          } else if constexpr (std::is_same_v<T, InboxMark>) {
            args.insert(args.end(), {"M", own(device_key(o.device)), id(o.conversation_id), own(std::to_string(o.seq))});
            id(o.device.user);
          } else if constexpr (std::is_same_v<T, InboxDelete>) {
            args.insert(args.end(), {"x", own(device_key(o.device) + ":in"), id(o.conversation_id)});
            id(o.device.user);
          } else if constexpr (std::is_same_v<T, SetLastSeen>) {
            args.insert(args.end(), {"h", own(user_key(id(o.user)) + ":a"), "s", own(std::to_string(o.ts))});
          } else if constexpr (std::is_same_v<T, PutSubscription>) {
            args.insert(args.end(), {"h", own(user_key(id(o.user)) + ":ix"), id(o.row.conversation_id),
                                     own(rocks::encode_user_row(o.row))});
          } else if constexpr (std::is_same_v<T, DeleteSubscription>) {
            args.insert(args.end(), {"x", own(user_key(id(o.user)) + ":ix"), id(o.conversation_id)});
          } else if constexpr (std::is_same_v<T, PutDeviceKeys>) {
            std::string v;
            rocks::encode_device_keys(v, o.keys);
            id(o.device.user);
            args.insert(args.end(), {"K", own(device_key(o.device)), own(std::move(v))});
          } else if constexpr (std::is_same_v<T, PutOneTimePrekey>) {
            id(o.device.user);
            args.insert(args.end(), {"P", own(device_key(o.device)), own(prekey_hex(o.key.id)),
                                     own(prekey_bound(o.key.id)), o.key.public_key});
          } else if constexpr (std::is_same_v<T, DeleteOneTimePrekey>) {
            id(o.device.user);
            args.insert(args.end(), {o.take ? "T" : "Q", own(device_key(o.device)), own(prekey_hex(o.id)),
                                     own(prekey_bound(o.id))});
          } else if constexpr (std::is_same_v<T, PutMedia>) {
            args.insert(args.end(), {"G", id(o.id), id(o.owner), own(std::to_string(o.size)),
                                     own(std::to_string(o.created_ts))});
          } else if constexpr (std::is_same_v<T, DeleteMedia>) {
            args.insert(args.end(), {"H", id(o.id), id(o.owner)});
          } else if constexpr (std::is_same_v<T, DropPendingMedia>) {
            args.insert(args.end(), {"J", id(o.id), id(o.owner)});
          } else if constexpr (std::is_same_v<T, MessageExpired>) {
            args.insert(args.end(), {"E", id(o.conversation_id), own(seq_hex(o.seq)), own(std::to_string(o.media.size()))});
            for (const std::string& m : o.media) args.push_back(id(m));
          } else if constexpr (std::is_same_v<T, PutUserRecord>) {
            args.insert(args.end(), {"W", own(user_key(id(o.user))), o.name, o.value});
          } else if constexpr (std::is_same_v<T, DeleteUserRecord>) {
            args.insert(args.end(), {"Z", own(user_key(id(o.user))), o.name});
          } else if constexpr (std::is_same_v<T, PutReport>) {
            args.insert(args.end(), {"N", own(seq_hex(o.id)), o.value});
          } else {
            static_assert(sizeof(T) == 0, "every Op needs a case");
          }
        },
        op);
  }
  if (nul) return make_error(ErrorCode::kInvalidArgument, "id contains a NUL byte");
  if (auto c = connection(); c && (*c)->is_cluster())
    return commit_on_cluster(**c, {scripts::kCommit, commit_sha_}, args, options_.wait_replicas, options_.command_timeout,
                             behind_);
  auto r = eval(scripts::kCommit, commit_sha_, {}, args);
  if (!r) return r.error();
  if ((*r)->type == REDIS_REPLY_ERROR) return reply_error(r->get());
  if (behind_reply(r->get(), behind_)) return behind_error();
  if (options_.wait_replicas > 0) {
    const std::string n = std::to_string(options_.wait_replicas);
    const std::string ms = std::to_string(options_.command_timeout.count() / 2);
    auto w = run1({"WAIT", n, ms});
    if (!w) return w.error();
    if ((*w)->type != REDIS_REPLY_INTEGER || (*w)->integer < options_.wait_replicas)
      return make_error(ErrorCode::kUnavailable, "redis: too few replicas acknowledged the write");
  }
  return {};
}

Result<void> RedisStore::flush() {
  // Every commit was already applied (and, with appendfsync always, fsynced) when it returned.
  return {};
}

Result<std::optional<std::string>> RedisStore::fetch_string(const std::vector<std::string_view>& argv) {
  reads_counter().inc();
  auto r = run1(argv);
  if (!r) return r.error();
  auto v = expect(*r, REDIS_REPLY_STRING);
  if (!v) return v.error();
  if ((*v)->type == REDIS_REPLY_NIL) return std::optional<std::string>{};
  return std::optional<std::string>(std::string(str(*v)));
}

Result<Reply> RedisStore::fetch_array(const std::vector<std::string_view>& argv) {
  reads_counter().inc();
  auto r = run1(argv);
  if (!r) return r.error();
  auto v = expect(*r, REDIS_REPLY_ARRAY);
  if (!v) return v.error();
  return std::move(*r);
}

Result<bool> RedisStore::user_exists(const std::string& user) {
  auto v = fetch_string({"HGET", user_key(user) + ":a", "c"});
  if (!v) return v.error();
  return v->has_value();
}

namespace {
// A user's device numbers from the reply of HKEYS {u:<user>}:d, sorted.
Result<std::vector<uint32_t>> parse_devices(const Reply& reply) {
  auto a = expect(reply, REDIS_REPLY_ARRAY);
  if (!a) return a.error();
  std::vector<uint32_t> out;
  if ((*a)->type == REDIS_REPLY_NIL) return out;
  for (size_t i = 0; i < (*a)->elements; ++i) {
    auto d = parse_int<uint32_t>(str((*a)->element[i]));
    if (!d) return corrupt("device");
    out.push_back(*d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A device's keys from the reply of GET {d:<user>/<n>}:k; nullopt if it has none.
Result<std::optional<DeviceKeys>> parse_device_keys(const Reply& reply) {
  auto v = expect(reply, REDIS_REPLY_STRING);
  if (!v) return v.error();
  if ((*v)->type == REDIS_REPLY_NIL) return std::optional<DeviceKeys>{};
  auto k = rocks::decode_device_keys(str(*v));
  if (!k) return corrupt("device keys");
  return std::optional<DeviceKeys>(std::move(*k));
}
}  // namespace

template <typename T, typename In, typename KeyOf, typename Parse>
Result<std::vector<T>> RedisStore::read_each(std::string_view verb, const std::vector<In>& in, KeyOf key_of, Parse parse) {
  std::vector<std::string> keys;
  keys.reserve(in.size());
  for (const auto& x : in) keys.push_back(key_of(x));
  std::vector<std::vector<std::string_view>> commands;
  commands.reserve(keys.size());
  for (const auto& k : keys) commands.push_back({verb, k});
  std::vector<T> out;
  if (commands.empty()) return out;
  reads_counter().inc();
  auto replies = run(commands);  // one pipeline (on a Cluster, one per slot, sent at once)
  if (!replies) return replies.error();
  out.reserve(replies->size());
  for (const Reply& r : *replies) {
    auto v = parse(r);
    if (!v) return v.error();
    out.push_back(std::move(*v));
  }
  return out;
}

Result<std::vector<uint32_t>> RedisStore::devices(const std::string& user) {
  reads_counter().inc();
  auto r = run1({"HKEYS", user_key(user) + ":d"});
  if (!r) return r.error();
  return parse_devices(*r);
}

Result<std::vector<std::vector<uint32_t>>> RedisStore::devices_of(const std::vector<std::string>& users) {
  return read_each<std::vector<uint32_t>>("HKEYS", users, [](const std::string& u) { return user_key(u) + ":d"; },
                                         parse_devices);
}

Result<std::optional<DeviceRef>> RedisStore::find_token(const std::string& token_hash) {
  auto v = fetch_string({"GET", token_key(token_hash)});
  if (!v) return v.error();
  if (!*v) return std::optional<DeviceRef>{};
  auto d = rocks::decode_token_value(**v);
  if (!d) return corrupt("token");
  return std::optional<DeviceRef>(std::move(*d));
}

Result<int64_t> RedisStore::last_seen(const std::string& user) {
  auto v = fetch_string({"HGET", user_key(user) + ":a", "s"});
  if (!v) return v.error();
  if (!*v) return int64_t{0};
  auto ts = parse_int<int64_t>(**v);
  if (!ts) return corrupt("last_seen");
  return *ts;
}

namespace {
// A conversation's snapshot from the reply of GET {c:<id>}:m; nullopt if there is none.
Result<std::optional<Conversation>> parse_conversation(const Reply& reply) {
  auto v = expect(reply, REDIS_REPLY_STRING);
  if (!v) return v.error();
  if ((*v)->type == REDIS_REPLY_NIL) return std::optional<Conversation>{};
  auto c = rocks::decode_conversation(str(*v));
  if (!c) return corrupt("conversation");
  return std::optional<Conversation>(std::move(*c));
}
}  // namespace

Result<std::optional<Conversation>> RedisStore::conversation(const std::string& id) {
  reads_counter().inc();
  auto r = run1({"GET", conv_key(id) + ":m"});
  if (!r) return r.error();
  return parse_conversation(*r);
}

Result<std::vector<std::optional<Conversation>>> RedisStore::conversations_of(const std::vector<std::string>& ids) {
  return read_each<std::optional<Conversation>>("GET", ids, [](const std::string& id) { return conv_key(id) + ":m"; },
                                               parse_conversation);
}

Result<std::vector<UserConversation>> RedisStore::user_conversations(const std::string& user) {
  auto a = fetch_array({"HGETALL", user_key(user) + ":ix"});
  if (!a) return a.error();
  std::vector<UserConversation> out;
  for (size_t i = 0; i + 1 < (*a)->elements; i += 2) {
    auto row = rocks::decode_user_row(str((*a)->element[i]), str((*a)->element[i + 1]));
    if (!row) return corrupt("user index");
    out.push_back(std::move(*row));
  }
  std::sort(out.begin(), out.end(),
            [](const UserConversation& x, const UserConversation& y) { return x.conversation_id < y.conversation_id; });
  return out;
}

Result<std::optional<UserConversation>> RedisStore::user_conversation(const std::string& user,
                                                                      const std::string& conversation_id) {
  auto v = fetch_string({"HGET", user_key(user) + ":ix", conversation_id});
  if (!v) return v.error();
  if (!*v) return std::optional<UserConversation>{};
  auto row = rocks::decode_user_row(conversation_id, **v);
  if (!row) return corrupt("user index");
  return std::optional<UserConversation>(std::move(*row));
}

Result<std::vector<StoredMessage>> RedisStore::read_messages(const std::string& conversation_id, Seq after_seq,
                                                             size_t limit) {
  std::vector<StoredMessage> out;
  if (limit == 0) return out;
  const std::string base = conv_key(conversation_id);
  const std::string log = base + ":log", frames = base + ":f";
  const std::string from = "(" + seq_hex(after_seq);
  const std::string lim = std::to_string(std::min<size_t>(limit, 1'000'000));
  reads_counter().inc();
  auto r = eval(scripts::kReadMessages, read_sha_, {log, frames}, {from, lim});
  if (!r) return r.error();
  auto v = expect(*r, REDIS_REPLY_ARRAY);
  if (!v) return v.error();
  for (size_t i = 0; i + 1 < (*v)->elements; i += 2) {
    const redisReply* k = (*v)->element[i];
    const redisReply* f = (*v)->element[i + 1];
    auto seq = parse_hex(str(k));
    if (!seq || f->type != REDIS_REPLY_STRING) return corrupt("message");
    out.push_back(StoredMessage{*seq, std::string(str(f))});
  }
  return out;
}

Result<Seq> RedisStore::head(const std::string& conversation_id) {
  auto a = fetch_array({"ZRANGE", conv_key(conversation_id) + ":log", "-1", "-1"});
  if (!a) return a.error();
  if ((*a)->elements == 0) return Seq{0};
  auto seq = parse_hex(str((*a)->element[0]));
  if (!seq) return corrupt("log");
  return *seq;
}

Result<Seq> RedisStore::cursor(const DeviceRef& device, const std::string& conversation_id) {
  auto v = fetch_string({"HGET", device_key(device) + ":cur", conversation_id});
  if (!v) return v.error();
  if (!*v) return Seq{0};
  auto seq = parse_int<Seq>(**v);
  if (!seq) return corrupt("cursor");
  return *seq;
}

Result<std::vector<Seq>> RedisStore::cursors(const DeviceRef& device, const std::vector<std::string>& conversation_ids) {
  std::vector<Seq> out;
  if (conversation_ids.empty()) return out;
  const std::string key = device_key(device) + ":cur";
  std::vector<std::string_view> argv{"HMGET", key};
  argv.insert(argv.end(), conversation_ids.begin(), conversation_ids.end());
  auto a = fetch_array(argv);  // one key: one round trip, one slot
  if (!a) return a.error();
  if ((*a)->elements != conversation_ids.size()) return corrupt("cursors");
  out.reserve(conversation_ids.size());
  for (size_t i = 0; i < (*a)->elements; ++i) {
    const redisReply* e = (*a)->element[i];
    if (e->type == REDIS_REPLY_NIL) {
      out.push_back(0);
      continue;
    }
    if (e->type == REDIS_REPLY_ERROR) return reply_error(e);
    auto seq = e->type == REDIS_REPLY_STRING ? parse_int<Seq>(str(e)) : std::nullopt;
    if (!seq) return corrupt("cursor");
    out.push_back(*seq);
  }
  return out;
}

Result<std::vector<std::pair<std::string, Seq>>> RedisStore::inbox(const DeviceRef& device) {
  auto a = fetch_array({"HGETALL", device_key(device) + ":in"});
  if (!a) return a.error();
  std::vector<std::pair<std::string, Seq>> out;
  for (size_t i = 0; i + 1 < (*a)->elements; i += 2) {
    auto seq = parse_int<Seq>(str((*a)->element[i + 1]));
    if (!seq) return corrupt("inbox");
    out.emplace_back(std::string(str((*a)->element[i])), *seq);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::optional<IdempotencyRecord>> RedisStore::idempotency(const DeviceRef& device,
                                                                 const std::string& client_msg_id, int64_t now_ms) {
  if (auto c = connection(); c && (*c)->is_cluster()) return idempotency_on_cluster(**c, device, client_msg_id, now_ms);
  auto v = fetch_string({"HGET", device_key(device) + ":idem", client_msg_id});
  if (!v) return v.error();
  if (!*v) return std::optional<IdempotencyRecord>{};
  auto rec = rocks::decode_idempotency(**v);
  if (!rec) return corrupt("idempotency");
  if (now_ms > rec->expires_at) return std::optional<IdempotencyRecord>{};
  return std::optional<IdempotencyRecord>(std::move(*rec));
}

Result<std::optional<IdempotencyRecord>> RedisStore::send_idempotency(const DeviceRef& device,
                                                                      const std::string& client_msg_id,
                                                                      const std::string& conversation_id,
                                                                      int64_t now_ms) {
  if (auto c = connection(); c && (*c)->is_cluster())
    return send_idempotency_on_cluster(**c, device, client_msg_id, conversation_id, now_ms);
  return idempotency(device, client_msg_id, now_ms);
}

namespace {
// A conversation's receipt states from the reply of HGETALL {c:<id>}:r, by user.
Result<std::vector<ReceiptState>> parse_receipts(const Reply& reply) {
  auto a = expect(reply, REDIS_REPLY_ARRAY);
  if (!a) return a.error();
  std::vector<ReceiptState> out;
  if ((*a)->type == REDIS_REPLY_NIL) return out;
  for (size_t i = 0; i + 1 < (*a)->elements; i += 2) {
    std::string_view val = str((*a)->element[i + 1]);
    const size_t sp = val.find(' ');
    if (sp == std::string_view::npos) return corrupt("receipt");
    auto d = parse_int<Seq>(val.substr(0, sp));
    auto rd = parse_int<Seq>(val.substr(sp + 1));
    if (!d || !rd) return corrupt("receipt");
    out.push_back(ReceiptState{std::string(str((*a)->element[i])), *d, *rd});
  }
  std::sort(out.begin(), out.end(), [](const ReceiptState& x, const ReceiptState& y) { return x.user < y.user; });
  return out;
}
}  // namespace

Result<std::vector<ReceiptState>> RedisStore::receipts(const std::string& conversation_id) {
  auto a = fetch_array({"HGETALL", conv_key(conversation_id) + ":r"});
  if (!a) return a.error();
  return parse_receipts(*a);
}

Result<std::vector<std::vector<ReceiptState>>> RedisStore::receipts_of(const std::vector<std::string>& conversation_ids) {
  return read_each<std::vector<ReceiptState>>(
      "HGETALL", conversation_ids, [](const std::string& id) { return conv_key(id) + ":r"; }, parse_receipts);
}

Result<size_t> RedisStore::purge_expired(int64_t now_ms) {
  if (auto c = connection(); c && (*c)->is_cluster()) return purge_on_cluster(**c, now_ms);
  // Chunks bound how long one script holds the server (Redis runs one script at a time).
  constexpr int64_t kChunk = 1000;
  const std::string now = std::to_string(now_ms), chunk = std::to_string(kChunk);
  size_t purged = 0;
  for (;;) {
    auto r = eval(scripts::kPurge, purge_sha_, {}, {now, chunk});
    if (!r) return r.error();
    if ((*r)->type == REDIS_REPLY_ERROR) return reply_error(r->get());
    if ((*r)->type != REDIS_REPLY_INTEGER) return make_error(ErrorCode::kInternal, "redis: purge: unexpected reply");
    purged += static_cast<size_t>((*r)->integer);
    if ((*r)->integer < kChunk) return purged;
  }
}

Result<std::string> RedisStore::shared_value(const std::string& key, const std::string& proposed) {
  auto r = run({{"SET", key, proposed, "NX"}, {"GET", key}});
  if (!r) return r.error();
  for (const Reply& reply : *r)
    if (reply->type == REDIS_REPLY_ERROR) return reply_error(reply.get());
  const Reply& got = r->back();
  if (got->type != REDIS_REPLY_STRING) return make_error(ErrorCode::kInternal, "redis: shared value missing");
  return std::string(str(got.get()));
}

// ---- key directory ----

Result<std::optional<DeviceKeys>> RedisStore::device_keys(const DeviceRef& device) {
  reads_counter().inc();
  auto r = run1({"GET", device_key(device) + ":k"});
  if (!r) return r.error();
  return parse_device_keys(*r);
}

Result<std::vector<std::optional<DeviceKeys>>> RedisStore::device_keys_of(const std::vector<DeviceRef>& devices) {
  return read_each<std::optional<DeviceKeys>>("GET", devices, [](const DeviceRef& d) { return device_key(d) + ":k"; },
                                             parse_device_keys);
}

Result<std::vector<OneTimePrekey>> RedisStore::one_time_prekeys(const DeviceRef& device, size_t limit) {
  std::vector<OneTimePrekey> out;
  if (limit == 0) return out;
  const std::string stop = std::to_string(std::min<size_t>(limit, 1'000'000) - 1);
  auto a = fetch_array({"ZRANGE", device_key(device) + ":pk", "0", stop});
  if (!a) return a.error();
  for (size_t i = 0; i < (*a)->elements; ++i) {
    std::string_view m = str((*a)->element[i]);
    uint32_t key_id = 0;
    if (m.size() < 8) return corrupt("prekey");
    auto [p, ec] = std::from_chars(m.data(), m.data() + 8, key_id, 16);
    if (ec != std::errc() || p != m.data() + 8) return corrupt("prekey");
    out.push_back(OneTimePrekey{key_id, std::string(m.substr(8))});
  }
  return out;
}

// ---- media and message expiry (issue 11) ----

Result<std::vector<RedisStore::RangeRow>> RedisStore::range(const std::string& index, const std::string& values,
                                                            bool by_score, const std::string& min,
                                                            const std::string& max, size_t limit) {
  std::vector<RangeRow> out;
  if (limit == 0) return out;
  const std::string lim = std::to_string(std::min<size_t>(limit, 1'000'000));
  reads_counter().inc();
  auto r = eval(scripts::kRange, range_sha_, {index, values}, {by_score ? "S" : "L", min, max, lim});
  if (!r) return r.error();
  auto v = expect(*r, REDIS_REPLY_ARRAY);
  if (!v) return v.error();
  if ((*v)->type == REDIS_REPLY_NIL) return out;
  if ((*v)->elements % 3 != 0) return corrupt("range");
  for (size_t i = 0; i + 2 < (*v)->elements; i += 3) {
    for (size_t j = 0; j < 3; ++j)
      if (!is_string((*v)->element[i + j])) return corrupt("range");
    out.push_back(RangeRow{std::string(str((*v)->element[i])), std::string(str((*v)->element[i + 1])),
                           std::string(str((*v)->element[i + 2]))});
  }
  return out;
}

Result<std::vector<MediaOwner>> RedisStore::media_owners(const std::string& id) {
  auto a = fetch_array({"HGETALL", "{m:" + id + "}:o"});
  if (!a) return a.error();
  std::vector<MediaOwner> out;
  for (size_t i = 0; i + 1 < (*a)->elements; i += 2) {
    std::string_view val = str((*a)->element[i + 1]);
    const size_t sp = val.find(' ');
    if (sp == std::string_view::npos) return corrupt("media owner");
    auto size = parse_int<uint64_t>(val.substr(0, sp));
    auto created = parse_int<int64_t>(val.substr(sp + 1));
    if (!size || !created) return corrupt("media owner");
    out.push_back(MediaOwner{std::string(str((*a)->element[i])), *size, *created});
  }
  std::sort(out.begin(), out.end(), [](const MediaOwner& x, const MediaOwner& y) { return x.user < y.user; });
  constexpr size_t kMaxOwners = 1024;  // as the RocksDB store: that many uploaders of one blob is enough
  if (out.size() > kMaxOwners) out.resize(kMaxOwners);
  return out;
}

Result<std::vector<std::pair<std::string, uint64_t>>> RedisStore::user_media(const std::string& user, size_t limit) {
  const std::string base = user_key(user);
  auto rows = range(base + ":me", base + ":ms", false, "-", "+", limit);
  if (!rows) return rows.error();
  std::vector<std::pair<std::string, uint64_t>> out;
  for (auto& row : *rows) {
    auto size = parse_int<uint64_t>(row.value);
    if (!size) return corrupt("user media");
    out.emplace_back(std::move(row.member), *size);
  }
  return out;
}

Result<std::vector<MediaRef>> RedisStore::media_refs(const std::string& id, size_t limit) {
  const std::string base = "{m:" + id + "}";
  auto rows = range(base + ":r", base + ":rx", false, "-", "+", limit);
  if (!rows) return rows.error();
  std::vector<MediaRef> out;
  for (const auto& row : *rows) {
    const std::string_view m = row.member;
    if (m.size() < 17 || m[m.size() - 17] != '\0') return corrupt("media ref");
    auto seq = parse_hex(m.substr(m.size() - 16));
    auto expires = parse_int<int64_t>(row.value);
    if (!seq || !expires) return corrupt("media ref");
    out.push_back(MediaRef{std::string(m.substr(0, m.size() - 17)), *seq, *expires});
  }
  return out;
}

Result<std::vector<PendingMedia>> RedisStore::pending_media(int64_t before_ms, size_t limit) {
  std::vector<PendingMedia> out;
  if (limit == 0) return out;
  const std::string max = "(" + std::to_string(before_ms);
  const std::string lim = std::to_string(std::min<size_t>(limit, 1'000'000));
  auto a = fetch_array({"ZRANGEBYSCORE", "mpend", "-inf", max, "WITHSCORES", "LIMIT", "0", lim});
  if (!a) return a.error();
  for (size_t i = 0; i + 1 < (*a)->elements; i += 2) {
    std::string_view m = str((*a)->element[i]);
    auto created = parse_int<int64_t>(str((*a)->element[i + 1]));
    if (m.size() <= 64 || !created) return corrupt("pending media");
    out.push_back(PendingMedia{std::string(m.substr(0, 64)), std::string(m.substr(64)), *created});
  }
  return out;
}

Result<std::vector<ExpiringMessage>> RedisStore::expiring_messages(int64_t now_ms, size_t limit) {
  auto rows = range("{msgexp}", "{msgexp}v", true, "-inf", std::to_string(now_ms), limit);
  if (!rows) return rows.error();
  std::vector<ExpiringMessage> out;
  for (const auto& row : *rows) {
    const std::string_view m = row.member;
    if (m.size() < 17 || m[m.size() - 17] != '\0') return corrupt("message expiry");
    auto seq = parse_hex(m.substr(m.size() - 16));
    auto expires = parse_int<int64_t>(row.score);
    if (!seq || !expires || row.value.size() % 64 != 0) return corrupt("message expiry");
    ExpiringMessage e{std::string(m.substr(0, m.size() - 17)), *seq, *expires, {}};
    for (size_t i = 0; i < row.value.size(); i += 64) e.media.push_back(row.value.substr(i, 64));
    out.push_back(std::move(e));
  }
  return out;
}

Result<void> RedisStore::erase_expired(const std::vector<ExpiringMessage>& messages) {
  if (messages.empty()) return {};
  // Read every frame (one pipeline), then overwrite each with its tombstone (one pipeline).
  // Frames never change once appended, so nothing can slip in between the two.
  std::vector<std::string> keys, fields;
  std::vector<std::vector<std::string_view>> reads;
  keys.reserve(messages.size());
  fields.reserve(messages.size());
  for (const auto& m : messages) {
    keys.push_back(conv_key(m.conversation_id) + ":f");
    fields.push_back(seq_hex(m.seq));
  }
  for (size_t i = 0; i < messages.size(); ++i) reads.push_back({"HGET", keys[i], fields[i]});
  auto got = run(reads);
  if (!got) return got.error();
  std::vector<std::string> tombs;
  std::vector<size_t> which;
  tombs.reserve(messages.size());
  for (size_t i = 0; i < got->size(); ++i) {
    const redisReply* r = (*got)[i].get();
    if (r->type == REDIS_REPLY_ERROR) return reply_error(r);
    if (r->type != REDIS_REPLY_STRING) continue;  // gone already
    auto tomb = proto::render_expired(str(r));
    if (!tomb) continue;  // not a message frame: nothing of ours to erase
    if (*tomb == str(r)) continue;  // already a tombstone (another node's sweep)
    tombs.push_back(std::move(*tomb));
    which.push_back(i);
  }
  std::vector<std::vector<std::string_view>> writes;
  for (size_t j = 0; j < which.size(); ++j) writes.push_back({"HSET", keys[which[j]], fields[which[j]], tombs[j]});
  if (!writes.empty()) {
    auto w = run(writes);
    if (!w) return w.error();
    for (const Reply& reply : *w)
      if (reply->type == REDIS_REPLY_ERROR) return reply_error(reply.get());
  }
  if (!options_.rewrite_aof_on_erase || writes.empty()) return {};
  {
    std::lock_guard lock(rewrite_mu_);
    const auto now = std::chrono::steady_clock::now();
    if (last_rewrite_ != std::chrono::steady_clock::time_point{} && now - last_rewrite_ < options_.aof_rewrite_interval)
      return {};
    last_rewrite_ = now;
  }
  // The old frames are still in the AOF: a rewrite writes the data set as it is now. An error
  // reply (AOF off, or one already scheduled) is not a failure of the erase itself. Every
  // node rewrites its own AOF: on a Cluster the masters (the erased frames were on several of
  // them) and their replicas, on a plain redis-server that server and the replicas connected
  // to it (each replica appended its copy of the frames). A replica that cannot be reached is
  // logged, not a failure: the erase itself succeeded, and the next erase's rewrite (or the
  // replica's own auto-aof-rewrite) reaches it.
  auto c = connection();
  if (!c) return c.error();
  auto every = (*c)->on_every_node({"BGREWRITEAOF"});
  if (!every) return every.error();
  for (const std::string& replica : every->unreachable)
    spdlog::warn("store=redis event=aof_rewrite_replica_unreachable replica=\"{}\"", replica);
  return {};
}

// ---- user records, the user listing and reports (issue 12) ----

Result<std::optional<std::string>> RedisStore::user_record(const std::string& user, const std::string& name) {
  return fetch_string({"HGET", user_key(user) + ":rv", name});
}

Result<std::vector<std::pair<std::string, std::string>>> RedisStore::user_records(const std::string& user,
                                                                                 const std::string& prefix,
                                                                                 size_t limit) {
  const std::string base = user_key(user);
  std::string max = "+";
  if (!prefix.empty()) {
    std::string succ = rocks::prefix_successor(prefix);
    if (!succ.empty()) max = "(" + succ;
  }
  auto rows = range(base + ":rec", base + ":rv", false, prefix.empty() ? "-" : "[" + prefix, max, limit);
  if (!rows) return rows.error();
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& row : *rows) out.emplace_back(std::move(row.member), std::move(row.value));
  return out;
}

Result<std::vector<std::string>> RedisStore::users(const std::string& after, size_t limit) {
  std::vector<std::string> out;
  if (limit == 0) return out;
  const std::string lim = std::to_string(std::min<size_t>(limit, 1'000'000));
  auto a = fetch_array({"ZRANGEBYLEX", "users", after.empty() ? "-" : "(" + after, "+", "LIMIT", "0", lim});
  if (!a) return a.error();
  for (size_t i = 0; i < (*a)->elements; ++i) out.emplace_back(str((*a)->element[i]));
  return out;
}

Result<std::vector<std::pair<uint64_t, std::string>>> RedisStore::reports(uint64_t after_id, size_t limit) {
  auto rows = range("{reports}", "{reports}v", false, "(" + seq_hex(after_id), "+", limit);
  if (!rows) return rows.error();
  std::vector<std::pair<uint64_t, std::string>> out;
  for (auto& row : *rows) {
    auto id = parse_hex(row.member);
    if (!id) return corrupt("report");
    out.emplace_back(*id, std::move(row.value));
  }
  return out;
}

Result<uint64_t> RedisStore::last_report_id() {
  auto a = fetch_array({"ZRANGE", "{reports}", "-1", "-1"});
  if (!a) return a.error();
  if ((*a)->elements == 0) return uint64_t{0};
  auto id = parse_hex(str((*a)->element[0]));
  if (!id) return corrupt("report");
  return *id;
}

}  // namespace tern::store::redis
