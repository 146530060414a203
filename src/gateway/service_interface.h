// The seam between the network and the services. The gateway (Beast listener and sessions)
// owns these interfaces; the services implement ServiceInterface and FrameHandler, and use
// Connection to write back. Nothing here names Asio or Beast.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "base/ids.h"
#include "base/result.h"

namespace tern::gateway {

struct HttpRequest {
  std::string method;          // "GET", "POST", ...
  std::string path;            // target without the query, e.g. "/v1/conversations/x/messages"
  std::string query;           // raw query string without '?'
  std::string bearer_token;    // from "Authorization: Bearer …" (empty if absent)
  std::string body;
  std::string remote_address;  // the peer's IP address, e.g. "127.0.0.1" (rate limits key on it)
  // Headers the media routes need (empty / absent when not sent).
  std::string range;          // "Range"
  std::string content_range;  // "Content-Range"
  std::optional<uint64_t> content_length;  // "Content-Length" (absent for chunked bodies)
};

// A response body read in pieces instead of held in memory (large downloads). read() is
// called on the HTTP session's loop, sequentially, until body_length bytes were produced.
class BodySource {
 public:
  virtual ~BodySource() = default;
  // Fills up to n bytes; returns how many (0 or an error ends the connection early).
  virtual Result<size_t> read(char* out, size_t n) = 0;
};

struct HttpResponse {
  HttpResponse() = default;
  HttpResponse(int status_, std::string body_, std::string content_type_ = "application/json")
      : status(status_), body(std::move(body_)), content_type(std::move(content_type_)) {}
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers, e.g. Content-Range
  // When set, the body is streamed from `source` (exactly source_length bytes; Content-Length
  // says so) and `body` is ignored.
  std::shared_ptr<BodySource> source;
  uint64_t source_length = 0;
};

// Called exactly once per request, from any thread.
using HttpReply = std::function<void(HttpResponse)>;

// A request body streamed to the service as it arrives instead of buffered whole (uploads
// far above max_http_body_bytes). Runs on the HTTP session's loop; at most one chunk buffer
// (64 KiB) is held by the gateway at a time, so memory stays bounded whatever the size.
class BodySink {
 public:
  // Destroyed without finish() when the body did not arrive whole (client gone, idle
  // timeout, a write() error): the service discards what it kept, or keeps a resumable part.
  virtual ~BodySink() = default;
  // The next piece of the body, in order. An error ends the request: the gateway answers
  // with it (its code's status) and closes the connection.
  virtual Result<void> write(std::string_view chunk) = 0;
  // Every byte of the body arrived. Answer through reply (once, from any thread).
  virtual void finish(HttpReply reply) = 0;
};

// What the service decides from a request's headers, before its body is read:
// buffer it as usual (monostate: handle_http gets it, subject to max_http_body_bytes),
// stream it into a sink, or answer at once without reading it (e.g. 413 for an oversize
// upload; the connection is then closed).
using BodyDecision = std::variant<std::monostate, std::shared_ptr<BodySink>, HttpResponse>;

// A live WebSocket connection. Owned by the gateway (shared_ptr); the service holds it while
// it wants to write. Thread affinity: each connection lives on one event loop (one thread,
// see Listener) for its whole life; send(), queued_bytes() and close() must run there: from
// FrameHandler callbacks, or inside a function given to post(). post(), id(),
// queue_limit_bytes() and loop_index() may be called from any thread.
class Connection {
 public:
  virtual ~Connection() = default;
  // Queues one text frame (shared, never copied; written with the other frames queued in
  // the same loop turn, in one gathered write). The write queue is bounded in bytes: a
  // send() that would take it over queue_limit_bytes() (or that finds the process-wide
  // budget exhausted while this connection holds more than 64 KiB) closes the connection
  // (code 1008, "slow consumer": the client replays on reconnect), drops the unsent frames
  // and returns false. A frame offered to an empty queue is always accepted. Also false
  // once the connection is closing or closed.
  virtual bool send(std::shared_ptr<const std::string> frame) = 0;
  // Payload bytes queued and not yet written; services pace bulk work (replay) by it.
  virtual size_t queued_bytes() const = 0;
  virtual size_t queue_limit_bytes() const = 0;
  // Closes with a WebSocket close code (1000 normal, 1001 going away, 1008 policy): the
  // frames queued before are written first, then the close frame.
  virtual void close(uint16_t code, std::string reason) = 0;
  // Runs fn on this connection's loop (dropped if the connection is already gone).
  virtual void post(std::function<void()> fn) = 0;
  virtual uint64_t id() const = 0;
  // The index of the connection's event loop in the Listener's loops (0 with the
  // single-io_context constructor). Services may keep per-loop state by it.
  virtual size_t loop_index() const = 0;
};

// The service's side of one connection. Every callback runs on the connection's loop.
class FrameHandler {
 public:
  virtual ~FrameHandler() = default;
  virtual void on_text(std::string_view frame) = 0;
  // Called after a write to the socket completed when the queue is then at or below half
  // of queue_limit_bytes() (at most once per completed write): resume paced work (replay).
  virtual void on_writable() = 0;
  // The connection is gone (closed by either side, timed out, or server stopping). Called
  // exactly once per open(); afterwards the gateway drops the handler and every further
  // send() returns false. Release the Connection here (the handler usually holds it, which
  // keeps the connection alive until then).
  virtual void on_close() = 0;
};

class ServiceInterface {
 public:
  virtual ~ServiceInterface() = default;
  // Any HTTP request that is not the WebSocket upgrade. Runs on the HTTP session's loop;
  // reply may be called later from any thread.
  virtual void handle_http(HttpRequest request, HttpReply reply) = 0;
  // Called on the HTTP session's loop once a request's headers are read (not for the
  // WebSocket upgrade); `head` has every field but the body. Default: buffer every body.
  virtual BodyDecision open_body(const HttpRequest& /*head*/) { return std::monostate{}; }
  // The same decision, given to `done` exactly once: inline, or later from any thread (a
  // decision that reads a remote store, e.g. an upload's token check, answers from another
  // thread so that the loop does not wait). The session reads nothing more from its socket
  // until then. Called on the HTTP session's loop. Default: open_body(head), inline.
  using BodyDone = std::function<void(BodyDecision)>;
  virtual void decide_body(const HttpRequest& head, BodyDone done) { done(open_body(head)); }
  // Checks the token of a WebSocket upgrade before it is accepted (failure → HTTP 401).
  // Also called once for the first bearer token on a plain HTTP connection, to count the
  // connection as authenticated (see GatewayOptions::max_unauthenticated_connections).
  // Called on the HTTP session's loop; `done` runs exactly once, inline or later from any
  // thread (a check that reads a remote store answers from another thread, so that the loop
  // does not wait). The session reads nothing from its socket until then.
  using AuthDone = std::function<void(Result<DeviceRef>)>;
  virtual void authenticate(const std::string& token, AuthDone done) = 0;
  // The upgrade completed: returns the handler for the connection's frames. Runs on the
  // connection's loop; send() may be called from here already. A null handler closes the
  // connection with 1011.
  virtual std::shared_ptr<FrameHandler> open(std::shared_ptr<Connection> connection, DeviceRef device) = 0;
};

}  // namespace tern::gateway
