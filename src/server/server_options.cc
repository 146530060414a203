#include "server/server_options.h"

#include <algorithm>
#include <charconv>
#include <string_view>
#include <iostream>
#include <set>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include "server/secret_file.h"
#include "store/redis/redis_cluster.h"

namespace tern::server {
namespace {

// The deprecated --send-queue / send_queue counted frames; the bound is bytes now.
constexpr size_t kBytesPerQueuedFrame = 8 * 1024;

// Options whose range both paths check: CLI11 the flag, apply_toml the config file's key.
struct IntRange {
  int64_t lo, hi;
};
constexpr IntRange kRouteSendsRange{0, 1}, kRouteDevicesRange{0, 1}, kDropNowhereRange{0, 1}, kCommitGapUsRange{0, 100000}, kMediaUsageTtlRange{0, 3600000}, kReadThreadsRange{1, 64}, kReadFibersRange{0, 256};

// Applies the TOML file's values; the command line is parsed again afterwards and wins.
Result<void> apply_toml(const std::string& path, ServerOptions& o) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return make_error(ErrorCode::kInvalidArgument, "config " + path + ": " + std::string(e.description()));
  }
  // Every key read below is known; anything else in the file is a typo that would otherwise
  // be ignored without a word, so it is refused by name after the reads.
  std::set<std::string, std::less<>> known;
  auto str = [&](const char* k, std::string& out) {
    known.insert(k);
    if (auto v = t[k].value<std::string>()) out = *v;
  };
  auto num = [&](const char* k, auto& out) {
    known.insert(k);
    if (auto v = t[k].value<int64_t>()) out = static_cast<std::remove_reference_t<decltype(out)>>(*v);
  };
  auto real = [&](const char* k, double& out) {
    known.insert(k);
    if (auto v = t[k].value<double>()) out = *v;
  };
  // An integer within `range`, checked before it is narrowed to `out`; else the first such
  // key is refused by name below.
  std::string bad_value;
  auto ranged = [&](const char* k, auto& out, IntRange range) {
    known.insert(k);
    if (!t.contains(k)) return;
    const auto v = t[k].as_integer();
    if (!v || v->get() < range.lo || v->get() > range.hi) {
      if (bad_value.empty())
        bad_value = std::string(k) + " must be an integer " + std::to_string(range.lo) + "-" + std::to_string(range.hi);
      return;
    }
    out = static_cast<std::remove_reference_t<decltype(out)>>(v->get());
  };
  str("listen", o.listen);
  str("data", o.data_dir);
  str("durability", o.durability);
  str("log_level", o.log_level);
  str("metrics_token", o.metrics_token);
  num("threads", o.threads);
  num("block_cache_mb", o.block_cache_mb);
  int64_t ping = o.gateway.ping_interval.count();
  num("ping_interval", ping);
  o.gateway.ping_interval = std::chrono::seconds(ping);
  num("max_connections", o.gateway.max_connections);
  num("max_frame_bytes", o.services.limits.max_frame_bytes);
  num("max_body_bytes", o.services.limits.max_body_bytes);
  num("max_http_body_bytes", o.services.limits.max_http_body_bytes);
  num("max_members", o.services.limits.max_members_per_group);
  num("max_devices", o.services.limits.max_devices_per_user);
  num("max_page", o.services.limits.max_page);
  real("send_rate", o.services.send_rate_per_sec);
  real("send_burst", o.services.send_burst);
  real("frame_rate", o.services.frame_rate_per_sec);
  real("frame_burst", o.services.frame_burst);
  // `send_queue` (frames) is the old name of the write queue bound: 8 KiB per frame.
  known.insert("send_queue");
  if (auto v = t["send_queue"].value<int64_t>()) o.gateway.write_queue_bytes = static_cast<size_t>(*v) * kBytesPerQueuedFrame;
  num("write_queue_bytes", o.gateway.write_queue_bytes);
  num("global_queue_bytes", o.gateway.global_queue_bytes);
  num("frames_per_turn", o.gateway.frames_per_turn);
  num("max_unauthenticated_connections", o.gateway.max_unauthenticated_connections);
  int64_t unauth = o.gateway.unauthenticated_timeout.count();
  num("unauthenticated_timeout", unauth);
  o.gateway.unauthenticated_timeout = std::chrono::seconds(unauth);
  real("control_frame_rate", o.gateway.control_frames_per_sec);
  real("control_frame_burst", o.gateway.control_frames_burst);
  num("max_input_bytes_per_sec", o.gateway.max_input_bytes_per_sec);
  num("commit_queue", o.services.commit_queue_limit);
  num("max_inflight_per_connection", o.services.max_inflight_sends_per_connection);
  num("max_inflight_per_loop", o.services.max_inflight_sends_per_loop);
  num("conversation_cache", o.services.conversation_cache);
  num("max_presence_subscriptions_per_user", o.services.max_presence_subscriptions_per_user);
  num("typing_interval_ms", o.services.typing_interval_ms);
  num("typing_max_members", o.services.typing_max_members);
  num("fanout_read_threshold", o.services.fanout_read_threshold);
  num("max_subscribers", o.services.max_subscribers);
  real("channel_post_rate", o.services.channel_post_rate);
  real("channel_post_burst", o.services.channel_post_burst);
  num("fanout_batch_ms", o.services.fanout_batch_ms);
  num("receipt_batch_ms", o.services.receipt_batch_ms);
  real("create_rate", o.services.create_rate_per_sec);
  real("create_burst", o.services.create_burst);
  num("max_conversations_per_user", o.services.max_conversations_per_user);
  real("register_rate", o.services.register_rate_per_min);
  real("register_burst", o.services.register_burst);
  num("directory_cache", o.services.directory_cache);
  num("max_prekeys_per_upload", o.services.max_prekeys_per_upload);
  num("max_prekeys_per_device", o.services.max_prekeys_per_device);
  num("prekeys_low_threshold", o.services.prekeys_low_threshold);
  int64_t grace_s = o.services.signed_prekey_grace_ms / 1000;
  num("signed_prekey_grace_seconds", grace_s);
  o.services.signed_prekey_grace_ms = grace_s * 1000;
  real("key_fetch_rate", o.services.key_fetch_rate_per_sec);
  real("key_fetch_burst", o.services.key_fetch_burst);
  int64_t days = o.services.idempotency_ttl_ms / (24 * 3600 * 1000);
  num("idempotency_days", days);
  str("store", o.store);
  str("redis", o.redis_url);
  str("redis_user", o.redis_user);
  str("redis_password_file", o.redis_password_file);
  str("redis_tls_ca", o.redis_tls_ca);
  str("redis_tls_cert", o.redis_tls_cert);
  str("redis_tls_key", o.redis_tls_key);
  str("node_id", o.node_id);
  str("media_dir", o.media_dir);
  num("redis_wait_replicas", o.redis_wait_replicas);
  num("redis_timeout_ms", o.redis_timeout_ms);
  ranged("redis_route_sends", o.redis_route_sends, kRouteSendsRange);
  ranged("redis_route_devices", o.redis_route_devices, kRouteDevicesRange);
  ranged("redis_drop_nowhere", o.redis_drop_nowhere, kDropNowhereRange);
  ranged("redis_commit_gap_us", o.redis_commit_gap_us, kCommitGapUsRange);
  ranged("redis_media_usage_ttl_ms", o.redis_media_usage_ttl_ms, kMediaUsageTtlRange);
  ranged("redis_read_threads", o.redis_read_threads, kReadThreadsRange);
  ranged("redis_read_fibers", o.redis_read_fibers, kReadFibersRange);
  o.services.idempotency_ttl_ms = days * 24 * 3600 * 1000;
  // Media and disappearing messages (issue 11).
  num("max_media_bytes", o.services.max_media_bytes);
  num("media_quota_bytes", o.services.media_quota_bytes);
  real("media_upload_rate", o.services.media_upload_rate_per_min);
  real("media_upload_burst", o.services.media_upload_burst);
  num("media_grace_ms", o.services.media_grace_ms);
  num("upload_expiry_ms", o.services.upload_expiry_ms);
  num("max_open_uploads_per_user", o.services.max_open_uploads_per_user);
  num("sweep_interval_ms", o.services.sweep_interval_ms);
  read_open_toml(t, known, o);
  str("tls_cert", o.gateway.tls_cert_file);
  str("tls_key", o.gateway.tls_key_file);
  if (!bad_value.empty()) return make_error(ErrorCode::kInvalidArgument, "config " + path + ": " + bad_value);
  for (const auto& [key, value] : t) {
    (void)value;
    if (!known.count(key.str()))
      return make_error(ErrorCode::kInvalidArgument,
                        "config " + path + ": unknown key '" + std::string(key.str()) +
                            "' (keys are the flags of `ternd --help` without the dashes, with '_' for '-')");
  }
  return {};
}

