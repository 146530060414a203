// Listener: the gateway's entry point. Binds one TCP address, accepts connections and gives
// each its own strand and an HttpSession (which may become a WebSocketSession).
//
// Ownership: the caller owns the Listener, the io_context and the ServiceInterface. The
// Listener's state is shared with its pending handlers and sessions, so destroying the
// Listener while the io_context still runs is safe (accepting stops). The ServiceInterface
// must outlive the io_context's run (sessions call into it until they end).
//
// Threading: the io_context is run by threads the caller owns (any number); every session
// runs on its own strand. All public methods are thread-safe.
//
// Shutdown sequence (what ternd does): stop_accepting(); close_all(1001); wait (bounded)
// for connections() to reach 0; stop the io_context; join its threads. Sessions end only
// while the io_context runs, and on_close() reaches the services only then.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

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
  const GatewayOptions& options() const;

 private:
  std::shared_ptr<ListenerState> state_;
};

}  // namespace tern::gateway
