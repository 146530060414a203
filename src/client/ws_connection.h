// One WebSocket connection to /v1/ws: connect, handshake with the bearer token, read text
// frames, write from a bounded queue, close. It does not reconnect: the Client makes a new
// one per attempt and ignores callbacks of a connection it has dropped.
// Internal to the SDK (not part of the public header set).
//
// Thread affinity: everything (calls and callbacks) runs on the strand given at
// construction. Write queue: at most max_queue frames. Over a quarter of it, droppable
// frames (typing, presence) are dropped; at the limit a non-droppable frame closes the
// connection instead (everything it carried is recovered on reconnect: the outbox resends,
// the server replays).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include "base/result.h"
#include "client/server_url.h"

namespace tern::client {

struct WsHandlers {
  std::function<void()> on_open;
  std::function<void(std::string_view text)> on_text;
  // Exactly once, after on_open or instead of it. kUnauthorized when the upgrade was refused
  // with 401 (the token is bad: reconnecting will not help).
  std::function<void(Error)> on_close;
};

struct WsOptions {
  int64_t connect_timeout_ms = 10'000;  // TCP connect plus upgrade
  int64_t idle_timeout_ms = 30'000;     // pings at half of it; silence for all of it: closed
  size_t max_queue = 4096;
  size_t max_frame_bytes = 4 << 20;
};

// Over plain TCP (http://) or TLS (https://: the certificate is verified during connect; a
// certificate that does not verify ends the attempt with tls_handshake_error(), which the
// Client treats as permanent). Virtual only at this boundary (a few calls per message).
class WsConnection {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  static std::shared_ptr<WsConnection> create(Strand strand, ServerUrl url, std::string token, WsOptions options,
                                              WsHandlers handlers);
  virtual ~WsConnection() = default;

  virtual void start() = 0;
  // Queues a text frame; false if it was dropped (droppable and the queue is busy) or the
  // connection is not open.
  virtual bool send(std::string frame, bool droppable = false) = 0;
  // Closes (normal closure); on_close follows.
  virtual void close() = 0;
  virtual bool open() const = 0;
};

}  // namespace tern::client
