#include "store/redis/redis_cluster_commit.h"

#include <charconv>
#include <array>
#include <deque>
#include <map>
#include <set>

#include <hiredis/hiredis.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "store/redis/redis_change_lease.h"
#include "store/rocksdb/encoding.h"

namespace tern::store::redis {

namespace {

std::string_view str(const redisReply* r) { return std::string_view(r->str, r->len); }

Counter& scripts_total = MetricsRegistry::global().counter(
    "tern_redis_commit_scripts_total", "scripts the commits ran on a Redis Cluster (at most one per master and phase)");
Counter& moved_slots_total = MetricsRegistry::global().counter(
    "tern_redis_commit_moved_slots_total",
    "slots of a Cluster commit run again (alone, or a folded script's phases apart) because their master's script met a slot that had moved");

constexpr std::string_view kIdemIndex = "idemexp";
// Global indexes of the commit script (redis_scripts.h); an index and its value hash share a
// hash tag, so the range script reads both in one slot.
constexpr std::string_view kMsgExp = "{msgexp}", kMsgExpValues = "{msgexp}v";
constexpr std::string_view kReports = "{reports}", kReportValues = "{reports}v";
constexpr std::string_view kUsers = "users", kPending = "mpend";

// Members of the expiry index name a hash and a field: "<len>:<hash key><field>".
std::string index_member(std::string_view hash_key, std::string_view field) {
  return std::to_string(hash_key.size()) + ":" + std::string(hash_key) + std::string(field);
}

// The record's field in {c:<conv>}:idem: one device's client_msg_id.
std::string record_field(std::string_view device_key, std::string_view client_msg_id) {
  return std::to_string(device_key.size()) + ":" + std::string(device_key) + std::string(client_msg_id);
}

std::string device_key(const DeviceRef& d) { return "{d:" + d.user + "/" + std::to_string(d.device) + "}"; }
std::string conv_key(std::string_view id) { return "{c:" + std::string(id) + "}"; }

// How many arguments an op takes, code included, for both the ops RedisStore::commit builds
// and the lower-case ones of the split groups (redis_scripts.h kCommit's width(), which knows
// both); 0 for an unknown code or a bad count. A split group's 'A' carries media count "0".
size_t width(const std::vector<std::string_view>& a, size_t i) {
  const std::string_view op = a[i];
  auto count = [&](size_t at) -> size_t {
    size_t n = 0;
    if (at >= a.size()) return SIZE_MAX / 4;
    auto [p, ec] = std::from_chars(a[at].data(), a[at].data() + a[at].size(), n);
    return ec == std::errc() ? n : SIZE_MAX / 4;
  };
  if (op == "M" || op == "h" || op == "R" || op == "W" || op == "Q" || op == "T" || op == "m" || op == "z" || op == "p" ||
      op == "l")
    return 4;
  if (op == "I" || op == "D" || op == "P" || op == "G" || op == "i" || op == "j") return 5;
  if (op == "x" || op == "U" || op == "K" || op == "H" || op == "J" || op == "Z" || op == "N" || op == "n" ||
      op == "e" || op == "r" || op == "t")
    return 3;
  if (op == "k" || op == "L") return 2;
  if (op == "A") return 6 + count(i + 5);
  if (op == "E") return 4 + count(i + 3);
  if (op == "C") return 4 + 2 * count(i + 3);
  if (op == "c") return 4 + count(i + 3);
  return 0;
}

// The scripts of one phase, keyed by slot; each starts with the dense flag.
struct Group {
  std::string_view routing_key;  // a key of the slot (KEYS[1]: Redis routes and checks it)
  std::vector<std::string_view> args;
};
using Phase = std::map<uint16_t, Group>;

// One script of a phase: the groups of several slots that one master serves (as far as this
// client's map says), run as one. Redis lets a script without a shebang touch keys of any slot
// its node serves (only keys of another node fail), so a commit costs one script per master
// and phase (one EVALSHA, one MULTI/EXEC in the AOF, one WAIT) instead of one per slot: a
// group post's inbox marks land on up to one slot per member. The script starts with op 'L'
// (a read of one key) for each of its slots but the first, whose key routes it, unless the
// script's checks read a key of that slot anyway (reads_in_checks): a slot that moved since
// the map was read (a reshard) fails the script before it wrote anything, with "non local key"; run_phase() then reads the topology again and runs those slots one script
// each, which follows MOVED and ASK.
struct Merged {
  std::vector<uint16_t> slots;  // slots[0]'s key routes the script
  Group group;
};

// Whether the script's checks read a key of the group's slot before anything is written (see
// redis_scripts.h kCommit): then that read fails the script as 'L' would, and the slot needs
// no 'L'. `dense`: the commit's dense-appends flag (an append reads its log only then).
bool reads_in_checks(const Group& g, bool dense) {
  for (size_t i = 0; i < g.args.size();) {
    const std::string_view op = g.args[i];
    if (op == "p" || op == "m" || op == "j" || op == "T" || op == "n" || op == "e" || op == "l" || (op == "A" && dense))
      return true;
    const size_t w = width(g.args, i);
    if (w == 0) return false;
    i += w;
  }
  return false;
}

std::vector<Merged> merge_by_node(const RedisCluster& cluster, const Phase& phase, bool merge, bool dense) {
  std::vector<Merged> out;
  std::map<int, size_t> by_node;  // node index → its script in `out`
  for (const auto& [slot, g] : phase) {
    const int node = merge ? cluster.node_of(slot) : -1;
    auto it = node < 0 ? by_node.end() : by_node.find(node);
    if (it == by_node.end()) {
      if (node >= 0) by_node.emplace(node, out.size());
      out.push_back(Merged{{slot}, Group{g.routing_key, {}}});
      continue;
    }
    Merged& m = out[it->second];
    m.slots.push_back(slot);
    if (!reads_in_checks(g, dense)) m.group.args.insert(m.group.args.begin(), {"L", g.routing_key});
  }
  // Each script's ops after its 'L' checks, slot by slot (a slot's ops keep their order).
  for (Merged& m : out)
    for (uint16_t slot : m.slots) {
      const std::vector<std::string_view>& ops = phase.at(slot).args;
      m.group.args.insert(m.group.args.end(), ops.begin(), ops.end());
    }
  return out;
}

// A commit whose phase-1 slots all live on one master X (the common case: one conversation,
// or several on one master) needs no phase-0 script on X: X's phase-0 groups join its phase-1
// script, ahead of a slot's phase-1 ops, and apply atomically with them, while phase 0 on the
// other masters still runs first. That saves a script, its AOF write and its fsync on X.
// (With phase-1 work on several masters, a mark on one could land after an append on another:
// no fold.) Returns the phases as they were if it folded (a folded script that meets a moved
// slot runs them apart), nothing if it did not.
struct Unfolded {
  Phase zero, one;  // zero: only the groups that were folded
  bool empty() const { return zero.empty(); }
};
Unfolded fold_into_phase_one(const RedisCluster& cluster, Phase phases[2]) {
  if (phases[1].empty()) return {};
  const int x = cluster.node_of(phases[1].begin()->first);
  if (x < 0) return {};
  for (const auto& [slot, g] : phases[1])
    if (cluster.node_of(slot) != x) return {};
  bool any = false;
  for (const auto& [slot, g] : phases[0]) any = any || cluster.node_of(slot) == x;
  if (!any) return {};
  Unfolded before;
  before.one = phases[1];
  Phase& folded = before.zero;
  for (auto it = phases[0].begin(); it != phases[0].end();) {
    if (cluster.node_of(it->first) != x) {
      ++it;
      continue;
    }
    Group& one = phases[1][it->first];
    if (one.routing_key.empty()) one.routing_key = it->second.routing_key;
    one.args.insert(one.args.begin(), it->second.args.begin(), it->second.args.end());
    folded.insert(phases[0].extract(it++));
  }
  return before;
}

// What one phase did. `applied`: the replies of the scripts that applied. `behind`: the
// conversations whose dense appends a script found behind; `pointers`: (pointer hash,
// client_msg_id, the conversation it names) of the idempotency pointers a script found naming
// another conversation; `again_slots`: the slots of the scripts that reported either, which
// wrote nothing (the other scripts applied: each is atomic on its own). `stale`: a folded
// script met a slot that had moved and wrote nothing (run_phase did not split it).
struct PhaseResult {
  std::vector<Reply> applied;
  std::vector<std::string> behind;
  std::vector<std::array<std::string, 3>> pointers;
  std::set<uint16_t> again_slots;
  bool stale = false;
};

bool non_local(const redisReply* r) {
  return r->type == REDIS_REPLY_ERROR && str(r).find("non local key") != std::string_view::npos;
}

// `folded`: the phase's scripts hold ops of both phases (fold_into_phase_one), so a merged
// script that meets a moved slot is not run again slot by slot (that would put one slot's
// marks beside another's appends, in parallel): out.stale instead.
Result<void> run_phase(RedisCluster& cluster, const ClusterScript& script, const Phase& phase, std::string_view dense,
                       int wait_replicas, std::chrono::milliseconds timeout, bool folded, PhaseResult& out) {
  const std::string n = std::to_string(wait_replicas), ms = std::to_string(timeout.count() / 2);
  auto command = [&](std::string_view verb, std::string_view body, const Group& g) {
    std::vector<std::string_view> argv = {verb, body, "1", g.routing_key, dense};
    argv.insert(argv.end(), g.args.begin(), g.args.end());
    std::vector<std::vector<std::string_view>> cmds = {std::move(argv)};
    if (wait_replicas > 0) cmds.push_back({"WAIT", n, ms});
    return cmds;
  };
  // The scripts, all nodes at once; a node that never saw the script (a new master, a
  // restart) gets it whole.
  auto run = [&](const std::vector<Merged>& scripts) -> Result<std::vector<std::vector<Reply>>> {
    std::vector<SlotCommands> batches;
    for (const Merged& m : scripts) batches.push_back(SlotCommands{m.slots[0], command("EVALSHA", script.sha, m.group)});
    scripts_total.inc(scripts.size());
    auto replies = cluster.run_many(batches);
    if (!replies) return replies.error();
    for (size_t i = 0; i < scripts.size(); ++i) {
      std::vector<Reply>& r = (*replies)[i];
      if (r[0]->type == REDIS_REPLY_ERROR && str(r[0].get()).rfind("NOSCRIPT", 0) == 0) {
        auto again = cluster.run(scripts[i].slots[0], command("EVAL", script.text, scripts[i].group));
        if (!again) return again.error();
        r = std::move(*again);
      }
    }
    return replies;
  };
  std::vector<Merged> scripts = merge_by_node(cluster, phase, true, dense != "0");
  auto replies = run(scripts);
  if (!replies) return replies.error();
  // A merged script that met a slot of another node wrote nothing: the map is stale. Those
  // slots again, one script each, after the topology is read again.
  // `ran_again[i]`: script i was such a script; its reply is not the commit's answer.
  Phase moved;
  std::vector<bool> ran_again(scripts.size(), false);
  for (size_t i = 0; i < scripts.size(); ++i) {
    ran_again[i] = scripts[i].slots.size() > 1 && non_local((*replies)[i][0].get());
    if (ran_again[i])
      for (uint16_t slot : scripts[i].slots) moved.emplace(slot, phase.at(slot));
  }
  if (!moved.empty() && folded) {
    out.stale = true;
    return {};
  }
  if (!moved.empty()) {
    moved_slots_total.inc(moved.size());
    if (auto r = cluster.refresh(); !r) return r.error();
    std::vector<Merged> single = merge_by_node(cluster, moved, false, dense != "0");
    auto again = run(single);
    if (!again) return again.error();
    scripts.insert(scripts.end(), std::make_move_iterator(single.begin()), std::make_move_iterator(single.end()));
    replies->insert(replies->end(), std::make_move_iterator(again->begin()), std::make_move_iterator(again->end()));
    ran_again.resize(scripts.size(), false);  // the single-slot scripts' replies are answers
  }
  for (size_t i = 0; i < scripts.size(); ++i) {
    std::vector<Reply>& r = (*replies)[i];
    if (ran_again[i]) continue;  // its slots ran again above
    if (r[0]->type == REDIS_REPLY_ERROR) return redis_reply_error(str(r[0].get()));
    if (Store::Behind late; behind_reply(r[0].get(), late)) {
      out.behind.insert(out.behind.end(), late.conversations.begin(), late.conversations.end());
      out.again_slots.insert(scripts[i].slots.begin(), scripts[i].slots.end());
      continue;
    }
    if (const redisReply* x = r[0].get();
        x->type == REDIS_REPLY_ARRAY && x->elements > 0 && x->element[0]->type == REDIS_REPLY_STRING &&
        str(x->element[0]) == "TERNIDP") {
      for (size_t k = 1; k + 2 < x->elements; k += 3)
        out.pointers.push_back({std::string(str(x->element[k])), std::string(str(x->element[k + 1])),
                                std::string(str(x->element[k + 2]))});
      out.again_slots.insert(scripts[i].slots.begin(), scripts[i].slots.end());
      continue;
    }
    if (wait_replicas > 0 && (r[1]->type != REDIS_REPLY_INTEGER || r[1]->integer < wait_replicas))
      return make_error(ErrorCode::kUnavailable, "redis: too few replicas acknowledged the write");
    out.applied.push_back(std::move(r[0]));
  }
  return {};
}

// A record read from `hash` (a reply to HGET): none when absent or expired before now_ms.
Result<std::optional<IdempotencyRecord>> unexpired_record(Result<Reply> v, int64_t now_ms) {
  if (!v) return v.error();
  if ((*v)->type == REDIS_REPLY_ERROR) return redis_reply_error(str(v->get()));
  if ((*v)->type != REDIS_REPLY_STRING) return std::optional<IdempotencyRecord>{};
  auto rec = rocks::decode_idempotency(std::string(str(v->get())));
  if (!rec) return make_error(ErrorCode::kInternal, "redis: corrupt idempotency");
  if (now_ms > rec->expires_at) return std::optional<IdempotencyRecord>{};
  return std::optional<IdempotencyRecord>(std::move(*rec));
}

// A group without the ops of `conversations`: their appends, idempotency checks, records and
// pointers, and meta; its other ops stay (an inbox mark past the log's head is harmless).
// `own` keeps the strings it makes.
template <typename Own>
Result<Group> without(const Group& in, const std::set<std::string_view>& conversations, Own& own) {
  std::set<std::string_view> records;
  for (std::string_view c : conversations) records.insert(own(conv_key(c) + ":idem"));
  Group g;
  g.routing_key = in.routing_key;
  const std::vector<std::string_view>& ops = in.args;
  for (size_t i = 0; i < ops.size();) {
    const size_t w = width(ops, i);
    if (w == 0 || i + w > ops.size()) return make_error(ErrorCode::kInternal, "redis: unknown commit op");
    const std::string_view op = ops[i];
    const bool drop = ((op == "A" || op == "j" || op == "c" || op == "e" || op == "l") && conversations.count(ops[i + 1])) ||
                      (op == "h" && records.count(ops[i + 1])) || (op == "p" && conversations.count(ops[i + 3]));
    if (!drop)
      g.args.insert(g.args.end(), ops.begin() + static_cast<ptrdiff_t>(i), ops.begin() + static_cast<ptrdiff_t>(i + w));
    i += w;
  }
  return g;
}

}  // namespace

Error redis_reply_error(std::string_view message) {
  const std::string msg(message);
  if (msg.rfind("TERNDEV", 0) == 0) return make_error(ErrorCode::kExists, "device already exists");
  if (msg.rfind("TERNCONV", 0) == 0) return make_error(ErrorCode::kExists, "the conversation changed meanwhile");
  const bool transient = msg.rfind("TERNSEQ", 0) == 0 || msg.rfind("TERNTAKE", 0) == 0 || msg.rfind("LOADING", 0) == 0 || msg.rfind("READONLY", 0) == 0 ||
                         msg.rfind("BUSY", 0) == 0 || msg.rfind("MASTERDOWN", 0) == 0 ||
                         msg.rfind("TRYAGAIN", 0) == 0 || msg.rfind("CLUSTERDOWN", 0) == 0 ||
                         msg.rfind("MOVED", 0) == 0 || msg.rfind("ASK", 0) == 0;
  return make_error(transient ? ErrorCode::kUnavailable : ErrorCode::kInternal, "redis: " + msg);
}

bool behind_reply(const redisReply* r, Store::Behind& out) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0 || r->element[0]->type != REDIS_REPLY_STRING ||
      str(r->element[0]) != "TERNSEQ")
    return false;
  // Each id is followed by its head in the store, which no one uses (the sequencer reads the
  // head again when it reloads: SequencerCore::state).
  for (size_t i = 1; i + 1 < r->elements; i += 2) out.conversations.emplace_back(str(r->element[i]));
  return true;
}

