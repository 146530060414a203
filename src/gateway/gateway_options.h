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
  // Frames queued per WebSocket (the in-flight one included). Overflow policy: the
  // connection is closed with 1008 "slow consumer"; the client replays on reconnect.
  size_t write_queue_frames = 4096;
  // A WebSocket silent for this long is pinged; silent for twice this long, it is closed.
  std::chrono::seconds ping_interval{30};
  // Time allowed for the WebSocket opening handshake, and again for the closing one.
  std::chrono::seconds handshake_timeout{10};
  // Time allowed to receive one whole HTTP request (headers and body) on a connection.
  std::chrono::seconds http_idle_timeout{30};
  // TCP connections (HTTP and WebSocket together). Beyond it a new connection is answered
  // 503 (best effort, never blocking) and closed at once.
  size_t max_connections = 19000;
};

}  // namespace tern::gateway
