// The composition root: options → store backend → bus backend → services → gateway, plus
// the event loops (one thread each, thread-per-core), the periodic purge of expired
// idempotency keys, and signal handling.
// The only place that names concrete backends (RocksDbStore or RedisStore, LocalBus).
//
// Thread affinity: construct, start() and run() from the main thread. run() blocks until
// SIGTERM/SIGINT, then drains: stop accepting, tell the other nodes this one is leaving
// (Bus::leave; on Redis), close WebSockets with 1001, serve what the others forward
// meanwhile, commit what is queued, flush the store.
#pragma once
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/signal_set.hpp>

#include "base/loops.h"
#include "base/result.h"
#include "server/server_options.h"

namespace tern::store { class Store; class BlobStore; }
namespace tern::bus { class Bus; }
namespace tern::services { class TernService; }
namespace tern::gateway { class Listener; }

namespace tern::server {

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();

  // Opens the store and starts listening; returns the bound port.
  Result<uint16_t> start();
  // Serves until SIGTERM or SIGINT, then shuts down cleanly. SIGHUP re-reads the TLS
  // certificate and key, and the files of TLS to Redis (a bad file is logged and the old
  // ones kept).
  void run();

 private:
  void schedule_purge();
  void stop_purge();
  void shutdown();
  void wait_reload_signal();

  ServerOptions options_;
  // Loops keep serving until the drain thread ends them, even when no connection is left.
  std::unique_ptr<Loops> loops_;
  std::unique_ptr<boost::asio::signal_set> signals_;    // on loop 0
  std::thread purge_thread_;  // every 10 minutes: expired idempotency keys
  std::mutex purge_mu_;
  std::condition_variable purge_cv_;
  bool purge_stop_ = false;  // guarded by purge_mu_
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<store::BlobStore> blobs_;  // media (issue 11), under <data>/media
  std::unique_ptr<bus::Bus> bus_;
  std::unique_ptr<services::TernService> service_;
  std::unique_ptr<gateway::Listener> listener_;
  std::unique_ptr<gateway::Listener> admin_listener_;  // issue 12: --admin-listen
  std::unique_ptr<boost::asio::signal_set> reload_signal_;  // SIGHUP, on loop 0
};

}  // namespace tern::server