Error behind_error() {
  return make_error(ErrorCode::kUnavailable, "redis: TERNSEQ another node appended to the conversation first");
}

namespace {

Counter& redos_total = MetricsRegistry::global().counter(
    "tern_redis_change_redos_total",
    "channel changes whose Cluster commit stopped between its lease and phase 1, made by the next change");

// The ops of `a` that make conversation `id`'s change (its redo record, redis_change_lease.h):
// its first 'e' first, then its other 'e' and its 'C' ops and the subscription rows ('h' or
// 'x' of a {u:<user>}:ix, field `id`), in order. None if `a` appends to it: a change that takes
// a seq writes nothing of it in phase 0, and a send's append must not be made without its
// idempotency record.
std::vector<std::string_view> change_ops(const std::vector<std::string_view>& a, std::string_view id) {
  std::vector<std::string_view> first, rest;
  for (size_t i = 1; i < a.size();) {
    const size_t w = width(a, i);
    if (w == 0 || i + w > a.size()) return {};
    const std::string_view op = a[i];
    if (op == "A" && a[i + 1] == id) return {};
    const bool mine = ((op == "e" || op == "C") && a[i + 1] == id) ||
                      ((op == "h" || op == "x") && a[i + 1].ends_with("}:ix") && a[i + 2] == id);
    if (mine) {
      auto& to = op == "e" && first.empty() ? first : rest;
      to.insert(to.end(), a.begin() + static_cast<ptrdiff_t>(i), a.begin() + static_cast<ptrdiff_t>(i + w));
    }
    i += w;
  }
  first.insert(first.end(), rest.begin(), rest.end());
  return first;
}

// `redo_first`: filled (and the commit refused, `exists`) when a conversation's lease came
// with the ops of a change that stopped half way, to be made first (ChangeLeases::take).
Result<void> commit_split(RedisCluster& cluster, const ClusterScript& script, const std::vector<std::string_view>& a,
                          int wait_replicas, std::chrono::milliseconds timeout, Store::Behind& behind,
                          ChangeLeases& leases, std::vector<std::string>& redo_first) {
  std::deque<std::string> owned;  // strings the views below point into
  auto own = [&](std::string s) -> std::string_view { return owned.emplace_back(std::move(s)); };
  Phase phases[2];
  auto add = [&](int phase, std::string_view routing_key, std::initializer_list<std::string_view> op) {
    Group& g = phases[phase][key_slot(routing_key)];
    if (g.routing_key.empty()) g.routing_key = routing_key;
    g.args.insert(g.args.end(), op);
  };
  // PutDevice replaces a token: the old one is read first so that its key is deleted
  // (phase 0) before the device row names the new one (phase 1).
  // (user key, device) → its token as of the op being split (a device may appear twice).
  std::map<std::pair<std::string_view, std::string_view>, std::string> tokens;
  // Conversation id → its member users as of the op being split: a membership change drops
  // the index rows of removed users in phase 0, before the meta stops listing them, so a
  // retry after a crash in between computes the same removals again.
  std::map<std::string_view, std::set<std::string>> members;
  // (user key, device) of the devices that must be new (op 'n', right before their 'D').
  std::set<std::pair<std::string_view, std::string_view>> must_be_new;
  // Conversation id → the meta an earlier 'C' of the commit writes (for op 'e').
  std::map<std::string_view, std::string_view> metas;
  for (size_t i = 1; i < a.size();) {
    const size_t w = width(a, i);
    if (w == 0 || i + w > a.size()) return make_error(ErrorCode::kInternal, "redis: unknown commit op");
    if (a[i] == "n") must_be_new.emplace(a[i + 1], a[i + 2]);
    if (a[i] == "D" && !tokens.count({a[i + 1], a[i + 2]})) {
      const std::string key = std::string(a[i + 1]) + ":d";
      auto r = cluster.run1(key_slot(key), {"HGET", key, a[i + 2]});
      if (!r) return r.error();
      if ((*r)->type == REDIS_REPLY_ERROR) return redis_reply_error(str(r->get()));
      // A device that must be new and is there already: refused before phase 0 (which would
      // delete the token of the device's current owner).
      if ((*r)->type == REDIS_REPLY_STRING && must_be_new.count({a[i + 1], a[i + 2]}))
        return make_error(ErrorCode::kExists, "device already exists");
      tokens[{a[i + 1], a[i + 2]}] = (*r)->type == REDIS_REPLY_STRING ? std::string(str(r->get())) : "";
    }
    if (a[i] == "e") {
      // A record that must be unchanged (a channel's change): checked here too, taking the
      // conversation's change lease (redis_change_lease.h), so that a change refused for it
      // is refused before phase 0 writes its subscription and index rows, and no other
      // node's change lands between phase 0 and the conversation's phase-1 script, which
      // checks the record and the lease again atomically. One that an earlier 'C' of this
      // commit writes needs no lease: this commit already holds it, or made the record.
      if (auto it = metas.find(a[i + 1]); it != metas.end()) {
        if (it->second != a[i + 2]) return make_error(ErrorCode::kExists, "the conversation changed meanwhile");
      } else if (leases.token_for(a[i + 1]).empty()) {
        auto redo = leases.take(a[i + 1], a[i + 2], change_ops(a, a[i + 1]));
        if (!redo) return redo.error();
        if (!redo->empty()) {
          redo_first = std::move(*redo);
          return make_error(ErrorCode::kExists, "a change of the conversation that stopped half way is made first");
        }
      }
    }
    if (a[i] == "C") metas[a[i + 1]] = a[i + 2];
    if (a[i] == "C" && !members.count(a[i + 1])) {
      const std::string key = conv_key(a[i + 1]) + ":mu";
      auto r = cluster.run1(key_slot(key), {"SMEMBERS", key});
      if (!r) return r.error();
      if ((*r)->type == REDIS_REPLY_ERROR) return redis_reply_error(str(r->get()));
      std::set<std::string>& m = members[a[i + 1]];
      if ((*r)->type == REDIS_REPLY_ARRAY)
        for (size_t k = 0; k < (*r)->elements; ++k) m.emplace(str((*r)->element[k]));
    }
    i += w;
  }
  // (pointer hash, client_msg_id) → the conversation of that send.
  std::map<std::pair<std::string_view, std::string_view>, std::string_view> sends;
  // The `now` of the idempotency check ('i') of the PutIdempotency that follows it: that
  // record's 'I' adds the check to its conversation's script ('j'), before the record's write.
  std::string_view check_now;
  for (size_t i = 1; i < a.size();) {
    const size_t w = width(a, i);
    const std::string_view op = a[i];
    if (op == "i") {
      // a[i+1] idemexp member, a[i+2] conversation id, a[i+3] now, a[i+4] expiry.
      check_now = a[i + 3];
    } else if (op == "A") {
      // a[i+1] conversation id, a[i+2] seq, a[i+3] frame, a[i+4] expires_at, a[i+5] media
      // count, then the media ids. The log append in the conversation's script (phase 1); its
      // media references and expiry entry (other slots) in phase 0.
      const std::string_view conv = own(conv_key(a[i + 1]));
      add(1, conv, {"A", a[i + 1], a[i + 2], a[i + 3], "0", "0"});
      const std::string_view member = own(std::string(a[i + 1]) + '\0' + std::string(a[i + 2]));
      std::string ids;
      for (size_t j = i + 6; j < i + w; ++j) {
        const std::string_view m = own("{m:" + std::string(a[j]) + "}");
        add(0, m, {"z", own(std::string(m) + ":r"), "0", member});
        add(0, m, {"h", own(std::string(m) + ":rx"), member, a[i + 4]});
        ids += a[j];
      }
      if (a[i + 4] != "0") {
        add(0, kMsgExp, {"z", kMsgExp, a[i + 4], member});
        add(0, kMsgExp, {"h", kMsgExpValues, member, own(std::move(ids))});
      }
    } else if (op == "E") {
      // a[i+1] conversation id, a[i+2] seq, a[i+3] media count, then the media ids.
      const std::string_view member = own(std::string(a[i + 1]) + '\0' + std::string(a[i + 2]));
      add(0, kMsgExp, {"r", kMsgExp, member});
      add(0, kMsgExp, {"x", kMsgExpValues, member});
      for (size_t j = i + 4; j < i + w; ++j) {
        const std::string_view m = own("{m:" + std::string(a[j]) + "}");
        add(0, m, {"r", own(std::string(m) + ":r"), member});
        add(0, m, {"x", own(std::string(m) + ":rx"), member});
      }
    } else if (op == "U") {
      // a[i+1] user id, a[i+2] created_ts: the account and the user listing.
      const std::string_view u = own("{u:" + std::string(a[i + 1]) + "}");
      add(0, u, {"h", own(std::string(u) + ":a"), "c", a[i + 2]});
      add(0, kUsers, {"z", kUsers, "0", a[i + 1]});
    } else if (op == "G") {
      // a[i+1] media id, a[i+2] owner, a[i+3] size, a[i+4] created_ts.
      const std::string_view m = own("{m:" + std::string(a[i + 1]) + "}");
      const std::string_view u = own("{u:" + std::string(a[i + 2]) + "}");
      add(0, m, {"h", own(std::string(m) + ":o"), a[i + 2], own(std::string(a[i + 3]) + " " + std::string(a[i + 4]))});
      add(0, u, {"z", own(std::string(u) + ":me"), "0", a[i + 1]});
      add(0, u, {"h", own(std::string(u) + ":ms"), a[i + 1], a[i + 3]});
      add(0, kPending, {"z", kPending, a[i + 4], own(std::string(a[i + 1]) + std::string(a[i + 2]))});
    } else if (op == "H") {
      const std::string_view m = own("{m:" + std::string(a[i + 1]) + "}");
      const std::string_view u = own("{u:" + std::string(a[i + 2]) + "}");
      add(0, m, {"x", own(std::string(m) + ":o"), a[i + 2]});
      add(0, u, {"r", own(std::string(u) + ":me"), a[i + 1]});
      add(0, u, {"x", own(std::string(u) + ":ms"), a[i + 1]});
    } else if (op == "J") {
      add(0, kPending, {"r", kPending, own(std::string(a[i + 1]) + std::string(a[i + 2]))});
    } else if (op == "N") {
      add(0, kReports, {"z", kReports, "0", a[i + 1]});
      add(0, kReports, {"h", kReportValues, a[i + 1], a[i + 2]});
    } else if (op == "R") {
      // A receipt is a blind put (nothing orders it against an append): phase 0, so that a
      // commit of acks alone runs in one round.
      add(0, a[i + 1], {op, a[i + 1], a[i + 2], a[i + 3]});
    } else if (op == "M") {
      add(0, a[i + 1], {"m", a[i + 1], a[i + 2], a[i + 3]});
    } else if (op == "I") {
      // a[i+1] device key, a[i+2] client_msg_id, a[i+3] record, a[i+4] expiry.
      auto rec = rocks::decode_idempotency(std::string(a[i + 3]));
      if (!rec) return make_error(ErrorCode::kInternal, "redis: bad idempotency record");
      const std::string_view conv = own(conv_key(rec->conversation_id));
      const std::string_view field = own(record_field(a[i + 1], a[i + 2]));
      // With the check, the pointer's write reports one naming another conversation ('p');
      // without it (a store without dense appends: tests and tools), it is blind ('h').
      const std::string_view pointer = own(std::string(a[i + 1]) + ":idp");
      const bool checked = !check_now.empty();
      add(0, a[i + 1], {checked ? "p" : "h", pointer, a[i + 2], own(rec->conversation_id)});
      if (checked) sends[{pointer, a[i + 2]}] = own(rec->conversation_id);
      // Each expiry entry in its own slot's index, in the script of the pointer or record it
      // indexes (so the entry exists whenever they do; a dropped send may leave its record's
      // entry, which the purge finds naming nothing).
      add(0, a[i + 1], {"z", slot_index_key(key_slot(a[i + 1])), a[i + 4], own(index_member(pointer, a[i + 2]))});
      const std::string_view hash = own(std::string(conv) + ":idem");
      if (checked) add(1, conv, {"j", own(rec->conversation_id), hash, field, check_now});
      check_now = {};
      add(1, conv, {"h", hash, field, a[i + 3]});
      add(1, conv, {"z", slot_index_key(key_slot(conv)), a[i + 4], own(index_member(hash, field))});
    } else if (op == "C") {
      // a[i+1] conversation id, a[i+2] meta, a[i+3] rows, then (user, row) pairs.
      const std::string_view conv = own(conv_key(a[i + 1]));
      Group& g = phases[1][key_slot(conv)];
      if (g.routing_key.empty()) g.routing_key = conv;
      g.args.insert(g.args.end(), {"c", a[i + 1], a[i + 2], a[i + 3]});
      std::set<std::string>& before = members[a[i + 1]];
      std::set<std::string> now;
      for (size_t j = i + 4; j < i + w; j += 2) now.emplace(a[j]);
      for (const std::string& u : before)
        if (!now.count(u)) add(0, own("{u:" + u + "}"), {"x", own("{u:" + u + "}:ix"), a[i + 1]});
      for (size_t j = i + 4; j < i + w; j += 2) {
        g.args.push_back(a[j]);
        add(0, own("{u:" + std::string(a[j]) + "}"), {"h", own("{u:" + std::string(a[j]) + "}:ix"), a[i + 1], a[j + 1]});
      }
      before = std::move(now);
    } else if (op == "e") {
      // In the conversation's phase-1 script, before its 'c' (checked before anything is
      // written), after the lease's check ('l', which also gives the lease back).
      const std::string_view conv = own(conv_key(a[i + 1]));
      if (const std::string_view token = leases.token_for(a[i + 1]); !token.empty())
        add(1, conv, {"l", a[i + 1], token, leases.redo_token_for(a[i + 1])});
      add(1, conv, {"e", a[i + 1], a[i + 2]});
    } else if (op == "n") {
      // The device must be new: checked again in its slot's phase-1 script, right before its
      // row is written there (two nodes linking it at once: one of them gets TERNDEV).
      add(1, a[i + 1], {"n", a[i + 1], a[i + 2]});
    } else if (op == "D") {
      // a[i+1] user key, a[i+2] device, a[i+3] token hash, a[i+4] token value.
      std::string& old = tokens[{a[i + 1], a[i + 2]}];
      if (old != a[i + 3] && !old.empty()) add(0, own("{t:" + old + "}"), {"k", own(old)});
      old = std::string(a[i + 3]);
      if (!a[i + 3].empty()) add(0, own("{t:" + std::string(a[i + 3]) + "}"), {"t", a[i + 3], a[i + 4]});
      add(1, a[i + 1], {"h", own(std::string(a[i + 1]) + ":d"), a[i + 2], a[i + 3]});
    } else {
      // h, x, K, P, Q, T, W, Z: one key's slot (a device's or a user's).
      Group& g = phases[0][key_slot(a[i + 1])];
      if (g.routing_key.empty()) g.routing_key = a[i + 1];
      g.args.insert(g.args.end(), a.begin() + static_cast<ptrdiff_t>(i), a.begin() + static_cast<ptrdiff_t>(i + w));
    }
    i += w;
  }
  // Runs one phase until each of its scripts applied. A script that found conversations
  // behind, or an idempotency pointer naming another conversation, wrote nothing: each such
  // pointer is decided (the device used the client_msg_id in that conversation before: if it
  // holds the unexpired record, the send is a repeat, an id counting per device,
  // docs/protocol.md §7.3; else the id was never stored there, or expired, and the pointer
  // moves to this send's conversation), and those scripts run again without the
  // conversations behind and the repeats. Bounded: if another node keeps winning, the rest is
  // `unavailable` as a whole (the resends are answered from the records of whatever applied).
  Store::Behind late;
  // Conversations whose sends this commit no longer applies: repeats, and those behind.
  std::set<std::string_view> dropped;
  auto settle = [&](Phase run, bool folded, bool& stale) -> Result<void> {
    for (int round = 0; !run.empty(); ++round) {
      if (round == 4) return make_error(ErrorCode::kUnavailable, "redis: dense appends kept failing");
      PhaseResult one;
      if (auto r = run_phase(cluster, script, run, a[0], wait_replicas, timeout, folded, one); !r) return r.error();
      if (one.stale) {
        stale = true;
        return {};
      }
      late.conversations.insert(late.conversations.end(), one.behind.begin(), one.behind.end());
      for (const std::string& c : one.behind) dropped.insert(own(c));
      for (const auto& [pointer, id, other] : one.pointers) {
        auto send = sends.find({pointer, id});
        if (send == sends.end()) return make_error(ErrorCode::kInternal, "redis: unknown idempotency pointer");
        const std::string hash = conv_key(other) + ":idem";
        const std::string device = pointer.substr(0, pointer.size() - 4);  // less ":idp"
        auto rec = unexpired_record(cluster.run1(key_slot(hash), {"HGET", hash, record_field(device, id)}), now_ms());
        if (!rec) return rec.error();
        if (*rec) {
          dropped.insert(send->second);
          late.conversations.emplace_back(send->second);
          continue;
        }
        auto set = cluster.run1(key_slot(pointer), {"HSET", pointer, id, send->second});
        if (!set) return set.error();
        if ((*set)->type == REDIS_REPLY_ERROR) return redis_reply_error(str(set->get()));
      }
      Phase again;
      for (uint16_t slot : one.again_slots) {
        auto g = without(run[slot], dropped, own);
        if (!g) return g.error();
        if (!g->args.empty()) again.emplace(slot, std::move(*g));
      }
      run = std::move(again);
    }
    return {};
  };
  // A phase without the sends dropped so far (a repeat's pointer names another conversation,
  // which keeps it).
  auto without_dropped = [&](Phase& phase) -> Result<void> {
    if (dropped.empty()) return {};
    Phase kept;
    for (auto& [slot, g] : phase) {
      auto rest = without(g, dropped, own);
      if (!rest) return rest.error();
      if (!rest->args.empty()) kept.emplace(slot, std::move(*rest));
    }
    phase = std::move(kept);
    return {};
  };
  Unfolded unfolded = fold_into_phase_one(cluster, phases);
  const bool folded = !unfolded.empty();
  bool stale = false;
  if (auto r = settle(std::move(phases[0]), false, stale); !r) return r.error();
  if (auto r = without_dropped(phases[1]); !r) return r.error();
  if (auto r = settle(std::move(phases[1]), folded, stale); !r) return r.error();
  if (stale) {
    // The folded script met a slot that had moved and wrote nothing: the map is read again and
    // the master's phase-0 groups run first, then phase 1, each split as the new map says.
    std::set<uint16_t> slots;
    for (const Phase* p : {&unfolded.zero, &unfolded.one})
      for (const auto& [slot, g] : *p) slots.insert(slot);
    moved_slots_total.inc(slots.size());
    if (auto r = cluster.refresh(); !r) return r.error();
    Phase zero = std::move(unfolded.zero), one = std::move(unfolded.one);
    bool again = false;
    if (auto r = without_dropped(zero); !r) return r.error();
    if (auto r = settle(std::move(zero), false, again); !r) return r.error();
    if (auto r = without_dropped(one); !r) return r.error();
    if (auto r = settle(std::move(one), false, again); !r) return r.error();
  }
  if (late.conversations.empty()) return {};
  // Phase 0 of those conversations' sends applied: blind, idempotent puts (an inbox mark that
  // only moves forward, an idempotency pointer without a record) that the resend repeats.
  behind = std::move(late);
  behind.rest_applied = true;
  return behind_error();
}

}  // namespace

