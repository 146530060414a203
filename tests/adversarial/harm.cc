#include "harm.h"

#include <hiredis/hiredis.h>

#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "store/redis/redis_connection.h"

namespace tern::test {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

std::vector<std::string> config_args(const std::map<std::string, std::string>& values) {
  static std::atomic<int> n{0};
  const std::string path = "/tmp/tern-adv-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".toml";
  std::ofstream out(path);
  for (const auto& [k, v] : values) out << k << " = " << v << "\n";
  return {"--config", path};
}

std::map<std::string, std::string> setup_friendly(std::map<std::string, std::string> extra) {
  std::map<std::string, std::string> v{{"register_rate", "1000000.0"}, {"register_burst", "1000000.0"},
                                       {"create_rate", "1000000.0"},   {"create_burst", "1000000.0"},
                                       {"send_rate", "100000.0"},      {"send_burst", "100000.0"},
                                       {"durability", "\"none\""}};
  for (auto& [k, x] : extra) v[k] = x;
  // On the Redis backend (the `redis.` runs) the same for its redis-server: with appendfsync
  // always, every probe send waits for an fsync, and the disk is shared with whatever else
  // the machine runs (CI builds the ASan tree beside these tests: a probe p99 of 181 ms once,
  // 1-10 ms otherwise). appendfsync no for the rest of this process; a test that needs the
  // fsync is not in this suite.
  if (on_redis_backend()) {
    auto address = store::redis::parse_redis_url(std::getenv("TERN_TEST_REDIS_URL"));
    auto c = address ? store::redis::RedisConnection::connect(*address, ms(1000), ms(5000))
                     : Result<std::unique_ptr<store::redis::RedisConnection>>(address.error());
    auto set = c ? (*c)->command({"CONFIG", "SET", "appendfsync", "no"}) : Result<store::redis::Reply>(c.error());
    EXPECT_TRUE(set.ok() && (*set)->type == REDIS_REPLY_STATUS)
        << "CONFIG SET appendfsync no on the test backend's Redis: " << (set ? "refused" : set.error().message);
  }
  return v;
}

HttpResult http_from(const std::string& source, uint16_t port, std::string_view method, std::string_view target,
                     std::optional<std::string> body, std::string_view token, ms timeout) {
  HttpResult out;
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  boost::system::error_code ec;
  stream.socket().open(tcp::v4(), ec);
  if (!ec) stream.socket().bind(tcp::endpoint(asio::ip::make_address_v4(source), 0), ec);
  if (ec) {
    out.body = "bind " + source + ": " + ec.message();
    return out;
  }
  http::request<http::string_body> req;
  req.method(http::string_to_verb(method));
  req.target(target);
  req.version(11);
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::connection, "close");
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + std::string(token));
  if (body) req.body() = *body;
  req.prepare_payload();
  http::response_parser<http::string_body> parser;
  parser.body_limit(64u * 1024 * 1024);
  beast::flat_buffer buf;
  boost::system::error_code result;
  bool done = false;
  stream.expires_after(timeout);
  stream.async_connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), port), [&](boost::system::error_code e) {
    if (e) { result = e; done = true; return; }
    http::async_write(stream, req, [&](boost::system::error_code e2, size_t) {
      if (e2) { result = e2; done = true; return; }
      http::async_read(stream, buf, parser, [&](boost::system::error_code e3, size_t) {
        result = e3;
        done = true;
      });
    });
  });
  ioc.run();
  if (!done || result) {
    out.body = "network error: " + (done ? result.message() : std::string("not completed"));
    return out;
  }
  auto res = parser.release();
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  boost::system::error_code jec;
  json::value v = json::parse(out.body, jec);
  if (!jec) out.json = std::move(v);
  return out;
}

size_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  return 0;
}

double p99(std::vector<double> s) {
  if (s.empty()) return 0;
  std::sort(s.begin(), s.end());
  size_t rank = (s.size() * 99 + 99) / 100;  // nearest rank, 1-based
  return s[std::min(s.size(), std::max<size_t>(rank, 1)) - 1];
}

