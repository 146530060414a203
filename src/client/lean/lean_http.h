// HttpClient: a small blocking HTTP/1.1 client (keep-alive, one connection, reconnects once
// when the server closed it; HTTPS for an https:// server) for tern-bench's set-up calls: registering users, creating
// conversations and, with --encrypt, uploading keys and fetching bundles. Not on the measured
// path. Also the server URL parser shared by tern-bench.
//
// Ownership and threads: one HttpClient per thread; it owns its io_context and socket. Every
// call blocks the calling thread for at most the configured timeout per I/O step.
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"
#include "client/lean/lean_tls.h"

namespace tern::client::lean {

struct ServerAddress {
  std::string host;  // as given ("127.0.0.1", "localhost")
  uint16_t port = 8080;
  boost::asio::ip::tcp::endpoint endpoint;  // resolved
  // https:// or wss://: the process's TLS configuration, shared by every connection (HTTP and
  // WebSocket) made from this address and its copies. Null: plain TCP.
  std::shared_ptr<const LeanTls> tls;
  std::string host_header() const { return host + ":" + std::to_string(port); }
  std::string url() const { return (tls ? "https://" : "http://") + host_header(); }
};

// Parses "http://host:port", "https://host:port" (or "wss://"), "mqtt://host:port" (or
// "tcp://") or "host:port" and resolves the host. For https, makes the TLS context, trusting
// `ca_file` (PEM) besides the system store when not empty. "mqtts://" is refused: the MQTT
// client speaks plain TCP only.
Result<ServerAddress> parse_server_url(std::string_view url, const std::string& ca_file = {});

struct HttpResponse {
  int status = 0;
  std::string body;
};

class HttpClient {
 public:
  explicit HttpClient(ServerAddress server, int timeout_ms = 30000);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // POST with a JSON body; `token` adds "Authorization: Bearer". Any HTTP status is a value;
  // only transport failures are errors.
  Result<HttpResponse> post_json(std::string_view target, std::string_view body, std::string_view token = {});
  Result<HttpResponse> get(std::string_view target, std::string_view token = {});
  // PUT with a JSON body (tern-bench --encrypt uploads its keys: PUT /v1/keys).
  Result<HttpResponse> put_json(std::string_view target, std::string_view body, std::string_view token = {});

 private:
  enum class Method { kGet, kPost, kPut };
  Result<HttpResponse> request(Method method, std::string_view target, std::string_view body, std::string_view token);
  Result<HttpResponse> attempt(Method method, std::string_view target, std::string_view body, std::string_view token);
  Result<void> ensure_connected();
  void disconnect();

  ServerAddress server_;
  int timeout_ms_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_;
  // https: TLS over socket_, made on each connect.
  std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;
  std::string buffer_;
};

}  // namespace tern::client::lean
