#include "server/server.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <csignal>

#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "base/thread_name.h"
#include "bus/local/local_bus.h"
#include "bus/redis/redis_bus.h"
#include "gateway/listener.h"
#include "services/conversation_ids.h"
#include "services/tern_service.h"
#include "store/fs/fs_blob_store.h"
#include "store/redis/redis_change_lease.h"
#include "store/redis/redis_store.h"
#include "store/rocksdb/rocksdb_store.h"

namespace tern::server {
namespace {

// A warning this long before the client certificate of TLS to Redis expires (at each start
// and SIGHUP): an expired one makes every new connection to Redis fail its handshake.
constexpr int64_t kCertWarnAhead = 14 * 24 * 3600;

Gauge& redis_cert_expiry = MetricsRegistry::global().gauge(
    "tern_redis_tls_client_cert_expiry_timestamp_seconds",
    "When the client certificate shown to Redis expires (Unix seconds; 0: none)");

// Exports when the node's client certificate for Redis expires, and warns ahead.
void note_redis_cert_expiry(const store::redis::RedisTls& tls) {
  const std::optional<int64_t> not_after = tls.client_cert_not_after();
  redis_cert_expiry.set(not_after.value_or(0));
  if (!not_after) return;
  const int64_t left = *not_after - now_ms() / 1000;
  if (left <= 0)
    spdlog::error("event=redis_tls_cert_expired cert={} hint=\"new connections to Redis fail: renew it and send SIGHUP\"",
                  tls.files().cert_file);
  else if (left < kCertWarnAhead)
    spdlog::warn("event=redis_tls_cert_expires_soon cert={} days_left={} hint=\"renew it and send SIGHUP\"",
                 tls.files().cert_file, left / 86400);
}

}  // namespace

Server::Server(ServerOptions options) : options_(std::move(options)) {}

Server::~Server() {
  stop_purge();
  if (bus_) bus_->stop();  // no cross-node delivery into services that are going away
  if (loops_) {
    loops_->stop();
    loops_->join();
  }
}

Result<uint16_t> Server::start() {
  // Issue 8: the data directory is private (0700, files 0600, whatever the umask), and holds
  // the secret that keys direct conversation ids.
  if (auto r = services::secure_data_dir(options_.data_dir); !r) return r.error();
  auto secret = services::load_or_create_secret(options_.data_dir + "/" + services::kDirectIdSecretFile);
  if (!secret) return secret.error();
  if (options_.store == "redis") {
    // Every node on one Redis must key direct conversation ids alike: the first node's
    // secret is stored in Redis and used by all (each node's --data still holds its copy).
    store::redis::RedisStoreOptions ro;
    ro.seeds = options_.redis_seeds;  // one, or a Cluster's seeds (parse_options)
    ro.credentials = options_.redis_credentials;
    ro.command_timeout = std::chrono::milliseconds(options_.redis_timeout_ms);
    ro.wait_replicas = options_.redis_wait_replicas;
    ro.dense_appends = true;  // several nodes may append to one conversation
    auto opened = store::redis::RedisStore::open(ro);
    if (!opened) return opened.error();
    auto shared = (*opened)->shared_value("tern:direct-id-secret", *secret);
    if (!shared) return shared.error();
    services::set_direct_id_secret(*shared);
    // The addresses only: --redis may carry the password.
    std::string where;
    for (const auto& a : options_.redis_seeds) where += (where.empty() ? "" : ",") + a.host + ":" + std::to_string(a.port);
    spdlog::info("event=store backend=redis redis={} auth={} tls={} node={} wait_replicas={}", where,
                 options_.redis_credentials.empty() ? "none" : options_.redis_credentials.user.empty() ? "password" : "user",
                 options_.redis_credentials.tls ? "on" : "off",
                 options_.node_id.empty() ? options_.listen : options_.node_id, options_.redis_wait_replicas);
    if (options_.redis_tls) note_redis_cert_expiry(*options_.redis_tls);
    // Redis holds every token hash and message frame: one that lets anyone in is worth a line
    // at every start (docs/scaling.md, "Logging in to Redis").
    if (options_.redis_credentials.empty())
      spdlog::warn("event=redis_without_password hint=\"anyone who reaches Redis reads and writes everything: set "
                   "requirepass or an ACL user and --redis-password-file\"");
    store_ = std::move(*opened);
  } else {
    services::set_direct_id_secret(*secret);
    store::RocksDbOptions ro;
    ro.block_cache_mb = options_.block_cache_mb;
    auto opened = store::RocksDbStore::open(options_.data_dir, ro);
    if (!opened) return opened.error();
    store_ = std::move(*opened);
  }
  // Media blobs: <data>/media, or --media-dir, which the nodes on one Redis share (a shared
  // filesystem; docs/scaling.md). Each node keeps its temporaries apart, named by --node-id.
  std::string temp_subdir = options_.node_id;
  for (char& c : temp_subdir)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  if (temp_subdir.size() > 64) temp_subdir.resize(64);
  if (temp_subdir == "." || temp_subdir == "..") temp_subdir = "_";
  auto blobs = store::FsBlobStore::open_at(options_.media_dir.empty() ? options_.data_dir + "/media" : options_.media_dir, temp_subdir);
  if (!blobs) return blobs.error();
  blobs_ = std::move(*blobs);
  // Default: one loop per core but one, which the store's writer thread (fsync, memtable
  // inserts) keeps busy under load; on a 2-core machine that is one loop (measured in
  // docs/benchmarks.md: two loops there cost more per message in cross-loop wake-ups).
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  const size_t threads = options_.threads ? options_.threads : std::max<size_t>(1, cores - 1);
  loops_ = std::make_unique<Loops>(threads);
  bus::RedisBus* redis_bus = nullptr;
  if (options_.store == "redis") {
    bus::RedisBusOptions bo;
    bo.seeds = options_.redis_seeds;
    bo.credentials = options_.redis_credentials;
    // Unique per process by default: two nodes on one host may both listen on port 0.
    bo.node_id = options_.node_id.empty() ? options_.listen + "/" + std::to_string(::getpid()) : options_.node_id;
    bo.route_sends = options_.redis_route_sends != 0;
    bo.route_devices = options_.redis_route_devices != 0;
    bo.drop_nowhere = options_.redis_drop_nowhere != 0;
    auto rb = std::make_unique<bus::RedisBus>(bo);
    rb->set_loops(*loops_);  // the loops publish what they raise, loop 0 holds the subscription
    if (!rb->start()) return make_error(ErrorCode::kUnavailable, "redis: the bus cannot reach Redis");
    redis_bus = rb.get();
    bus_ = std::move(rb);
  } else {
    bus_ = std::make_unique<bus::LocalBus>();
  }

  signals_ = std::make_unique<boost::asio::signal_set>(loops_->context(0));
  services::ServiceOptions service_options = options_.services;
  if (options_.store == "redis") {
    service_options.commit_gap_us = options_.redis_commit_gap_us;
    service_options.media_usage_ttl_ms = options_.redis_media_usage_ttl_ms;
    service_options.read_threads = options_.redis_read_threads;
    service_options.read_fibers = options_.redis_read_fibers;
    // A channel change refused while a node that died mid-change holds the channel's lease
    // is made again until the lease has expired and one more commit had its time.
    service_options.channel_change_retry_ms =
        std::max(service_options.channel_change_retry_ms,
                 (store::redis::ChangeLeases::kLifeInTimeouts + 1) * options_.redis_timeout_ms);
  }
  service_ = std::make_unique<services::TernService>(*loops_, *store_, *bus_, service_options, options_.metrics_token,
                                                     blobs_.get());
  service_->start();
  listener_ = std::make_unique<gateway::Listener>(loops_->contexts(), options_.gateway, *service_);
  auto port = listener_->start();
  if (!port) return port.error();
  if (!options_.open.admin_listen.empty()) {
    gateway::GatewayOptions admin = options_.gateway;
    admin.tls_cert_file.clear();  // the admin endpoint stays plain (loopback or token-guarded)
    admin.tls_key_file.clear();
    admin.host = options_.open.admin_host;
    admin.port = options_.open.admin_port;
    admin_listener_ = std::make_unique<gateway::Listener>(loops_->contexts(), admin,
                                                          service_->enable_admin(options_.open.admin_token));
    auto admin_port = admin_listener_->start();
    if (!admin_port) return admin_port.error();
    spdlog::info("event=admin_listening address={} port={}", admin.host, *admin_port);
  }

  signals_->add(SIGTERM);
  signals_->add(SIGINT);
  signals_->async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("event=signal signal={} action=drain", sig);
    shutdown();
  });
  // SIGHUP: re-read the TLS files, the clients' and Redis's (live connections keep theirs).
  reload_signal_ = std::make_unique<boost::asio::signal_set>(loops_->context(0), SIGHUP);
  wait_reload_signal();
  schedule_purge();
  loops_->start();
  // Loop 0 subscribes to the bus channels now; a client told this port may expect other
  // nodes' messages at once.
  if (redis_bus && !redis_bus->await_subscribed())
    spdlog::warn("event=bus_not_subscribed action=retrying");  // the subscriber keeps trying
  spdlog::info("event=started listen={}:{} data={} durability={} threads={}", options_.gateway.host, *port,
               options_.data_dir, options_.durability, threads);
  return *port;
}