std::string HarmStats::describe() const {
  std::ostringstream o;
  o << "send p99 " << send_p99_ms << " ms, /healthz p99 " << health_p99_ms << " ms over " << sends << " sends, "
    << failures << " failures";
  return o.str();
}

Probe::Probe(Api& api, uint16_t port) : api_(api), port_(port) {
  Account a = api_.must_register("probe-a");
  Account b = api_.must_register("probe-b");
  if (a.token.empty() || b.token.empty()) return;
  conv_ = api_.must_direct(a.token, "probe-b");
  a_.account = a;
  b_.account = b;
  ready_ = !conv_.empty() && a_.connect_synced(port_) && b_.connect_synced(port_);
}

HarmStats Probe::measure(ms duration, size_t max_samples) {
  HarmStats st;
  std::vector<double> sends, health;
  const auto start = Clock::now();
  const auto until = start + duration;
  while (Clock::now() < until && st.sends < max_samples) {
    // Paced: one sample per kProbePeriod, well under the default send rate (50/s), so the
    // probe is a well-behaved client and the attack runs for the whole measurement.
    std::this_thread::sleep_until(start + kProbePeriod * st.sends);
    const std::string id = "probe-" + std::to_string(++n_);
    const auto t0 = Clock::now();
    bool ok = a_.send(conv_, id, "ping");
    std::optional<json::object> got;
    if (ok)
      got = b_.read_until(
          [&](const json::object& f) { return type_of(f) == "message" && jstr(f, "conversation_id") == conv_; },
          ms(10000));
    const auto t1 = Clock::now();
    if (!got) ++st.failures;
    sends.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (got) b_.ack(conv_, seq_of(*got));
    // Drain probe-a's `sent`/receipts without waiting; an error answer is a failure.
    while (auto f = a_.read_frame(ms(0)))
      if (type_of(*f) == "error") ++st.failures;
    const auto h0 = Clock::now();
    auto h = api_.healthz();
    const auto h1 = Clock::now();
    if (h.status != 200) ++st.failures;
    health.push_back(std::chrono::duration<double, std::milli>(h1 - h0).count());
    ++st.sends;
  }
  st.send_p99_ms = p99(sends);
  st.health_p99_ms = p99(health);
  return st;
}

void expect_harm_bounded(const HarmStats& base, const HarmStats& loaded, const std::string& attack) {
  const double send_bound = 2 * base.send_p99_ms + kHarmSlackMs;
  const double health_bound = 2 * base.health_p99_ms + kHarmSlackMs;
  std::cerr << "[harm] " << attack << ": unloaded " << base.describe() << "; loaded " << loaded.describe() << "\n";
  EXPECT_EQ(loaded.failures, 0u) << attack << ": the well-behaved client failed; " << loaded.describe();
  EXPECT_LE(loaded.send_p99_ms, send_bound)
      << attack << ": send->deliver p99 " << loaded.send_p99_ms << " ms exceeds 2 x " << base.send_p99_ms
      << " + " << kHarmSlackMs << " ms (unloaded: " << base.describe() << "; loaded: " << loaded.describe() << ")";
  EXPECT_LE(loaded.health_p99_ms, health_bound)
      << attack << ": /healthz p99 " << loaded.health_p99_ms << " ms exceeds 2 x " << base.health_p99_ms << " + "
      << kHarmSlackMs << " ms (unloaded: " << base.describe() << "; loaded: " << loaded.describe() << ")";
  EXPECT_GE(loaded.sends, 5u) << attack << ": too few probe samples; " << loaded.describe();
}

AttackThread::AttackThread(std::function<void(const std::atomic<bool>& stop)> attack)
    : thread_([this, attack = std::move(attack)] { attack(stop_); }) {}

AttackThread::~AttackThread() { stop(); }

void AttackThread::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace tern::test
