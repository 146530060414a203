// Listener: the gateway's entry point. Binds one TCP address, accepts connections, places
// each on one event loop (round-robin) and gives it an HttpSession (which may become a
// WebSocketSession). A connection stays on its loop for its whole life.
//
// Ownership: the caller owns the Listener, the io_context and the ServiceInterface. The
// Listener's state is shared with its pending handlers and sessions, so destroying the
// Listener while the io_context still runs is safe (accepting stops). The ServiceInterface
// must outlive the io_context's run (sessions call into it until they end).
//
// Threading (thread-per-core): with the loops constructor, each io_context must be run by
// exactly one thread the caller owns; every handler of a connection runs on its loop's
// thread, straight on the io_context's executor (no strands). The acceptor lives on
// loops[0]. The single-io_context constructor keeps the old contract: that io_context may
// be run by any number of threads, so each connection gets its own strand there (pass a
// vector of one io_context to get the strand-free loop). All public methods are thread-safe.
//
// Shutdown sequence (what ternd does): stop_accepting(); close_all(1001); wait (bounded)
// for connections() to reach 0; stop the io_context; join its threads. Sessions end only
// while the io_context runs, and on_close() reaches the services only then.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/result.h"
#include "gateway/gateway_options.h"
#include "gateway/service_interface.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace tern::gateway {

class ListenerState;

class Listener {
 public:
  // One event loop per io_context; loops[i] is Connection::loop_index() i. Not empty.
  Listener(std::vector<boost::asio::io_context*> loops, GatewayOptions options, ServiceInterface& service);
  // One loop (index 0) that may be run by several threads (connections get strands).
  Listener(boost::asio::io_context& ioc, GatewayOptions options, ServiceInterface& service);
  ~Listener();  // stops accepting; live sessions carry on until they end or close_all()
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Binds (SO_REUSEADDR), listens and starts accepting. Returns the bound port (useful with
  // port 0). Errors: bad options or address, port in use, already started.
  Result<uint16_t> start();
  // Stops accepting new connections (the listening socket closes). Idempotent.
  void stop_accepting();
  // Closes every live session: WebSockets with `code` (1001 at shutdown), dropping their
  // unsent frames; idle HTTP connections now, busy ones after their response. Sessions that
  // register afterwards are closed at once too. Returns without waiting.
  void close_all(uint16_t code);
  // Live TCP connections: HTTP and WebSocket sessions together.
  size_t connections() const;
  // Connections in each budget (see GatewayOptions::max_connections and
  // max_unauthenticated_connections).
  size_t authenticated_connections() const;
  size_t unauthenticated_connections() const;
  // Payload bytes queued in the process (WebSocket queues and HTTP responses).
  size_t queued_bytes() const;
  const GatewayOptions& options() const;
  // Re-reads the TLS certificate and key files (after start()): new connections get the new
  // ones, live connections keep theirs. On error the old certificate stays. Any thread.
  Result<void> reload_tls();

 private:
  Listener(std::vector<boost::asio::io_context*> loops, GatewayOptions options, ServiceInterface& service,
           bool shared_loop);
  std::shared_ptr<ListenerState> state_;
};

}  // namespace tern::gateway