void Server::schedule_purge() {
  // Its own thread: the purge walks the expiry index, a store scan that must not hold up a
  // loop (every connection of that loop would wait).
  purge_thread_ = std::thread([this] {
    set_thread_name("tern-purge");
    std::unique_lock lock(purge_mu_);
    while (!purge_cv_.wait_for(lock, std::chrono::minutes(10), [this] { return purge_stop_; })) {
      lock.unlock();
      auto n = store_->purge_expired(now_ms());
      if (n && *n) spdlog::info("event=idempotency_purged keys={}", *n);
      lock.lock();
    }
  });
}

void Server::stop_purge() {
  {
    std::lock_guard lock(purge_mu_);
    purge_stop_ = true;
  }
  purge_cv_.notify_all();
  if (purge_thread_.joinable() && purge_thread_.get_id() != std::this_thread::get_id()) purge_thread_.join();
}

void Server::wait_reload_signal() {
  reload_signal_->async_wait([this](const boost::system::error_code& ec, int) {
    if (ec) return;
    const bool gateway_tls = !options_.gateway.tls_cert_file.empty();
    if (!gateway_tls && !options_.redis_tls)
      spdlog::info("event=signal signal=SIGHUP action=none reason=\"no TLS certificate configured\"");
    if (gateway_tls) {
      if (auto r = listener_->reload_tls(); !r)
        spdlog::error("event=tls_reload_failed error=\"{}\" action=kept_old_certificate", r.error().message);
      else
        spdlog::info("event=tls_reloaded cert={}", options_.gateway.tls_cert_file);
    }
    // TLS to Redis: the connections made from now on (reconnects, a Cluster's new nodes) use
    // the files as they are now; live ones keep theirs.
    if (options_.redis_tls) {
      const auto& f = options_.redis_tls->files();
      if (auto r = options_.redis_tls->reload(); !r)
        spdlog::error("event=redis_tls_reload_failed error=\"{}\" action=kept_old_files", r.error().message);
      else
        spdlog::info("event=redis_tls_reloaded ca={} cert={}", f.ca_file.empty() ? "system" : f.ca_file,
                     f.cert_file.empty() ? "none" : f.cert_file);
      note_redis_cert_expiry(*options_.redis_tls);
    }
    wait_reload_signal();
  });
}