void describe(CLI::App& app, ServerOptions& o, int64_t& ping, int64_t& idem_days, int64_t& unauth_timeout) {
  app.add_option("--config", "TOML file with any of the options below (keys without dashes, '-' as '_'); flags win");
  app.add_option("--listen", o.listen, "HOST:PORT to serve HTTP and WebSocket on; port 0 picks a free port and prints it")
      ->capture_default_str();
  app.add_option("--data", o.data_dir, "directory of the embedded RocksDB store")->capture_default_str();
  app.add_option("--durability", o.durability,
                 "sync: fsync every group-committed batch before `sent` (default); "
                 "none: no fsync, for benchmarks only - a crash can lose acknowledged messages")
      ->check(CLI::IsMember({"sync", "none"}))->capture_default_str();
  app.add_option("--threads", o.threads, "event loops, one thread each (0 = one per core but one, left to the store writer)")->capture_default_str();
  app.add_option("--log-level", o.log_level, "trace|debug|info|warn|error|off")->capture_default_str();
  app.add_option("--metrics-token", o.metrics_token,
                 "bearer token that /metrics requires (default: any device token)");
  app.add_option("--ping-interval", ping, "seconds between WebSocket pings; a peer silent for two intervals is dropped")
      ->capture_default_str();
  app.add_option("--max-connections", o.gateway.max_connections, "concurrent connections; more are refused")
      ->capture_default_str();
  app.add_option("--max-frame-bytes", o.services.limits.max_frame_bytes, "largest WebSocket message")->capture_default_str();
  app.add_option("--max-body-bytes", o.services.limits.max_body_bytes, "largest decoded message payload")
      ->capture_default_str();
  app.add_option("--max-http-body-bytes", o.services.limits.max_http_body_bytes, "largest HTTP request body")
      ->capture_default_str();
  app.add_option("--max-members", o.services.limits.max_members_per_group, "members per group")->capture_default_str();
  app.add_option("--max-devices", o.services.limits.max_devices_per_user, "devices per user")->capture_default_str();
  app.add_option("--max-page", o.services.limits.max_page, "largest backfill page")->capture_default_str();
  app.add_option("--send-rate", o.services.send_rate_per_sec, "sends per second per device (token bucket refill)")
      ->capture_default_str();
  app.add_option("--send-burst", o.services.send_burst, "token bucket size for sends")->capture_default_str();
  app.add_option("--frame-rate", o.services.frame_rate_per_sec,
                 "client frames of any type per second per connection (token bucket refill)")->capture_default_str();
  app.add_option("--frame-burst", o.services.frame_burst, "token bucket size for all client frames")
      ->capture_default_str();
  app.add_option("--write-queue-bytes", o.gateway.write_queue_bytes,
                 "bytes queued per WebSocket; a consumer that falls further behind is disconnected (1008)")
      ->capture_default_str();
  app.add_option_function<size_t>(
      "--send-queue", [&o](size_t frames) { o.gateway.write_queue_bytes = frames * kBytesPerQueuedFrame; },
      "deprecated: the write queue bound in frames, taken as 8 KiB each; use --write-queue-bytes");
  app.add_option("--global-queue-bytes", o.gateway.global_queue_bytes,
                 "bytes queued in the whole server (WebSocket queues and HTTP responses); over it the largest "
                 "queues are disconnected and HTTP answers 503")
      ->capture_default_str();
  app.add_option("--frames-per-turn", o.gateway.frames_per_turn,
                 "WebSocket messages one connection may hand to the services per event-loop turn")
      ->capture_default_str();
  app.add_option("--max-unauthenticated-connections", o.gateway.max_unauthenticated_connections,
                 "connections not yet authenticated (separate from --max-connections); more are refused")
      ->capture_default_str();
  app.add_option("--unauthenticated-timeout", unauth_timeout,
                 "seconds a connection may stay unauthenticated before it is closed")
      ->capture_default_str();
  app.add_option("--control-frame-rate", o.gateway.control_frames_per_sec,
                 "WebSocket pings/pongs per second per connection; more close it (1008)")->capture_default_str();
  app.add_option("--control-frame-burst", o.gateway.control_frames_burst, "token bucket size for control frames")
      ->capture_default_str();
  app.add_option("--max-input-bytes-per-sec", o.gateway.max_input_bytes_per_sec,
                 "bytes per second read from one WebSocket (burst: --max-frame-bytes); beyond it reading pauses; "
                 "0 = unlimited")
      ->capture_default_str();
  app.add_option("--commit-queue", o.services.commit_queue_limit,
                 "writes waiting for the store; beyond it sends get `overloaded`")->capture_default_str();
  app.add_option("--max-inflight-per-connection", o.services.max_inflight_sends_per_connection,
                 "sends of one connection awaiting their answer; beyond it sends get `overloaded`")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-inflight-per-loop", o.services.max_inflight_sends_per_loop,
                 "sends of all connections of one event loop awaiting their answer; beyond it sends get `overloaded`")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--conversation-cache", o.services.conversation_cache,
                 "conversations per event loop whose state (head, receipts) is kept in memory (LRU)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-presence-subscriptions-per-user", o.services.max_presence_subscriptions_per_user,
                 "presence subscriptions over all of a user's connections; more get limit_exceeded")
      ->capture_default_str();
  app.add_option("--typing-interval-ms", o.services.typing_interval_ms,
                 "at most one typing relay per member and conversation in this interval (changes are coalesced)")
      ->capture_default_str();
  app.add_option("--typing-max-members", o.services.typing_max_members,
                 "in conversations with more members, typing is coalesced per conversation (one relay per interval)")
      ->capture_default_str();
  app.add_option("--fanout-read-threshold", o.services.fanout_read_threshold,
                 "groups with at least this many members fan out on read (no inbox entry per member device)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-subscribers", o.services.max_subscribers, "subscribers per channel, owner and admins included")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--channel-post-rate", o.services.channel_post_rate,
                 "posts per second into one channel, all its admins together (each reaches every subscriber)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--channel-post-burst", o.services.channel_post_burst, "token bucket size for channel posts")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--fanout-batch-ms", o.services.fanout_batch_ms,
                 "read-side live delivery: posts within this window reach each loop's sessions together (0-100)")
      ->check(CLI::Range(0, 100))->capture_default_str();
  app.add_option("--receipt-batch-ms", o.services.receipt_batch_ms,
                 "read-side groups: receipts to a sender are coalesced over this window (0 = off, at most 1000)")
      ->check(CLI::Range(0, 1000))->capture_default_str();
  app.add_option("--create-rate", o.services.create_rate_per_sec,
                 "conversations a user may create per second (token bucket refill; 0 = unlimited)")
      ->capture_default_str();
  app.add_option("--create-burst", o.services.create_burst, "token bucket size for conversation creation")
      ->capture_default_str();
  app.add_option("--max-conversations-per-user", o.services.max_conversations_per_user,
                 "conversations a user may be in and still create another; beyond it limit_exceeded")
      ->capture_default_str();
  app.add_option("--register-rate", o.services.register_rate_per_min,
                 "registrations per minute per source address (token bucket refill; 0 = unlimited)")
      ->capture_default_str();
  app.add_option("--register-burst", o.services.register_burst, "token bucket size for registrations per address")
      ->capture_default_str();
  app.add_option("--directory-cache", o.services.directory_cache,
                 "entries in each directory cache (conversation snapshots, device lists), LRU")
      ->capture_default_str();
  app.add_option("--idempotency-days", idem_days, "how long a client_msg_id is remembered (at least 7)")
      ->capture_default_str();
  app.add_option("--block-cache-mb", o.block_cache_mb, "RocksDB block cache")->capture_default_str();
  app.add_option("--store", o.store, "rocksdb: embedded store in --data (default); redis: shared by several nodes")
      ->check(CLI::IsMember({"rocksdb", "redis"}))->capture_default_str();
  app.add_option("--redis", o.redis_url,
                 "with --store redis: redis://HOST:PORT, or a Redis Cluster's seeds, comma-separated "
                 "(redis://USER:PASSWORD@HOST:PORT logs in; better: --redis-password-file; rediss:// for TLS)");
  app.add_option("--redis-user", o.redis_user, "with --store redis: the ACL user to log in as (default: Redis's default user)");
  app.add_option("--redis-password-file", o.redis_password_file,
                 "with --store redis: file holding the password to log in with (requirepass, or --redis-user's)");
  app.add_option("--redis-tls-ca", o.redis_tls_ca,
                 "with rediss://: PEM CA file that signed Redis's certificate (default: the system's CAs)");
  app.add_option("--redis-tls-cert", o.redis_tls_cert, "with rediss://: PEM client certificate the node shows Redis");
  app.add_option("--redis-tls-key", o.redis_tls_key, "with rediss://: PEM key of --redis-tls-cert");
  app.add_option("--node-id", o.node_id, "this node's name among the nodes sharing one Redis (default: --listen/pid)");
  app.add_option("--media-dir", o.media_dir,
                 "directory of media blobs (default: <data>/media); nodes on one Redis share one, e.g. on NFS "
                 "(give each node its own --node-id)");
  app.add_option("--redis-wait-replicas", o.redis_wait_replicas,
                 "with --store redis: `sent` only after this many replicas acknowledged the write (WAIT)")
      ->check(CLI::Range(0, 16))->capture_default_str();
  app.add_option("--redis-route-sends", o.redis_route_sends,
                 "with --store redis: 1 sends each conversation's sends to the one node that sequences it "
                 "(docs/scaling.md); 0 lets every node sequence (they race for seqs and re-sequence)")
      ->check(CLI::Range(kRouteSendsRange.lo, kRouteSendsRange.hi))->capture_default_str();
  app.add_option("--redis-route-devices", o.redis_route_devices,
                 "with --store redis: 1 sends an event for a device connected to another node to that node only "
                 "(the nodes announce their devices; docs/scaling.md); 0 sends it to every node, and announces "
                 "nothing (for a rolling upgrade from a version without routes)")
      ->check(CLI::Range(kRouteDevicesRange.lo, kRouteDevicesRange.hi))->capture_default_str();
  app.add_option("--redis-drop-nowhere", o.redis_drop_nowhere,
                 "with --store redis and device routes: 1 sends an event for a device that no node holds to no node "
                 "(a node that raced its connect tells its new node kMissed: the nodes' clocks must agree within 1 s); "
                 "0 sends it to every node")
      ->check(CLI::Range(kDropNowhereRange.lo, kDropNowhereRange.hi))->capture_default_str();
  app.add_option("--redis-commit-gap-us", o.redis_commit_gap_us,
                 "with --store redis: under load, at most one commit per this many microseconds while other "
                 "clients may still send, so that commits carry more (each costs Redis a round trip and an "
                 "fsync); idle, or with no other recent sender, commits start at once")
      ->check(CLI::Range(kCommitGapUsRange.lo, kCommitGapUsRange.hi))->capture_default_str();
  app.add_option("--redis-media-usage-ttl-ms", o.redis_media_usage_ttl_ms,
                 "with --store redis: a node reads a user's stored media bytes (for the quota) again once "
                 "its copy is this old, since the other nodes store and collect the user's blobs too; "
                 "0 keeps the copy (a user uploading through several nodes may then exceed the quota)")
      ->check(CLI::Range(kMediaUsageTtlRange.lo, kMediaUsageTtlRange.hi))->capture_default_str();
  app.add_option("--redis-read-threads", o.redis_read_threads,
                 "with --store redis and --redis-read-fibers 0: threads that run every store read (each "
                 "with its own connection); unused with fibers")
      ->check(CLI::Range(kReadThreadsRange.lo, kReadThreadsRange.hi))->capture_default_str();
  app.add_option("--redis-read-fibers", o.redis_read_fibers,
                 "with --store redis: fibers per event loop that run the store reads of sessions, "
                 "sequencing and HTTP requests on the loop itself (suspended while Redis answers; a loop's fibers pipeline their "
                 "requests on one connection per Redis node); "
                 "0: those reads run on the read threads")
      ->check(CLI::Range(kReadFibersRange.lo, kReadFibersRange.hi))->capture_default_str();
  app.add_option("--redis-timeout-ms", o.redis_timeout_ms,
                 "with --store redis: one Redis command; beyond it the request fails with `unavailable`")
      ->check(CLI::Range(10, 60000))->capture_default_str();
  app.add_option("--max-prekeys-per-upload", o.services.max_prekeys_per_upload,
                 "one-time prekeys in one PUT /v1/keys; more get too_large")->capture_default_str();
  app.add_option("--max-prekeys-per-device", o.services.max_prekeys_per_device,
                 "one-time prekeys stored per device; an upload beyond it gets limit_exceeded")->capture_default_str();
  app.add_option("--prekeys-low-threshold", o.services.prekeys_low_threshold,
                 "a device with fewer one-time prekeys left gets a prekeys_low event (0 = never)")->capture_default_str();
  app.add_option_function<int64_t>(
         "--signed-prekey-grace-seconds",
         [&o](int64_t s) { o.services.signed_prekey_grace_ms = s * 1000; },
         "how long a replaced signed prekey is kept (and reported to its device) after a rotation")
      ->default_str(std::to_string(o.services.signed_prekey_grace_ms / 1000));
  app.add_option("--key-fetch-rate", o.services.key_fetch_rate_per_sec,
                 "key bundle fetches per second per requesting user (token bucket refill; 0 = unlimited)")
      ->capture_default_str();
  app.add_option("--key-fetch-burst", o.services.key_fetch_burst, "token bucket size for key bundle fetches")
      ->capture_default_str();
  // Media and disappearing messages (issue 11).
  app.add_option("--max-media-bytes", o.services.max_media_bytes, "largest media blob (POST /v1/media); larger gets 413")
      ->capture_default_str();
  app.add_option("--media-quota-bytes", o.services.media_quota_bytes,
                 "per user: bytes of uploaded, not yet collected media plus uploads in progress")
      ->capture_default_str();
  app.add_option("--media-upload-rate", o.services.media_upload_rate_per_min, "uploads per minute per user (token bucket refill; 0 = unlimited)")
      ->capture_default_str();
  app.add_option("--media-upload-burst", o.services.media_upload_burst, "token bucket size for uploads")
      ->capture_default_str();
  app.add_option("--media-grace-ms", o.services.media_grace_ms,
                 "an uploaded blob no message names is collected after this long")
      ->capture_default_str();
  app.add_option("--upload-expiry-ms", o.services.upload_expiry_ms,
                 "a resumable upload idle this long is dropped with its bytes")
      ->capture_default_str();
  app.add_option("--max-open-uploads-per-user", o.services.max_open_uploads_per_user,
                 "resumable uploads in progress per user")
      ->capture_default_str();
  app.add_option("--sweep-interval-ms", o.services.sweep_interval_ms,
                 "how often expired messages are erased from disk and unreferenced media collected")
      ->capture_default_str();
  describe_open_options(app, o);
  app.add_option("--tls-cert", o.gateway.tls_cert_file,
                 "PEM certificate (then its chain) for the listening port; with --tls-key the port speaks only "
                 "TLS (HTTPS and WSS); SIGHUP re-reads both files");
  app.add_option("--tls-key", o.gateway.tls_key_file, "PEM private key of --tls-cert");
}

}  // namespace

