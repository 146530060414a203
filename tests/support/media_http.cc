#include "support/media_http.h"

#include <sodium.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "base/hex.h"

namespace tern::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

json::object RawHttp::obj() const {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return {};
  return v.as_object();
}

RawHttp raw_http(uint16_t port, std::string_view method, std::string_view target,
                 const std::map<std::string, std::string>& headers, std::string_view body, ms timeout) {
  RawHttp out;
  net::io_context io;
  beast::tcp_stream stream(io);
  beast::error_code ec;
  stream.expires_after(timeout);
  stream.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return out;
  http::request<http::string_body> req(http::string_to_verb(method), std::string(target), 11);
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = std::string(body);
  req.prepare_payload();
  stream.expires_after(timeout);
  http::write(stream, req, ec);
  if (ec) return out;
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(512ULL << 20);
  stream.expires_after(timeout);
  http::read(stream, buf, parser, ec);
  if (ec) return out;
  auto res = parser.release();
  out.status = static_cast<int>(res.result_int());
  for (const auto& f : res) {
    std::string name(f.name_string());
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    out.headers[name] = std::string(f.value());
  }
  out.body = std::move(res.body());
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  return out;
}

RawHttp upload(uint16_t port, std::string_view token, std::string_view bytes) {
  return raw_http(port, "POST", "/v1/media",
                  {{"Authorization", "Bearer " + std::string(token)}, {"Content-Type", "application/octet-stream"}},
                  bytes);
}

RawHttp download(uint16_t port, std::string_view token, std::string_view id, std::string_view range) {
  std::map<std::string, std::string> h{{"Authorization", "Bearer " + std::string(token)}};
  if (!range.empty()) h["Range"] = std::string(range);
  return raw_http(port, "GET", "/v1/media/" + std::string(id), h, {});
}

bool send_truncated(uint16_t port, std::string_view method, std::string_view target,
                    const std::map<std::string, std::string>& headers, uint64_t announced, std::string_view body) {
  RawConn c;
  if (!c.connect(port)) return false;
  std::string head = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& [k, v] : headers) head += k + ": " + v + "\r\n";
  head += "Content-Length: " + std::to_string(announced) + "\r\n\r\n";
  if (!c.write_all(head) || !c.write_all(body)) return false;
  c.close();
  return true;
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char d[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(d, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return hex_encode(d, sizeof d);
}

std::string random_bytes(size_t n) {
  std::string s(n, '\0');
  randombytes_buf(s.data(), s.size());
  return s;
}

std::vector<std::string> files_containing(const std::string& dir, std::string_view needle) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::end(it);
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::ifstream in(it->path(), std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.find(needle) != std::string::npos) out.push_back(it->path().string());
  }
  return out;
}

std::vector<std::string> files_containing(const std::vector<std::string>& dirs, std::string_view needle) {
  std::vector<std::string> out;
  for (const auto& d : dirs)
    for (auto& f : files_containing(d, needle)) out.push_back(std::move(f));
  return out;
}

size_t count_files(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::end(it);
       it.increment(ec))
    if (it->is_regular_file(ec)) ++n;
  return n;
}

bool eventually(const std::function<bool()>& cond, ms timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(ms(50));
  }
}

}  // namespace tern::test
