#include "client/server_url.h"

#include <charconv>

#include "client/tls.h"

namespace tern::client {

Result<ServerUrl> parse_server_url(std::string_view text, const std::string& ca_file) {
  std::string_view rest = text;
  ServerUrl url;
  if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
    url.port = 443;
    auto tls = make_tls_context(ca_file);
    if (!tls) return tls.error();
    url.tls = std::move(*tls);
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.find("://") != std::string_view::npos) {
    return make_error(ErrorCode::kInvalidArgument, "server URL must start with http:// or https://");
  }
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view path = rest.substr(slash);
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    url.prefix = std::string(path);
  }
  if (authority.empty()) return make_error(ErrorCode::kInvalidArgument, "server URL has no host");
  std::string_view host = authority;
  if (authority.front() == '[') {  // [::1]:8080
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return make_error(ErrorCode::kInvalidArgument, "bad IPv6 host");
    host = authority.substr(1, close - 1);
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() != ':')
      return make_error(ErrorCode::kInvalidArgument, "bad server URL");
  } else {
    const auto colon = authority.rfind(':');
    host = authority.substr(0, colon);
    authority = colon == std::string_view::npos ? std::string_view() : authority.substr(colon);
  }
  if (!authority.empty()) {  // ":port"
    std::string_view p = authority.substr(1);
    unsigned port = 0;
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (p.empty() || ec != std::errc() || ptr != p.data() + p.size() || port == 0 || port > 65535)
      return make_error(ErrorCode::kInvalidArgument, "bad port in server URL");
    url.port = static_cast<uint16_t>(port);
  }
  if (host.empty()) return make_error(ErrorCode::kInvalidArgument, "server URL has no host");
  url.host = std::string(host);
  return url;
}

}  // namespace tern::client
