#include "store/redis/redis_cluster.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <optional>
#include <thread>

#include <hiredis/hiredis.h>

#include "base/fiber.h"
#include "base/metrics.h"

namespace tern::store::redis {

namespace {
// Process-wide, over every RedisCluster (the store's and the bus's threads and fibers).
CounterFamily& redirects = MetricsRegistry::global().family(
    "tern_redis_redirects_total", "kind", "Redis Cluster redirections followed (MOVED: the slot has a new owner; ASK: a migration)");
Counter& moved_total = redirects.with("moved");
Counter& ask_total = redirects.with("ask");
Counter& refreshes_total =
    MetricsRegistry::global().counter("tern_redis_topology_refreshes_total", "reads of the Redis topology (CLUSTER SLOTS)");

using Clock = std::chrono::steady_clock;

std::string_view str(const redisReply* r) { return std::string_view(r->str, r->len); }

std::string address_text(const RedisAddress& a) {
  if (a.host.find(':') != std::string::npos) return "[" + a.host + "]:" + std::to_string(a.port);
  return a.host + ":" + std::to_string(a.port);
}

// "1" .. "65535" without a sign or anything after: the port; else 0.
uint16_t port_number(std::string_view p) {
  unsigned port = 0;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
  if (ec != std::errc() || end != p.data() + p.size() || port > 65535) return 0;
  return static_cast<uint16_t>(port);
}

// "host:port" (host may be an IPv6 address, bracketed or not: the port is after the last ':').
std::optional<RedisAddress> host_port(std::string_view s) {
  const size_t colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  const uint16_t port = port_number(s.substr(colon + 1));
  if (port == 0) return std::nullopt;
  std::string_view host = s.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return RedisAddress{std::string(host), port};
}

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381" (host may be an IPv6 address:
// the port is after the last ':').
struct Redirect {
  bool ask = false;
  RedisAddress to;
};
std::optional<Redirect> parse_redirect(const redisReply* r) {
  if (r->type != REDIS_REPLY_ERROR) return std::nullopt;
  std::string_view s = str(r);
  Redirect out;
  if (s.rfind("MOVED ", 0) == 0) {
    s.remove_prefix(6);
  } else if (s.rfind("ASK ", 0) == 0) {
    out.ask = true;
    s.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  const size_t sp = s.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  auto to = host_port(s.substr(sp + 1));
  if (!to) return std::nullopt;
  out.to = std::move(*to);
  return out;
}

// The first line of `text`, without its "\n" or "\r\n", taken off `text`.
std::string_view next_line(std::string_view& text) {
  const size_t eol = text.find('\n');
  std::string_view line = text.substr(0, eol);
  text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

// The replicas in a CLUSTER NODES reply: one line per node, "<id> <ip:port@cport[,hostname]>
// <flags> <master id> ...", flags comma-separated ("slave", "fail", "noaddr", ...). A node
// without an address (noaddr, or still in handshake) is left out: nothing could reach it.
std::vector<RedisAddress> replicas_in(std::string_view nodes) {
  std::vector<RedisAddress> out;
  while (!nodes.empty()) {
    std::string_view line = next_line(nodes);
    std::string_view field[3];
    for (auto& f : field) {
      const size_t sp = line.find(' ');
      f = line.substr(0, sp);
      line.remove_prefix(sp == std::string_view::npos ? line.size() : sp + 1);
    }
    const std::string flags = "," + std::string(field[2]) + ",";
    if (flags.find(",slave,") == std::string::npos || flags.find(",noaddr,") != std::string::npos ||
        flags.find(",handshake,") != std::string::npos)
      continue;
    if (auto a = host_port(field[1].substr(0, field[1].find('@')))) out.push_back(std::move(*a));
  }
  return out;
}

}  // namespace

std::vector<RedisAddress> replicas_in_info(std::string_view info) {
  std::vector<RedisAddress> out;
  while (!info.empty()) {
    std::string_view line = next_line(info);
    // "slave<digits>:" (other lines: "role:", "connected_slaves:", "master_repl_offset:", ...).
    if (line.rfind("slave", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 5 ||
        line.substr(5, colon - 5).find_first_not_of("0123456789") != std::string_view::npos)
      continue;
    line.remove_prefix(colon + 1);
    RedisAddress a{"", 0};  // not the default port: a line without port= is left out
    while (!line.empty()) {
      const size_t comma = line.find(',');
      const std::string_view field = line.substr(0, comma);
      line.remove_prefix(comma == std::string_view::npos ? line.size() : comma + 1);
      if (field.rfind("ip=", 0) == 0) a.host = std::string(field.substr(3));
      if (field.rfind("port=", 0) == 0) a.port = port_number(field.substr(5));
    }
    if (!a.host.empty() && a.port != 0) out.push_back(std::move(a));
  }
  return out;
}

uint16_t crc16_xmodem(std::string_view data) {
  // Polynomial 0x1021, initial value 0, no reflection, no final xor; bit by bit (keys are short).
  uint16_t crc = 0;
  for (unsigned char byte : data) {
    crc ^= static_cast<uint16_t>(byte) << 8;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : crc << 1;
  }
  return crc;
}

std::string_view hash_tag(std::string_view key) {
  const size_t open = key.find('{');
  if (open == std::string_view::npos) return key;
  const size_t close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

uint16_t key_slot(std::string_view key) { return crc16_xmodem(hash_tag(key)) % kSlots; }

Result<std::vector<RedisAddress>> parse_redis_urls(std::string_view urls, RedisCredentials* credentials, bool* tls) {
  std::vector<RedisAddress> out;
  bool named = false;  // a seed gave credentials: every seed that gives some gives the same
  while (true) {
    const size_t comma = urls.find(',');
    std::string_view one = urls.substr(0, comma);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    RedisCredentials c;
    bool seed_tls = false;
    auto a = parse_redis_url(one, credentials ? &c : nullptr, tls ? &seed_tls : nullptr);
    if (!a) return a.error();
    // One deployment, one transport: a mix would send the password in clear to some seeds.
    if (tls && !out.empty() && seed_tls != *tls)
      return make_error(ErrorCode::kInvalidArgument, "the Redis seed addresses mix redis:// and rediss://");
    if (tls) *tls = seed_tls;
    if (!c.empty()) {
      if (named && c != *credentials)
        return make_error(ErrorCode::kInvalidArgument, "the Redis seed addresses give different users or passwords");
      *credentials = std::move(c);
      named = true;
    }
    out.push_back(std::move(*a));
    if (out.size() > 64) return make_error(ErrorCode::kInvalidArgument, "too many Redis seed addresses (at most 64)");
    if (comma == std::string_view::npos) break;
    urls.remove_prefix(comma + 1);
  }
  return out;
}

RedisCluster::RedisCluster(RedisClusterOptions options)
    : options_(std::move(options)),
      own_(options_.topology ? nullptr : std::make_unique<ClusterTopology>()),
      t_(options_.topology ? *options_.topology : *own_) {
  // A shared topology's connections are the loop's: its fibers share both or neither.
  assert(!options_.topology || options_.shared);
  if (t_.backoff.count() == 0) t_.backoff = options_.retry_backoff;
  for (const RedisAddress& a : options_.seeds) node_index(a);
}

RedisCluster::~RedisCluster() = default;

Result<std::unique_ptr<RedisCluster>> RedisCluster::open(RedisClusterOptions options) {
  if (options.seeds.empty()) return make_error(ErrorCode::kInvalidArgument, "no Redis address");
  std::unique_ptr<RedisCluster> c(new RedisCluster(std::move(options)));
  if (c->t_.known) return c;  // another fiber of the loop read it
  auto r = c->refresh();
  if (!r) return r.error();
  return c;
}

int RedisCluster::node_index(const RedisAddress& address) {
  for (size_t i = 0; i < t_.nodes.size(); ++i)
    if (t_.nodes[i].address.host == address.host && t_.nodes[i].address.port == address.port) return static_cast<int>(i);
  t_.nodes.push_back(Node{address, nullptr});
  return static_cast<int>(t_.nodes.size() - 1);
}

Result<std::shared_ptr<RedisConnection>> RedisCluster::connect(int node, bool* fresh) {
  Node& n = t_.nodes[static_cast<size_t>(node)];
  if (n.conn && !n.conn->healthy()) n.conn.reset();
  if (fresh) *fresh = !n.conn;
  if (!n.conn && options_.shared) {
    // Another fiber of the loop may have made it: `fresh` only if made now.
    auto c = options_.shared->get(n.address, options_.connect_timeout, options_.command_timeout, options_.credentials,
                                  fresh);
    if (!c) return c.error();
    n.conn = std::move(c).value();
  } else if (!n.conn) {
    auto c = RedisConnection::connect(n.address, options_.connect_timeout, options_.command_timeout, options_.credentials);
    if (!c) return c.error();
    n.conn = std::move(c).value();
  }
  return n.conn;
}

void RedisCluster::drop(int node, const RedisConnection* conn) {
  Node& n = t_.nodes[static_cast<size_t>(node)];
  if (n.conn.get() == conn) n.conn.reset();
}

Result<RedisConnection*> RedisCluster::connection_for(uint16_t slot) {
  auto node = route(slot);
  if (!node) return node.error();
  auto c = connect(*node);
  if (!c) return c.error();
  return c->get();  // the node holds it (a client on a thread: until its next call)
}

Result<void> RedisCluster::refresh_from(const RedisAddress& address) {
  const int node = node_index(address);
  auto c = connect(node);
  if (!c) return c.error();
  auto r = (*c)->command({"CLUSTER", "SLOTS"});
  if (!r) return r.error();
  const redisReply* reply = r->get();
  if (reply->type == REDIS_REPLY_ERROR) {
    // A plain redis-server: every slot on it.
    if (str(reply).find("cluster support disabled") != std::string_view::npos) {
      t_.cluster = false;
      t_.slot_node.fill(static_cast<int16_t>(node));
      return {};
    }
    return make_error(ErrorCode::kUnavailable, "redis: CLUSTER SLOTS: " + std::string(str(reply)));
  }
  if (reply->type != REDIS_REPLY_ARRAY) return make_error(ErrorCode::kInternal, "redis: CLUSTER SLOTS: unexpected reply");
  std::array<int16_t, kSlots> map;
  map.fill(-1);
  size_t served = 0;
  for (size_t i = 0; i < reply->elements; ++i) {
    const redisReply* range = reply->element[i];
    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || range->element[0]->type != REDIS_REPLY_INTEGER ||
        range->element[1]->type != REDIS_REPLY_INTEGER || range->element[2]->type != REDIS_REPLY_ARRAY ||
        range->element[2]->elements < 2)
      return make_error(ErrorCode::kInternal, "redis: CLUSTER SLOTS: malformed range");
    const long long from = range->element[0]->integer, to = range->element[1]->integer;
    const redisReply* master = range->element[2];
    if (from < 0 || to >= kSlots || from > to || master->element[0]->type != REDIS_REPLY_STRING ||
        master->element[1]->type != REDIS_REPLY_INTEGER || master->element[1]->integer <= 0 ||
        master->element[1]->integer > 65535)
      return make_error(ErrorCode::kInternal, "redis: CLUSTER SLOTS: malformed range");
    RedisAddress a{std::string(str(master->element[0])), static_cast<uint16_t>(master->element[1]->integer)};
    // An empty (or unknown "?") address means "the node you asked".
    if (a.host.empty() || a.host == "?") a.host = address.host;
    const int16_t idx = static_cast<int16_t>(node_index(a));
    for (long long s = from; s <= to; ++s) map[static_cast<size_t>(s)] = idx;
    served += static_cast<size_t>(to - from + 1);
  }
  if (served == 0) return make_error(ErrorCode::kUnavailable, "redis: cluster serves no slot yet");
  t_.cluster = true;
  t_.slot_node = map;
  return {};
}

Result<void> RedisCluster::refresh() {
  if (t_.refreshing) {
    // Another fiber of the loop reads it now (a shared topology; a client's own is never
    // refreshed twice at once): its result is this call's.
    if (!t_.refresh_waiters.wait()) return make_error(ErrorCode::kUnavailable, "redis: cancelled");
    if (t_.refreshed_ok) return {};
    return make_error(ErrorCode::kUnavailable, "redis: topology refresh failed");
  }
  t_.refreshing = true;
  auto r = refresh_now();
  t_.refreshing = false;
  t_.refreshed_ok = r.ok();
  t_.refresh_waiters.wake_all();
  return r;
}

Result<void> RedisCluster::refresh_now() {
  ++counters_.refreshes;
  refreshes_total.inc();
  Error last = make_error(ErrorCode::kUnavailable, "redis: no node known");
  // Every node seen so far (seeds first): a dead master's place is known by the others.
  for (size_t i = 0; i < t_.nodes.size(); ++i) {
    const RedisAddress a = t_.nodes[i].address;
    auto r = refresh_from(a);
    if (r) {
      t_.backoff = options_.retry_backoff;
      t_.refresh_after = {};
      t_.known = true;
      return {};
    }
    last = r.error();
  }
  t_.refresh_after = Clock::now() + t_.backoff;
  t_.backoff = std::min(t_.backoff * 2, options_.max_backoff);
  return last;
}

Result<void> RedisCluster::refresh_or_backoff() {
  if (Clock::now() < t_.refresh_after) return make_error(ErrorCode::kUnavailable, "redis: unreachable (backing off)");
  return refresh();
}

Result<int> RedisCluster::route(uint16_t slot) {
  if (slot >= kSlots) return make_error(ErrorCode::kInvalidArgument, "bad slot");
  if (t_.slot_node[slot] < 0) {
    auto r = refresh_or_backoff();
    if (!r) return r.error();
    if (t_.slot_node[slot] < 0) return make_error(ErrorCode::kUnavailable, "redis: no node serves the slot");
  }
  return t_.slot_node[slot];
}

std::string RedisCluster::owner(uint16_t slot) const {
  if (slot >= kSlots || t_.slot_node[slot] < 0) return "";
  return address_text(t_.nodes[static_cast<size_t>(t_.slot_node[slot])].address);
}

std::vector<RedisAddress> RedisCluster::masters() const {
  std::vector<bool> seen(t_.nodes.size());
  std::vector<RedisAddress> out;
  for (int16_t n : t_.slot_node)
    if (n >= 0 && !seen[static_cast<size_t>(n)]) {
      seen[static_cast<size_t>(n)] = true;
      out.push_back(t_.nodes[static_cast<size_t>(n)].address);
    }
  return out;
}

Result<RedisCluster::EveryNode> RedisCluster::on_every_node(const std::vector<std::string_view>& argv) {
  // A master failed over since the last call must not be missed: read the topology again
  // (if no node answers, the masters known are tried and fail the call if they are gone).
  if (t_.cluster) (void)refresh_or_backoff();
  EveryNode out;
  std::vector<int> masters;
  for (int16_t n : t_.slot_node)
    if (n >= 0 && std::find(masters.begin(), masters.end(), n) == masters.end()) masters.push_back(n);
  for (int n : masters) {
    auto c = connect(n);
    if (!c) return c.error();
    auto r = (*c)->command(argv);
    if (!r) return r.error();
    ++out.masters;
  }
  if (masters.empty()) return out;
  // The replicas, as the first master sees the cluster (or as the plain server lists those
  // connected to it).
  auto c = connect(masters.front());
  const std::vector<std::string_view> ask = t_.cluster ? std::vector<std::string_view>{"CLUSTER", "NODES"}
                                                     : std::vector<std::string_view>{"INFO", "replication"};
  Result<Reply> listed = c ? (*c)->command(ask) : Result<Reply>(c.error());
  if (listed && (*listed)->type != REDIS_REPLY_STRING)
    listed = make_error(ErrorCode::kUnavailable, std::string("redis: ") + std::string(ask[0]) + ": unexpected reply");
  if (!listed) {
    out.unreachable.push_back("replicas: " + listed.error().message);
    return out;
  }
  const std::string_view text = str(listed->get());
  on_replicas(t_.cluster ? replicas_in(text) : replicas_in_info(text), masters, argv, out);
  return out;
}

void RedisCluster::on_replicas(const std::vector<RedisAddress>& replicas, const std::vector<int>& masters,
                               const std::vector<std::string_view>& argv, EveryNode& out) {
  for (const RedisAddress& a : replicas) {
    Result<Reply> r = make_error(ErrorCode::kUnavailable, "redis: not sent");
    if (t_.cluster) {
      const int n = node_index(a);
      if (std::find(masters.begin(), masters.end(), n) != masters.end()) continue;  // promoted meanwhile
      auto rc = connect(n);
      r = rc ? (*rc)->command(argv) : Result<Reply>(rc.error());
      if (!r && rc) drop(n, rc->get());
    } else {
      // A connection of its own, not a node: refresh() asks every node it knows, and a plain
      // replica answering "cluster support disabled" would take every slot from its master.
      auto rc = RedisConnection::connect(a, options_.connect_timeout, options_.command_timeout, options_.credentials);
      r = rc ? (*rc)->command(argv) : Result<Reply>(rc.error());
    }
    if (r) {
      ++out.replicas;
      continue;
    }
    out.unreachable.push_back(address_text(a) + ": " + r.error().message);
  }
}

Result<void> RedisCluster::send_with_redirects(uint16_t slot, const std::vector<std::vector<std::string_view>>& commands,
                                               std::vector<size_t> todo, std::vector<Reply>& replies) {
  int redirects = 0, attempts = 0;
  bool resent = false;
  int ask_node = -1;
  std::vector<std::vector<std::string_view>> batch;
  while (!todo.empty()) {
    int node = ask_node;
    if (node < 0) {
      auto r = route(slot);
      if (!r) return r.error();
      node = *r;
    }
    bool fresh = false;
    auto c = connect(node, &fresh);
    if (!c) {
      // Nothing was sent. If the cluster still answers, its topology may name a new master
      // (failover) or the same one (failover not done yet): wait a little and try again.
      ask_node = -1;
      if (++attempts >= options_.max_attempts) return c.error();
      auto r = refresh_or_backoff();
      if (!r) return c.error();
      Fiber::sleep_for(options_.retry_backoff * (1 << (attempts - 1)));  // in a fiber: only it waits
      continue;
    }
    batch.clear();
    for (size_t i : todo) {
      if (ask_node >= 0) batch.push_back({"ASKING"});
      batch.push_back(commands[i]);
    }
    auto rs = (*c)->pipeline(batch);
    if (!rs) {
      drop(node, c->get());
      t_.refresh_after = {};
      t_.slot_node[slot] = -1;
      // A connection kept from an earlier call may have died meanwhile (its node was killed or
      // restarted): resend once, on a new connection after a refresh. The commands may have
      // been applied: resending is the caller's contract (see the header).
      if (!fresh && !resent) {
        resent = true;
        ask_node = -1;
        continue;
      }
      return rs.error();
    }
    std::vector<size_t> again;
    std::optional<RedisAddress> moved_to, ask_to;
    size_t k = 0;
    for (size_t i : todo) {
      if (ask_node >= 0) ++k;  // the ASKING reply
      Reply& reply = (*rs)[k++];
      auto redirect = parse_redirect(reply.get());
      if (!redirect) {
        replies[i] = std::move(reply);
        continue;
      }
      again.push_back(i);
      (redirect->ask ? ask_to : moved_to) = redirect->to;
    }
    if (again.empty()) return {};
    if (++redirects > options_.max_redirects)
      return make_error(ErrorCode::kUnavailable, "redis: too many redirections for slot " + std::to_string(slot));
    ask_node = -1;
    if (moved_to) {
      ++counters_.moved;
      moved_total.inc();
      const int target = node_index(*moved_to);
      // Refresh the whole map (a MOVED rarely comes alone); the node that sent the MOVED
      // knows better than a refresh answered by a node with an older view.
      (void)refresh();
      if (t_.slot_node[slot] < 0 || t_.slot_node[slot] == node) t_.slot_node[slot] = static_cast<int16_t>(target);
    } else {
      ++counters_.ask;
      ask_total.inc();
      ask_node = node_index(*ask_to);
    }
    todo = std::move(again);
  }
  return {};
}

Result<std::vector<Reply>> RedisCluster::run(uint16_t slot, const std::vector<std::vector<std::string_view>>& commands) {
  std::vector<Reply> replies(commands.size());
  std::vector<size_t> todo(commands.size());
  for (size_t i = 0; i < todo.size(); ++i) todo[i] = i;
  auto r = send_with_redirects(slot, commands, std::move(todo), replies);
  if (!r) return r.error();
  return replies;
}

Result<Reply> RedisCluster::run1(uint16_t slot, const std::vector<std::string_view>& argv) {
  auto r = run(slot, {argv});
  if (!r) return r.error();
  return std::move(r->front());
}

Result<std::vector<std::vector<Reply>>> RedisCluster::run_many(const std::vector<SlotCommands>& batches) {
  std::vector<std::vector<Reply>> out(batches.size());
  for (size_t b = 0; b < batches.size(); ++b) out[b].resize(batches[b].commands.size());
  // First pass: every batch to its slot's node as known now, all nodes written before any
  // reply is read. What was redirected, could not be sent, or met a kept connection that had
  // died (resent once, as in send_with_redirects) then goes through run()'s path.
  struct Sent {
    size_t batch;
    int node;
    bool fresh;
    std::shared_ptr<RedisConnection> conn;  // the ticket's (the node's may change meanwhile)
  };
  std::vector<Sent> sent;
  std::vector<RedisConnection::Ticket> tickets;  // tickets[k]: sent[k]'s request
  std::vector<std::pair<size_t, std::vector<size_t>>> later;  // (batch, commands) to resend
  auto all_of = [&](size_t b) {
    std::vector<size_t> todo(batches[b].commands.size());
    for (size_t i = 0; i < todo.size(); ++i) todo[i] = i;
    return todo;
  };
  for (size_t b = 0; b < batches.size(); ++b) {
    auto node = route(batches[b].slot);
    if (!node) return node.error();  // the requests sent are answered and their replies dropped
    bool fresh = false;
    auto c = connect(*node, &fresh);
    if (!c) {
      later.emplace_back(b, all_of(b));
      continue;
    }
    tickets.push_back((*c)->send(batches[b].commands));
    sent.push_back(Sent{b, *node, fresh, std::move(*c)});  // a failed write shows as a failed receive below
  }
  // Read every reply of every node; redirected commands are resent only after all pending
  // replies were read.
  Result<void> failure;
  for (size_t k = 0; k < sent.size(); ++k) {
    const Sent& s = sent[k];
    std::vector<size_t> again;
    Result<std::vector<Reply>> replies = s.conn->receive(tickets[k]);
    if (!replies) {
      drop(s.node, s.conn.get());
      t_.slot_node[batches[s.batch].slot] = -1;
      t_.refresh_after = {};
      if (s.fresh) {
        failure = replies.error();
      } else {
        later.emplace_back(s.batch, all_of(s.batch));
      }
      continue;
    }
    for (size_t i = 0; i < replies->size(); ++i) {
      if (parse_redirect((*replies)[i].get())) {
        again.push_back(i);
      } else {
        out[s.batch][i] = std::move((*replies)[i]);
      }
    }
    if (!again.empty()) later.emplace_back(s.batch, std::move(again));
  }
  if (!failure.ok()) return failure.error();
  for (auto& [b, todo] : later) {
    auto r = send_with_redirects(batches[b].slot, batches[b].commands, std::move(todo), out[b]);
    if (!r) return r.error();
  }
  return out;
}

}  // namespace tern::store::redis
