// ternd's options: defaults, a TOML config file, then command-line flags (flags win).
// Plain value; read-only once the server starts.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "gateway/gateway_options.h"
#include "server/open_options.h"
#include "services/service_options.h"
#include "store/redis/redis_connection.h"

namespace tern::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:8080";
  std::string data_dir = "./tern-data";
  std::string durability = "sync";   // sync | none (benchmarks only: acknowledged ≠ durable)
  std::string log_level = "info";
  std::string metrics_token;         // empty: any device token may read /metrics
  size_t threads = 0;                // event loops; 0: one per core but one (the store writer)
  size_t block_cache_mb = 128;
  // Issue 10: the shared store for several nodes (docs/scaling.md).
  std::string store = "rocksdb";     // rocksdb (embedded, default) | redis
  std::string redis_url;             // --store redis: redis://[USER:PASSWORD@]HOST:PORT[,...] (never logged whole)
  std::string redis_user;            // an ACL user to log in as (default: Redis's `default` user)
  std::string redis_password_file;   // holds the password (requirepass or the user's), kept off the command line
  // rediss:// (TLS): the CA that signed Redis's certificate (empty: the system's), and the
  // client certificate and key the node shows (Redis's tls-auth-clients asks for one).
  std::string redis_tls_ca;
  std::string redis_tls_cert;
  std::string redis_tls_key;
  // Resolved by parse_options from the ones above (the URL's credentials or the file's, the TLS context).
  std::vector<store::redis::RedisAddress> redis_seeds;
  store::redis::RedisCredentials redis_credentials;
  std::shared_ptr<store::redis::RedisTls> redis_tls;  // the same context as redis_credentials.tls, to reload on SIGHUP
  std::string media_dir;             // media blobs (default: <data>/media); shared by nodes on one Redis
  std::string node_id;               // this node's name among the nodes on one Redis (default: hostname:port)
  int redis_wait_replicas = 0;       // > 0: WAIT for this many Redis replicas before `sent`
  int64_t redis_timeout_ms = 2000;   // one Redis command; beyond it the call fails with `unavailable`
  size_t redis_read_threads = 4;     // StoreReads: every store read in Redis mode without fibers
  size_t redis_read_fibers = 16;     // StoreReads: per loop, the sessions' and sequencing's reads in Redis mode
  int64_t redis_commit_gap_us = 3000;  // GroupCommitter::set_min_gap in Redis mode (docs/scaling.md "The commit gap")
  int64_t redis_media_usage_ttl_ms = 10000;  // Media's cached quota usage read again after this, in Redis mode
  int redis_route_devices = 1;       // 1: a device's events go to the node that holds it (0: to every node)
  int redis_drop_nowhere = 1;        // 1: events for a device no node holds go nowhere (0: to every node)
  int redis_route_sends = 1;         // 1: each conversation's sends are sequenced on one node (its owner)

  gateway::GatewayOptions gateway;
  services::ServiceOptions services;
  OpenOptions open;  // issue 12: admin, push, TLS (open_options.h)
};

// Parses argv (and the --config file it names). On --help, prints usage and returns an
// Error with code kOk so the caller exits 0; other errors are kInvalidArgument.
Result<ServerOptions> parse_options(int argc, char** argv);

}  // namespace tern::server