Result<void> commit_on_cluster(RedisCluster& cluster, const ClusterScript& script,
                               const std::vector<std::string_view>& a, int wait_replicas,
                               std::chrono::milliseconds timeout, Store::Behind& behind) {
  ChangeLeases leases(cluster, ChangeLeases::kLifeInTimeouts * timeout);
  std::vector<std::string> redo;
  auto r = commit_split(cluster, script, a, wait_replicas, timeout, behind, leases, redo);
  if (!redo.empty()) {
    // A change whose commit stopped between its lease and phase 1 (its node died): made now,
    // under this commit's lease. This commit counted from the record before it: refused, and
    // made again by its caller. A record that cannot be made is dropped, so that it cannot
    // hold the conversation's changes up.
    std::vector<std::string_view> ops{a[0]};
    ops.insert(ops.end(), redo.begin(), redo.end());
    Store::Behind ignored;
    std::vector<std::string> none;
    auto made = commit_split(cluster, script, ops, wait_replicas, timeout, ignored, leases, none);
    if (made) redos_total.inc();
    leases.release(/*drop_others=*/!made);
    return made ? r : made.error();
  }
  // A commit that succeeded gave its leases back in phase 1 (op 'l'); one that failed may not
  // have reached it.
  if (!r) leases.release();
  return r;
}

