// GatewayOptions: the network layer's knobs (address, limits, timeouts). A plain value,
// copied into the Listener at construction; thread-safe to share read-only.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tern::gateway {

struct GatewayOptions {
  // Numeric IP address (or a host name resolved once at start()).
  std::string host = "127.0.0.1";
  // 0 = let the kernel pick a free port; Listener::start() returns the bound one.
  uint16_t port = 8080;
  // Largest WebSocket message accepted; a bigger one closes that connection with 1009.
  size_t max_frame_bytes = 262144;
  // Largest HTTP request body; a bigger one is answered 413 and the connection closed.
  size_t max_http_body_bytes = 65536;
  // Payload bytes queued per WebSocket and not yet written (the frame being written
  // included). Overflow policy: the send() that would exceed it closes the connection with
  // 1008 "slow consumer" (unsent frames dropped; the client replays on reconnect). A frame
  // offered to an empty queue is always accepted, whatever its size.
  size_t write_queue_bytes = 1048576;
  // Bytes queued in the whole process: WebSocket write queues plus HTTP responses being
  // written. Over it, a send() closes its connection as a slow consumer if that connection
  // has more than 64 KiB queued (otherwise the frame is still accepted: small queues keep
  // working while the hogs are shed); an HTTP response that does not fit is replaced by
  // 503 `overloaded` and the connection closed.
  size_t global_queue_bytes = 256u * 1024 * 1024;
  // Text messages one connection may hand to the service per event-loop turn; the rest wait
  // for the next turn (in the connection's buffer), so one flooding client cannot starve
  // the other connections of its loop.
  size_t frames_per_turn = 32;
  // Ping/pong/close frames a client may send: a token bucket per connection (rate per
  // second, burst). Beyond it the connection is closed with 1008 "too many control frames".
  double control_frames_per_sec = 10;
  double control_frames_burst = 20;
  // Bytes per second read from one WebSocket (token bucket; burst = max_frame_bytes). When
  // the bucket is empty the server stops reading that socket until it refills: TCP pushes
  // back on the client; nothing is closed. 0 = unlimited.
  size_t max_input_bytes_per_sec = 1048576;
  // A WebSocket silent for this long is pinged; silent for twice this long, it is closed.
  std::chrono::seconds ping_interval{30};
  // Time allowed for the WebSocket opening handshake, and again for the closing one.
  std::chrono::seconds handshake_timeout{10};
  // Time allowed to receive one whole HTTP request (headers and body) on a connection.
  std::chrono::seconds http_idle_timeout{30};
  // Authenticated connections: WebSockets, and HTTP connections after a request carrying a
  // valid device token. One more is answered 503 `overloaded` "too many connections" (the
  // upgrade or the request that would have authenticated it) and closed.
  size_t max_connections = 19000;
  // Connections not (yet) authenticated: every accepted TCP connection starts here. Beyond
  // it a new connection is answered 503 (best effort, never blocking) and closed at once.
  // They do not count against max_connections.
  size_t max_unauthenticated_connections = 1024;
  // An unauthenticated connection is closed this long after it was accepted (after the
  // response in progress, if any), even if it keeps sending requests.
  std::chrono::seconds unauthenticated_timeout{10};
  // TLS: both set → the port speaks only TLS (HTTPS and WSS): PEM certificate (its chain
  // after it) and PEM private key. Both empty → plain TCP. One without the other is an error.
  std::string tls_cert_file;
  std::string tls_key_file;
};

}  // namespace tern::gateway