void Server::shutdown() {
  listener_->stop_accepting();
  if (reload_signal_) {
    boost::system::error_code ignored;
    reload_signal_->cancel(ignored);
  }
  if (admin_listener_) admin_listener_->stop_accepting();
  service_->begin_drain();
  stop_purge();
  // Give the close handshakes a moment (bounded), while the I/O threads keep running.
  std::thread([this] {
    // On Redis, other nodes may be forwarding sends here: they stop at their next look at who
    // is live, and until then this node answers what they send (the services refuse only
    // this node's own clients while draining), so no forwarded send waits out its timeout.
    // Before the clients are closed: their devices' registry entries are then left for the
    // other nodes to mend (RedisBus::leave), so a user who reconnects there stays online.
    const auto serve_until = std::chrono::steady_clock::now() + bus_->leave();
    listener_->close_all(1001);
    for (int i = 0; i < 40 && listener_->connections() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::this_thread::sleep_until(serve_until);
    service_->stop();  // commits everything already queued
    if (auto r = store_->flush(); !r) spdlog::error("event=flush_failed error=\"{}\"", r.error().message);
    loops_->stop();  // the last thing this thread touches: run() tears everything down after it
  }).detach();
}

void Server::run() {
  loops_->join();
  admin_listener_.reset();
  listener_.reset();
  bus_->stop();  // its threads call into the services (sinks, device counts): joined first
  service_.reset();
  blobs_.reset();
  store_.reset();
  spdlog::info("event=stopped");
}

}  // namespace tern::server
