#include "services/admin_api.h"

#include <sodium.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "base/clock.h"
#include "base/ids.h"
#include "base/metrics.h"
#include "proto/http_shapes.h"
#include "services/http_replies.h"
#include "services/token.h"
#include "services/user_records.h"

namespace tern::services {
namespace json = boost::json;
namespace {

constexpr size_t kPage = 100;
constexpr size_t kPageMax = 1000;

size_t page_param(const std::string& query) {
  const std::string v = proto::query_param(query, "limit");
  size_t n = kPage;
  if (!v.empty()) std::from_chars(v.data(), v.data() + v.size(), n);
  return std::clamp<size_t>(n, 1, kPageMax);
}

gateway::HttpResponse no_content() { return gateway::HttpResponse{204, "", "application/json"}; }

// "/admin/v1/users/{name}[/{rest}]" → name, rest.
bool split_user_path(const std::string& path, std::string& name, std::string& rest) {
  static constexpr std::string_view prefix = "/admin/v1/users/";
  if (path.rfind(prefix, 0) != 0) return false;
  auto tail = std::string_view(path).substr(prefix.size());
  auto slash = tail.find('/');
  name = std::string(tail.substr(0, slash));
  rest = slash == std::string_view::npos ? "" : std::string(tail.substr(slash + 1));
  return valid_user_id(name);
}

}  // namespace

AdminApi::AdminApi(ServiceContext& ctx, const std::string& admin_token, std::function<void(json::object&)> queues)
    : ctx_(ctx),
      token_hash_(hash_token(admin_token)),
      key_id_(token_hash_.substr(0, 8)),
      queues_(std::move(queues)),
      last_stats_us_(mono_us()) {}

void AdminApi::authenticate(const std::string&, AuthDone done) {
  done(make_error(ErrorCode::kUnauthorized, "no WebSocket on the admin endpoint"));
}

std::shared_ptr<gateway::FrameHandler> AdminApi::open(std::shared_ptr<gateway::Connection>, DeviceRef) { return nullptr; }

void AdminApi::handle_http(gateway::HttpRequest req, gateway::HttpReply reply) {
  if (!ctx_.reads.offloaded()) return handle(std::move(req), std::move(reply));
  // Redis: the handlers read the store (round trips), so they run in a fiber on this loop
  // (services/store_reads.h; they are thread-safe), and answer through its mailbox.
  const size_t loop = ctx_.loops.here();
  auto answer = ctx_.reads.via_loop(loop, std::move(reply));
  auto shared = std::make_shared<gateway::HttpRequest>(std::move(req));
  if (!ctx_.reads.run_detached(loop, [this, shared, answer] { handle(std::move(*shared), answer); }))
    answer(error_response(make_error(ErrorCode::kUnavailable, "too many store reads waiting; retry")));
}

void AdminApi::handle(gateway::HttpRequest req, gateway::HttpReply reply) {
  const std::string given = req.bearer_token.empty() ? std::string() : hash_token(req.bearer_token);
  if (given.size() != token_hash_.size() ||
      sodium_memcmp(given.data(), token_hash_.data(), token_hash_.size()) != 0) {
    spdlog::warn("event=admin_refused from={} method={} path={}", req.remote_address, req.method, req.path);
    return reply(error_response(make_error(ErrorCode::kUnauthorized, "missing or invalid admin token")));
  }
  const std::string who = "admin:" + key_id_ + "@" + req.remote_address;
  const std::string& m = req.method;
  // Logged before it runs: who, what, when (the log's timestamp); the target is an id only.
  spdlog::info("event=admin_action who={} method={} path={}", who, m, req.path);
  if (req.path == "/admin/v1/users" && m == "GET") return list_users(req, std::move(reply));
  if (req.path == "/admin/v1/reports" && m == "GET") return reports(req, std::move(reply));
  if (req.path == "/admin/v1/stats" && m == "GET") return stats(std::move(reply));
  if (req.path == "/admin/v1/nodes" && m == "GET") return nodes(std::move(reply));
  std::string name, rest;
  if (split_user_path(req.path, name, rest)) {
    if (rest.empty() && m == "GET") return user(name, std::move(reply));
    if (rest.empty() && m == "DELETE") return remove(name, who, std::move(reply));
    if (rest == "suspend" && m == "POST") return suspend(name, true, who, std::move(reply));
    if (rest == "unsuspend" && m == "POST") return suspend(name, false, who, std::move(reply));
    static constexpr std::string_view kDevices = "devices/";
    if (rest.rfind(kDevices, 0) == 0 && m == "DELETE") {
      uint32_t device = 0;
      const auto d = rest.substr(kDevices.size());
      auto [p, ec] = std::from_chars(d.data(), d.data() + d.size(), device);
      if (ec == std::errc() && p == d.data() + d.size() && device > 0) return revoke(name, device, who, std::move(reply));
      return reply(error_response(make_error(ErrorCode::kInvalidArgument, "invalid device number")));
    }
  }
  reply(error_response(make_error(ErrorCode::kNotFound, "no such endpoint")));
}

void AdminApi::list_users(const gateway::HttpRequest& req, gateway::HttpReply reply) {
  const size_t page = page_param(req.query);
  auto users = ctx_.store.users(proto::query_param(req.query, "after"), page + 1);
  if (!users) return reply(error_response(users.error()));
  json::object out;
  if (users->size() > page) {
    users->pop_back();
    out["next"] = users->back();
  }
  json::array a;
  for (const auto& u : *users) a.emplace_back(u);
  out["users"] = std::move(a);
  reply(json_response(200, out));
}

void AdminApi::user(const std::string& name, gateway::HttpReply reply) {
  auto exists = ctx_.store.user_exists(name);
  if (!exists) return reply(error_response(exists.error()));
  if (!*exists) return reply(error_response(make_error(ErrorCode::kNotFound, "unknown user")));
  auto devices = ctx_.store.devices(name);
  auto records = ctx_.store.user_records(name, "", 10000);
  auto last_seen = ctx_.store.last_seen(name);
  if (!devices || !records || !last_seen)
    return reply(error_response(make_error(ErrorCode::kInternal, "store unavailable")));
  json::object out{{"user", name}, {"online", ctx_.bus.online(name)}, {"last_seen", *last_seen}};
  size_t blocks = 0;
  std::set<std::string> push;
  for (const auto& [k, v] : *records) {
    if (k.rfind(records::kBlockPrefix, 0) == 0) ++blocks;
    else if (k.rfind(records::kPushPrefix, 0) == 0) push.insert(k.substr(std::string(records::kPushPrefix).size()));
    else if (k == records::kSuspended) out["suspended"] = true;
    else if (k == records::kDeleted) out["deleted"] = true;
    else if (k == records::kPresence) out["presence"] = v;
  }
  json::array ds;
  for (uint32_t d : *devices)
    ds.emplace_back(json::object{{"device", d}, {"push", push.count(std::to_string(d)) != 0}});
  out["devices"] = std::move(ds);
  out["blocked_users"] = blocks;
  reply(json_response(200, out));
}

void AdminApi::disconnect_all(const std::string& name) {
  auto devices = ctx_.store.devices(name);
  if (!devices) return;
  for (uint32_t d : *devices) ctx_.bus.disconnect(DeviceRef{name, d});
}

void AdminApi::suspend(const std::string& name, bool on, const std::string& who, gateway::HttpReply reply) {
  auto exists = ctx_.store.user_exists(name);
  if (!exists) return reply(error_response(exists.error()));
  if (!*exists) return reply(error_response(make_error(ErrorCode::kNotFound, "unknown user")));
  if (!on) {
    auto deleted = ctx_.store.user_record(name, records::kDeleted);
    if (!deleted) return reply(error_response(deleted.error()));
    if (*deleted) return reply(error_response(make_error(ErrorCode::kForbidden, "a deleted account stays closed")));
  }
  store::Batch batch;
  if (on) batch.add(store::PutUserRecord{name, records::kSuspended, std::to_string(ctx_.bus.clock_ms())});
  else batch.add(store::DeleteUserRecord{name, records::kSuspended});
  ctx_.committer.submit(std::move(batch), [this, name, on, who, reply](const Result<void>& r) {
    if (!r) return reply(error_response(r.error()));
    if (on) disconnect_all(name);  // after the commit: a reconnect is refused from here on
    spdlog::info("event=admin_done who={} action={} user={}", who, on ? "suspend" : "unsuspend", name);
    reply(no_content());
  });
}

void AdminApi::remove(const std::string& name, const std::string& who, gateway::HttpReply reply) {
  auto exists = ctx_.store.user_exists(name);
  if (!exists) return reply(error_response(exists.error()));
  if (!*exists) return reply(error_response(make_error(ErrorCode::kNotFound, "unknown user")));
  auto devices = ctx_.store.devices(name);
  if (!devices) return reply(error_response(devices.error()));
  const std::string ts = std::to_string(ctx_.bus.clock_ms());
  store::Batch batch;
  batch.add(store::PutUserRecord{name, records::kSuspended, ts});
  batch.add(store::PutUserRecord{name, records::kDeleted, ts});
  for (uint32_t d : *devices) {
    batch.add(store::PutDevice{DeviceRef{name, d}, ""});  // the token no longer maps to the device
    batch.add(store::DeleteUserRecord{name, records::push(d)});
  }
  ctx_.committer.submit(std::move(batch), [this, name, who, reply](const Result<void>& r) {
    if (!r) return reply(error_response(r.error()));
    disconnect_all(name);
    spdlog::info("event=admin_done who={} action=delete user={}", who, name);
    reply(no_content());
  });
}

void AdminApi::revoke(const std::string& name, uint32_t device, const std::string& who, gateway::HttpReply reply) {
  auto devices = ctx_.store.devices(name);
  if (!devices) return reply(error_response(devices.error()));
  if (std::find(devices->begin(), devices->end(), device) == devices->end())
    return reply(error_response(make_error(ErrorCode::kNotFound, "unknown device")));
  store::Batch batch;
  batch.add(store::PutDevice{DeviceRef{name, device}, ""});
  batch.add(store::DeleteUserRecord{name, records::push(device)});
  ctx_.committer.submit(std::move(batch), [this, name, device, who, reply](const Result<void>& r) {
    if (!r) return reply(error_response(r.error()));
    ctx_.bus.disconnect(DeviceRef{name, device});
    spdlog::info("event=admin_done who={} action=revoke_device user={} device={}", who, name, device);
    reply(no_content());
  });
}

void AdminApi::reports(const gateway::HttpRequest& req, gateway::HttpReply reply) {
  const std::string after_s = proto::query_param(req.query, "after");
  uint64_t after = 0;
  if (!after_s.empty()) {
    auto [p, ec] = std::from_chars(after_s.data(), after_s.data() + after_s.size(), after);
    if (ec != std::errc() || p != after_s.data() + after_s.size())
      return reply(error_response(make_error(ErrorCode::kMalformed, "after must be a report id")));
  }
  auto rows = ctx_.store.reports(after, page_param(req.query));
  if (!rows) return reply(error_response(rows.error()));
  // Reports are stored as JSON text by SafetyApi; they are passed through as they are.
  std::string body = R"({"reports":[)";
  for (size_t i = 0; i < rows->size(); ++i) {
    if (i) body += ',';
    body += (*rows)[i].second;
  }
  body += "]}";
  reply(gateway::HttpResponse{200, std::move(body), "application/json"});
}

void AdminApi::stats(gateway::HttpReply reply) {
  auto& reg = MetricsRegistry::global();
  const uint64_t messages = reg.counter("tern_messages_stored_total", "messages durably stored").value();
  const auto& commits = reg.histogram("tern_store_commit_seconds", "", {});
  const uint64_t commit_count = commits.count();
  const double commit_sum = commits.sum();
  json::object out;
  {
    std::lock_guard lock(mu_);
    const int64_t now = mono_us();
    const double secs = std::max(1e-3, static_cast<double>(now - last_stats_us_) / 1e6);
    // Rates over the interval since the previous stats call (or the start).
    out["messages_per_sec"] = static_cast<double>(messages - last_messages_) / secs;
    const uint64_t dc = commit_count - last_commits_;
    out["commit_latency_ms"] = dc ? (commit_sum - last_commit_sum_) / static_cast<double>(dc) * 1e3 : 0.0;
    out["interval_sec"] = secs;
    last_stats_us_ = now;
    last_messages_ = messages;
    last_commits_ = commit_count;
    last_commit_sum_ = commit_sum;
  }
  out["connections"] = reg.gauge("tern_connections", "Live WebSocket connections").value();
  out["messages_stored_total"] = messages;
  out["commits_total"] = commit_count;
  out["commit_latency_ms_mean_total"] = commit_count ? commit_sum / static_cast<double>(commit_count) * 1e3 : 0.0;
  json::object queues{{"commit", ctx_.committer.pending()}};
  if (queues_) queues_(queues);
  out["queues"] = std::move(queues);
  reply(json_response(200, out));
}

void AdminApi::nodes(gateway::HttpReply reply) {
  const bus::NodesView v = ctx_.bus.nodes();
  json::object out;
  out["shared"] = v.shared;
  out["node"] = v.self;
  out["subscribed"] = v.subscribed;
  out["listed_ms_ago"] = v.listed_ms_ago;
  out["clock_offset_ms"] = v.clock_offset_ms;
  json::array nodes;
  for (const auto& n : v.live) {
    int64_t suspected_ms = 0;
    for (const auto& [node, left] : v.suspected)
      if (node == n) suspected_ms = left;
    nodes.push_back(json::object{{"node", n},
                                 {"self", n == v.self},
                                 {"leaving", std::binary_search(v.leaving.begin(), v.leaving.end(), n)},
                                 {"suspected_ms", suspected_ms}});
  }
  out["nodes"] = std::move(nodes);
  reply(json_response(200, out));
}

}  // namespace tern::services