namespace {
// The seeds and the credentials: from --redis's URL, or the password from its file (not both),
// the user from either (the same if both name one).
Result<void> resolve_redis_login(ServerOptions& o) {
  auto bad = [](std::string m) { return make_error(ErrorCode::kInvalidArgument, std::move(m)); };
  store::redis::RedisCredentials c;
  bool tls = false;
  auto seeds = store::redis::parse_redis_urls(o.redis_url, &c, &tls);
  if (!seeds) return seeds.error();
  const bool tls_files = !o.redis_tls_ca.empty() || !o.redis_tls_cert.empty() || !o.redis_tls_key.empty();
  if (tls_files && !tls) return bad("--redis-tls-ca, --redis-tls-cert and --redis-tls-key need a rediss:// address");
  if (tls) {
    auto context = store::redis::RedisTls::create({o.redis_tls_ca, o.redis_tls_cert, o.redis_tls_key});
    if (!context) return context.error();
    o.redis_tls = std::move(context).value();
    c.tls = o.redis_tls;
  }
  if (!o.redis_password_file.empty()) {
    if (!c.empty()) return bad("give the Redis password once: in --redis or in --redis-password-file");
    auto password = read_secret_file(o.redis_password_file, "--redis-password-file");
    if (!password) return password.error();
    c.password = std::move(password).value();
  }
  if (!o.redis_user.empty()) {
    if (!c.user.empty() && c.user != o.redis_user) return bad("--redis-user and the user in --redis differ");
    if (c.empty()) return bad("--redis-user needs a password (--redis-password-file)");
    c.user = o.redis_user;
  }
  o.redis_seeds = std::move(seeds).value();
  o.redis_credentials = std::move(c);
  return {};
}
}  // namespace

