#include "services/push_notifier.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <charconv>

#include "base/metrics.h"
#include "base/thread_name.h"
#include "services/user_records.h"

namespace tern::services {
namespace json = boost::json;
namespace http = boost::beast::http;
namespace {

MetricsRegistry& reg() { return MetricsRegistry::global(); }
Counter& overflow_total = reg().counter("tern_push_overflow_total", "devices not queued for push: the queue was full");
Counter& coalesced_total = reg().counter("tern_push_coalesced_total", "push requests for a device already waiting");
Counter& sent_total = reg().counter("tern_push_sent_total", "devices handed to the push webhook");
Counter& failed_calls = reg().counter("tern_push_failed_calls_total", "push webhook calls that failed (retried)");
Counter& abandoned_total = reg().counter("tern_push_abandoned_total", "devices dropped after every webhook attempt failed");
Counter& no_token_total = reg().counter("tern_push_no_token_total", "offline devices without a push registration");
Gauge& queue_gauge = reg().gauge("tern_push_queue", "devices waiting for a push");

constexpr auto kTimeout = std::chrono::seconds(3);

}  // namespace

Result<PushOptions> parse_push_webhook(const std::string& url) {
  static constexpr std::string_view scheme = "http://";
  auto bad = [] { return make_error(ErrorCode::kInvalidArgument, "--push-webhook must be http://HOST[:PORT][/PATH]"); };
  if (url.rfind(scheme, 0) != 0) return bad();
  std::string_view rest = std::string_view(url).substr(scheme.size());
  PushOptions o;
  const auto slash = rest.find('/');
  if (slash != std::string_view::npos) o.path = std::string(rest.substr(slash));
  std::string_view hostport = rest.substr(0, slash);
  const auto colon = hostport.rfind(':');
  if (colon != std::string_view::npos) {
    unsigned port = 0;
    auto p = hostport.substr(colon + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (ec != std::errc() || end != p.data() + p.size() || port == 0 || port > 65535) return bad();
    o.port = static_cast<uint16_t>(port);
    hostport = hostport.substr(0, colon);
  }
  if (hostport.empty()) return bad();
  o.host = std::string(hostport);
  return o;
}

PushNotifier::PushNotifier(store::Store& store, PushOptions options) : store_(store), options_(std::move(options)) {
  worker_ = std::thread([this] {
    set_thread_name("tern-push");
    run();
  });
}

PushNotifier::~PushNotifier() { stop(); }

void PushNotifier::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void PushNotifier::offline(const DeviceRef& device) {
  {
    std::lock_guard lock(mu_);
    if (waiting_.count(device)) {
      coalesced_total.inc();
      return;
    }
    if (waiting_.size() >= options_.queue) {
      overflow_total.inc();
      return;
    }
    waiting_.insert(device);
    order_.push_back(device);
    queue_gauge.set(static_cast<int64_t>(waiting_.size()));
  }
  cv_.notify_one();
}

size_t PushNotifier::queued() {
  std::lock_guard lock(mu_);
  return waiting_.size();
}

void PushNotifier::run() {
  for (;;) {
    std::vector<DeviceRef> batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !order_.empty(); });
      if (stopping_) return;
      while (!order_.empty() && batch.size() < options_.batch) {
        batch.push_back(std::move(order_.front()));
        order_.pop_front();
        waiting_.erase(batch.back());
      }
      queue_gauge.set(static_cast<int64_t>(waiting_.size()));
    }
    json::array items;
    for (const auto& d : batch) {
      auto rec = store_.user_record(d.user, records::push(d.device));
      if (!rec || !*rec) {
        no_token_total.inc();
        continue;
      }
      boost::system::error_code ec;
      json::value v = json::parse(**rec, ec);
      if (ec || !v.is_object()) continue;
      json::object item = v.as_object();
      item["user"] = d.user;
      item["device"] = d.device;
      items.emplace_back(std::move(item));
    }
    if (items.empty()) continue;
    const size_t n = items.size();
    const std::string body = json::serialize(json::object{{"notifications", std::move(items)}});
    bool ok = false;
    auto backoff = std::chrono::milliseconds(100);
    for (int attempt = 0; attempt < options_.attempts && !ok; ++attempt) {
      if (attempt > 0) {
        std::unique_lock lock(mu_);
        if (cv_.wait_for(lock, backoff, [&] { return stopping_; })) return;
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(5));
      }
      ok = post(body);
      if (!ok) failed_calls.inc();
    }
    if (ok) {
      sent_total.inc(n);
    } else {
      abandoned_total.inc(n);
      spdlog::warn("event=push_abandoned devices={} attempts={}", n, options_.attempts);
    }
  }
}

// Async operations on a private io_context, so that the whole call is bounded by the stream's
// expiry (Beast's timeouts apply to asynchronous operations only).
bool PushNotifier::post(const std::string& body) {
  namespace net = boost::asio;
  net::io_context ioc;
  boost::beast::tcp_stream stream(ioc);
  net::ip::tcp::resolver resolver(ioc);
  boost::system::error_code ec;
  auto endpoints = resolver.resolve(options_.host, std::to_string(options_.port), ec);
  if (ec) return false;
  http::request<http::string_body> req{http::verb::post, options_.path, 11};
  req.set(http::field::host, options_.host + ":" + std::to_string(options_.port));
  req.set(http::field::content_type, "application/json");
  req.set(http::field::connection, "close");
  req.body() = body;
  req.prepare_payload();
  boost::beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);
  bool ok = false;
  stream.expires_after(kTimeout);
  stream.async_connect(endpoints, [&](boost::system::error_code e, const net::ip::tcp::endpoint&) {
    if (e) return;
    http::async_write(stream, req, [&](boost::system::error_code e2, size_t) {
      if (e2) return;
      http::async_read(stream, buf, parser, [&](boost::system::error_code e3, size_t) {
        if (e3) return;
        const unsigned status = parser.get().result_int();
        ok = status >= 200 && status < 300;
      });
    });
  });
  ioc.run();
  return ok;
}

}  // namespace tern::services