Result<std::optional<IdempotencyRecord>> idempotency_on_cluster(RedisCluster& cluster, const DeviceRef& device,
                                                                const std::string& client_msg_id, int64_t now_ms) {
  const std::string dk = device_key(device);
  const std::string pointer = dk + ":idp";
  auto conv = cluster.run1(key_slot(pointer), {"HGET", pointer, client_msg_id});
  if (!conv) return conv.error();
  if ((*conv)->type == REDIS_REPLY_ERROR) return redis_reply_error(str(conv->get()));
  if ((*conv)->type != REDIS_REPLY_STRING) return std::optional<IdempotencyRecord>{};
  // The pointer is written before the message: no record (yet) means not sent.
  const std::string hash = conv_key(str(conv->get())) + ":idem";
  return unexpired_record(cluster.run1(key_slot(hash), {"HGET", hash, record_field(dk, client_msg_id)}), now_ms);
}

Result<std::optional<IdempotencyRecord>> send_idempotency_on_cluster(RedisCluster& cluster, const DeviceRef& device,
                                                                     const std::string& client_msg_id,
                                                                     const std::string& conversation_id, int64_t now_ms) {
  const std::string dk = device_key(device);
  const std::string hash = conv_key(conversation_id) + ":idem";
  auto rec = unexpired_record(cluster.run1(key_slot(hash), {"HGET", hash, record_field(dk, client_msg_id)}), now_ms);
  if (!rec || *rec) return rec;
  // Not in this conversation: the device may have used the id in another one (it counts per
  // device); the pointer names where (the commit refused this send for that reason).
  const std::string pointer = dk + ":idp";
  auto conv = cluster.run1(key_slot(pointer), {"HGET", pointer, client_msg_id});
  if (!conv) return conv.error();
  if ((*conv)->type == REDIS_REPLY_ERROR) return redis_reply_error(str(conv->get()));
  if ((*conv)->type != REDIS_REPLY_STRING || str(conv->get()) == conversation_id) return rec;
  const std::string other = conv_key(str(conv->get())) + ":idem";
  return unexpired_record(cluster.run1(key_slot(other), {"HGET", other, record_field(dk, client_msg_id)}), now_ms);
}