Result<ServerOptions> parse_options(int argc, char** argv) {
  ServerOptions o;
  // First pass: find --config only, so that the file can set defaults the flags override.
  {
    CLI::App pre;
    pre.allow_extras();
    pre.set_help_flag();
    std::string config;
    pre.add_option("--config", config);
    try {
      pre.parse(argc, argv);
    } catch (const CLI::ParseError&) {
    }
    if (!config.empty())
      if (auto r = apply_toml(config, o); !r) return r.error();
  }
  int64_t ping = o.gateway.ping_interval.count();
  int64_t idem_days = o.services.idempotency_ttl_ms / (24 * 3600 * 1000);
  int64_t unauth_timeout = o.gateway.unauthenticated_timeout.count();
  CLI::App app{"ternd: the Tern messaging server (wire-v1 over HTTP + WebSocket, embedded RocksDB store)"};
  describe(app, o, ping, idem_days, unauth_timeout);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return make_error(code == 0 ? ErrorCode::kOk : ErrorCode::kInvalidArgument, e.what());
  }
  if (ping < 1) return make_error(ErrorCode::kInvalidArgument, "--ping-interval must be >= 1");
  if (idem_days < 7) return make_error(ErrorCode::kInvalidArgument, "--idempotency-days must be >= 7");
  if (o.services.typing_interval_ms < 1) return make_error(ErrorCode::kInvalidArgument, "--typing-interval-ms must be >= 1");
  if (o.services.receipt_batch_ms < 0 || o.services.receipt_batch_ms > 1000)
    return make_error(ErrorCode::kInvalidArgument, "--receipt-batch-ms must be 0-1000");
  if (o.services.fanout_batch_ms < 0 || o.services.fanout_batch_ms > 100)
    return make_error(ErrorCode::kInvalidArgument, "--fanout-batch-ms must be 0-100");
  if (o.services.fanout_read_threshold < 1 || o.services.max_subscribers < 1)
    return make_error(ErrorCode::kInvalidArgument, "--fanout-read-threshold and --max-subscribers must be >= 1");
  if (o.services.directory_cache < 1) return make_error(ErrorCode::kInvalidArgument, "--directory-cache must be >= 1");
  if (o.services.signed_prekey_grace_ms < 0)
    return make_error(ErrorCode::kInvalidArgument, "--signed-prekey-grace-seconds must be >= 0");
  if (o.services.key_fetch_rate_per_sec < 0 || o.services.max_prekeys_per_upload < 1)
    return make_error(ErrorCode::kInvalidArgument, "--key-fetch-rate must be >= 0, --max-prekeys-per-upload >= 1");
  if (o.services.create_rate_per_sec < 0 || o.services.register_rate_per_min < 0)
    return make_error(ErrorCode::kInvalidArgument, "rates must be >= 0");
  if (unauth_timeout < 1) return make_error(ErrorCode::kInvalidArgument, "--unauthenticated-timeout must be >= 1");
  if (o.services.sweep_interval_ms < 10) return make_error(ErrorCode::kInvalidArgument, "--sweep-interval-ms must be >= 10");
  if (o.services.media_grace_ms < 0 || o.services.upload_expiry_ms < 1)
    return make_error(ErrorCode::kInvalidArgument, "--media-grace-ms must be >= 0 and --upload-expiry-ms >= 1");
  o.gateway.unauthenticated_timeout = std::chrono::seconds(unauth_timeout);
  o.gateway.ping_interval = std::chrono::seconds(ping);
  o.services.idempotency_ttl_ms = idem_days * 24 * 3600 * 1000;
  o.services.durable = o.durability == "sync";
  if (o.store != "rocksdb" && o.store != "redis")
    return make_error(ErrorCode::kInvalidArgument, "store must be rocksdb or redis");
  if (o.store == "redis" && o.redis_url.empty())
    return make_error(ErrorCode::kInvalidArgument, "--store redis needs --redis redis://HOST:PORT");
  if (o.store == "redis")
    if (auto r = resolve_redis_login(o); !r) return r.error();
  // The node id names this node's Redis connections (CLIENT SETNAME refuses spaces and
  // control characters: the other nodes would never see it live) and opens each of its
  // registry entries ("<node> <expiry>", split at the space).
  if (o.node_id.size() > 64 || std::any_of(o.node_id.begin(), o.node_id.end(), [](char c) { return c < '!' || c > '~'; }))
    return make_error(ErrorCode::kInvalidArgument, "--node-id must be 1-64 printable ASCII characters without spaces");
  o.gateway.max_frame_bytes = o.services.limits.max_frame_bytes;
  o.gateway.max_http_body_bytes = o.services.limits.max_http_body_bytes;

  const auto colon = o.listen.rfind(':');
  if (colon == std::string::npos) return make_error(ErrorCode::kInvalidArgument, "--listen must be HOST:PORT");
  o.gateway.host = o.listen.substr(0, colon);
  const std::string port = o.listen.substr(colon + 1);
  unsigned value = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || p != port.data() + port.size() || value > 65535)
    return make_error(ErrorCode::kInvalidArgument, "--listen port must be 0-65535");
  o.gateway.port = static_cast<uint16_t>(value);
  if (auto r = check_open_options(o); !r) return r.error();
  return o;
}

}  // namespace tern::server
