#include "server/open_options.h"

#include <charconv>

#include "server/secret_file.h"
#include "server/server_options.h"
#include "services/push_notifier.h"

namespace tern::server {

void describe_open_options(CLI::App& app, ServerOptions& o) {
  auto& s = o.services;
  auto& p = o.open;
  app.add_option("--invite-rate", s.invite_rate_per_min,
                 "users a user may add to groups per minute (token bucket refill; 0 = unlimited)")->capture_default_str();
  app.add_option("--invite-burst", s.invite_burst, "token bucket size for group invites")->capture_default_str();
  app.add_option("--report-rate", s.report_rate_per_hour, "abuse reports per user per hour (0 = unlimited)")
      ->capture_default_str();
  app.add_option("--report-burst", s.report_burst, "token bucket size for abuse reports")->capture_default_str();
  app.add_option("--max-report-bytes", s.max_report_bytes, "largest report attachment (decoded bytes)")
      ->capture_default_str();
  app.add_option("--admin-listen", p.admin_listen,
                 "HOST:PORT of the admin endpoint (keep it on loopback); needs --admin-token-file");
  app.add_option("--admin-token-file", p.admin_token_file, "file holding the admin token (every admin call needs it)");
  app.add_option("--push-webhook", s.push_webhook,
                 "http://HOST:PORT/PATH called with the devices to wake (device + push token, no content)");
  app.add_option("--push-queue", s.push_queue, "devices waiting for a push; beyond it new ones are dropped (counted)")
      ->capture_default_str();
  app.add_option("--push-batch", s.push_batch, "devices per webhook call")->capture_default_str();
  app.add_option("--push-attempts", s.push_attempts, "tries per webhook call (exponential backoff) before it is dropped")
      ->capture_default_str();
}

void read_open_toml(const toml::table& t, std::set<std::string, std::less<>>& known, ServerOptions& o) {
  // One reader for every kind of value: the TOML type follows the option's C++ type.
  auto read = [&](const char* key, auto& out) {
    using T = std::remove_reference_t<decltype(out)>;
    known.insert(key);
    if constexpr (std::is_same_v<T, std::string>) {
      if (auto v = t[key].value<std::string>()) out = *v;
    } else if constexpr (std::is_floating_point_v<T>) {
      if (auto v = t[key].value<double>()) out = *v;
    } else if (auto v = t[key].value<int64_t>()) {
      out = static_cast<T>(*v);
    }
  };
  read("invite_rate", o.services.invite_rate_per_min);
  read("invite_burst", o.services.invite_burst);
  read("report_rate", o.services.report_rate_per_hour);
  read("report_burst", o.services.report_burst);
  read("max_report_bytes", o.services.max_report_bytes);
  read("admin_listen", o.open.admin_listen);
  read("admin_token_file", o.open.admin_token_file);
  read("push_webhook", o.services.push_webhook);
  read("push_queue", o.services.push_queue);
  read("push_batch", o.services.push_batch);
  read("push_attempts", o.services.push_attempts);
}

Result<void> check_open_options(ServerOptions& o) {
  auto bad = [](std::string m) { return make_error(ErrorCode::kInvalidArgument, std::move(m)); };
  if (o.services.invite_rate_per_min < 0 || o.services.report_rate_per_hour < 0) return bad("rates must be >= 0");
  if (!o.open.admin_listen.empty()) {
    if (o.open.admin_token_file.empty()) return bad("--admin-listen needs --admin-token-file (an admin token is always required)");
    auto token = read_secret_file(o.open.admin_token_file, "--admin-token-file");
    if (!token) return token.error();
    if (token->size() < 16) return bad("the admin token must be at least 16 characters");
    o.open.admin_token = std::move(token).value();
    const auto colon = o.open.admin_listen.rfind(':');
    unsigned port = 0;
    const std::string p = colon == std::string::npos ? "" : o.open.admin_listen.substr(colon + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (p.empty() || ec != std::errc() || end != p.data() + p.size() || port > 65535)
      return bad("--admin-listen must be HOST:PORT");
    o.open.admin_host = o.open.admin_listen.substr(0, colon);
    o.open.admin_port = static_cast<uint16_t>(port);
  }
  if (!o.services.push_webhook.empty())
    if (auto p = services::parse_push_webhook(o.services.push_webhook); !p) return p.error();
  if (o.services.push_queue < 1 || o.services.push_batch < 1 || o.services.push_attempts < 1)
    return bad("--push-queue, --push-batch and --push-attempts must be >= 1");
  return {};
}

}  // namespace tern::server