std::string_view slot_index_key(uint16_t slot) {
  // The first of "0", "1", "2", ... (decimal) whose CRC16 lands in each slot: the same table on
  // every node, built once (about 170,000 CRCs; every slot is found below 10^6).
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k(kSlots);
    size_t found = 0;
    for (uint32_t n = 0; found < kSlots && n < 10'000'000; ++n) {
      const std::string tag = std::to_string(n);
      std::string& key = k[crc16_xmodem(tag) & (kSlots - 1)];
      if (!key.empty()) continue;
      key = std::string(kIdemIndex) + "{" + tag + "}";
      ++found;
    }
    return k;
  }();
  return slot < kSlots ? std::string_view(keys[slot]) : std::string_view();
}

Result<size_t> purge_on_cluster(RedisCluster& cluster, int64_t now_ms) {
  constexpr size_t kChunk = 1000;
  const std::string upto = "(" + std::to_string(now_ms), chunk = std::to_string(kChunk);
  // Every slot's index, and the global one that nodes before per-slot indexes wrote.
  std::vector<std::pair<uint16_t, std::string_view>> indexes = {{key_slot(kIdemIndex), kIdemIndex}};
  for (uint16_t slot = 0; slot < kSlots; ++slot) indexes.emplace_back(slot, slot_index_key(slot));
  size_t purged = 0;
  for (int round = 0; !indexes.empty() && round < 1'000'000; ++round) {
    std::vector<SlotCommands> reads;
    for (const auto& [slot, key] : indexes)
      reads.push_back(SlotCommands{slot, {{"ZRANGEBYSCORE", key, "-inf", upto, "LIMIT", "0", chunk}}});
    auto r = cluster.run_many(reads);
    if (!r) return r.error();
    // The expired entries' fields first (a crash before their ZREM leaves entries naming
    // nothing, which the next purge drops), then the entries.
    std::map<uint16_t, std::vector<std::vector<std::string_view>>> hdel, zrem;
    std::vector<std::pair<uint16_t, std::string_view>> full;  // indexes with more to read
    for (size_t i = 0; i < indexes.size(); ++i) {
      const redisReply* x = (*r)[i][0].get();
      if (x->type == REDIS_REPLY_ERROR) return redis_reply_error(str(x));
      if (x->type != REDIS_REPLY_ARRAY) return make_error(ErrorCode::kInternal, "redis: purge: unexpected reply");
      if (x->elements == 0) continue;
      if (x->elements == kChunk) full.push_back(indexes[i]);
      std::vector<std::string_view> z = {"ZREM", indexes[i].second};
      for (size_t k = 0; k < x->elements; ++k) {
        const std::string_view m = str(x->element[k]);
        z.push_back(m);
        const size_t colon = m.find(':');
        size_t len = 0;
        auto [p, ec] = std::from_chars(m.data(), m.data() + (colon == std::string_view::npos ? 0 : colon), len);
        if (colon == std::string_view::npos || ec != std::errc() || colon + 1 + len > m.size()) continue;
        const std::string_view key = m.substr(colon + 1, len), field = m.substr(colon + 1 + len);
        hdel[key_slot(key)].push_back({"HDEL", key, field});
        if (key.size() >= 5 && key.substr(key.size() - 5) == ":idem") ++purged;
      }
      zrem[indexes[i].first].push_back(std::move(z));
    }
    for (auto* step : {&hdel, &zrem}) {
      std::vector<SlotCommands> batches;
      for (auto& [slot, cmds] : *step) batches.push_back(SlotCommands{slot, std::move(cmds)});
      if (batches.empty()) continue;
      auto done = cluster.run_many(batches);
      if (!done) return done.error();
    }
    indexes = std::move(full);
  }
  return purged;
}

}  // namespace tern::store::redis
