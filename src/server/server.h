// The composition root: options → store backend → bus backend → services → gateway, plus
// the I/O threads, the periodic purge of expired idempotency keys, and signal handling.
// The only place that names concrete backends (RocksDbStore, LocalBus).
//
// Thread affinity: construct, start() and run() from the main thread. run() blocks until
// SIGTERM/SIGINT, then drains: stop accepting, close WebSockets with 1001, commit what is
// queued, flush the store.
#pragma once
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "base/result.h"
#include "server/server_options.h"

namespace tern::store { class Store; }
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
  // Serves until SIGTERM or SIGINT, then shuts down cleanly.
  void run();

 private:
  void schedule_purge();
  void shutdown();

  ServerOptions options_;
  boost::asio::io_context io_;
  // Keeps run() serving until the drain thread ends it, even when no connection is left.
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{io_.get_executor()};
  boost::asio::signal_set signals_{io_};
  boost::asio::steady_timer purge_timer_{io_};
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<bus::Bus> bus_;
  std::unique_ptr<services::TernService> service_;
  std::unique_ptr<gateway::Listener> listener_;
  std::vector<std::thread> threads_;
};

}  // namespace tern::server
