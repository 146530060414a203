// Worker set-up: users registered and conversations created over HTTP, before the event loop
// starts (see bench_worker.h). Blocking calls on --setup-threads threads, each with its own
// keep-alive connection; each thread touches only its own devices and results.
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include <boost/json.hpp>

#include "bench_worker.h"

namespace tern::bench {
namespace json = boost::json;
namespace {

std::string field(const json::value& v, std::string_view k) {
  const auto* o = v.if_object();
  const auto* x = o ? o->if_contains(k) : nullptr;
  return x && x->is_string() ? std::string(x->as_string()) : std::string();
}

// Runs fn(thread_index, http) on `threads` threads; returns the first error.
Result<void> parallel(const lean::ServerAddress& server, int threads,
                      const std::function<Result<void>(int, lean::HttpClient&)>& fn) {
  std::mutex mu;
  std::optional<Error> first;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      lean::HttpClient http(server);
      auto r = fn(t, http);
      if (!r) {
        std::lock_guard lock(mu);
        if (!first) first = r.error();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (first) return *first;
  return {};
}

Error http_error(std::string_view what, const lean::HttpResponse& r) {
  // The body of an HTTP error is the server's {"error","message"}, never a message payload.
  return make_error(ErrorCode::kInternal, std::string(what) + ": HTTP " + std::to_string(r.status) + " " +
                                              r.body.substr(0, 200));
}

std::string bench_user(const BenchOptions& o, int worker, int i) {
  return o.prefix + "-" + std::to_string(worker) + "-" + std::to_string(i);
}

struct Account {
  std::string user;
  std::string token;
  uint32_t device = 1;
};

Result<Account> register_one(lean::HttpClient& http, const std::string& user) {
  const std::string body = json::serialize(json::object{{"user", user}});
  auto r = http.post_json("/v1/users", body);
  if (!r) return r.error();
  if (r->status != 201) return http_error("register " + user, *r);
  boost::system::error_code ec;
  const json::value v = json::parse(r->body, ec);
  if (ec) return make_error(ErrorCode::kMalformed, "register: answer is not JSON");
  Account a{user, field(v, "token")};
  if (a.token.empty()) return make_error(ErrorCode::kMalformed, "register: no token in the answer");
  if (const auto* dev = v.is_object() ? v.as_object().if_contains("device") : nullptr; dev && dev->is_int64())
    a.device = static_cast<uint32_t>(dev->as_int64());
  return a;
}

Result<void> join_one(lean::HttpClient& http, const std::string& channel, const std::string& token) {
  auto r = http.post_json("/v1/conversations/" + channel + "/join", "{}", token);
  if (!r) return r.error();
  if (r->status != 200) return http_error("join the channel", *r);
  return {};
}

// --encrypt: `from` fetches the bundle of `to`'s device from the key directory (which takes
// one of its one-time prekeys) and runs X3DH with it.
Result<void> session_from_directory(lean::HttpClient& http, Device& from, const Device& to) {
  const std::string device = std::to_string(to.device_id);
  auto res = http.get("/v1/keys/" + to.user + "/" + device, from.token);
  if (!res) return res.error();
  if (res->status != 200) return http_error("fetch the bundle of " + to.user, *res);
  auto bundles = client::parse_bundles(res->body);
  if (!bundles) return bundles.error();
  if (bundles->size() != 1) return make_error(ErrorCode::kMalformed, "bundle answer without exactly one device");
  return from.crypto->keyring().start_session(to.user + ":" + device, (*bundles)[0].bundle);
}

}  // namespace

Result<ChannelSetup> create_bench_channel(const BenchOptions& opt) {
  auto addr = lean::parse_server_url(opt.server, opt.ca_file);
  if (!addr) return addr.error();
  lean::HttpClient http(*addr);
  auto poster = register_one(http, bench_user(opt, 0, 0));
  if (!poster) return poster.error();
  const json::object req{{"type", "channel"}, {"name", "bench"}, {"public", true}};
  auto res = http.post_json("/v1/conversations", json::serialize(req), poster->token);
  if (!res) return res.error();
  if (res->status != 200 && res->status != 201) return http_error("create the channel", *res);
  boost::system::error_code ec;
  const json::value v = json::parse(res->body, ec);
  ChannelSetup ch{ec ? std::string() : field(v, "conversation_id"), poster->user, poster->token};
  if (ch.id.empty()) return make_error(ErrorCode::kMalformed, "create the channel: no conversation_id");
  return ch;
}

Result<void> Worker::setup() {
  const int n = clients_of_worker(opt_, index_);
  const bool channel = opt_.workload == Workload::kChannel;
  shadow_ = channel && index_ != 0;
  devices_.reserve(static_cast<size_t>(n) + (shadow_ ? 1 : 0));
  if (shadow_) {  // verifier index 0, like the poster's in worker 0 (the body records name it)
    auto dev = std::make_unique<Device>(*this, verifier_.add_device());
    dev->user = channel_.poster;
    dev->shadow = true;
    devices_.push_back(std::move(dev));
  }
  for (int i = 0; i < n; ++i) {
    const DeviceIdx d = verifier_.add_device();
    auto dev = std::make_unique<Device>(*this, d);
    dev->user = bench_user(opt_, index_, i);
    if (mqtt_mode()) dev->mqtt = std::make_unique<lean::MqttConnection>(io_, scratch_, *dev);
    devices_.push_back(std::move(dev));
  }
  if (channel && index_ == 0) {
    devices_[0]->token = channel_.poster_token;  // registered by the coordinator
    if (opt_.catchup > 0) {
      catchup_dev_ = static_cast<DeviceIdx>(devices_.size() - 1);
      catchup_target_ = static_cast<uint64_t>(opt_.catchup);
    }
  }
  if (mqtt_mode()) return channel ? create_mqtt_channel() : create_mqtt_topics();  // no accounts: the broker is open
  if (auto r = register_users(); !r) return r;
  if (channel) {
    if (auto r = join_channel(); !r) return r;
    return add_offline_subscribers();
  }
  if (auto r = create_conversations(); !r) return r;
  if (opt_.encrypt) return setup_encryption();
  return {};
}

Result<void> Worker::register_users() {
  const int threads = std::max(1, std::min<int>(opt_.setup_threads, static_cast<int>(devices_.size())));
  return parallel(server_, threads, [this, threads](int t, lean::HttpClient& http) -> Result<void> {
    for (size_t i = static_cast<size_t>(t); i < devices_.size(); i += static_cast<size_t>(threads)) {
      Device& d = *devices_[i];
      if (d.shadow || !d.token.empty()) continue;  // a channel's poster: registered already
      auto a = register_one(http, d.user);
      if (!a) return a.error();
      d.token = a->token;
      d.device_id = a->device;
    }
    return {};
  });
}

Result<void> Worker::create_conversations() {
  // Plan: the member lists (creator first) and who sends into each.
  struct Plan {
    std::vector<DeviceIdx> members;
    std::vector<DeviceIdx> senders;
    std::string id;
  };
  std::vector<Plan> plans;
  const auto n = static_cast<DeviceIdx>(devices_.size());
  switch (opt_.workload) {
    case Workload::kIdle:
    case Workload::kChannel:  // join_channel()
      return {};
    case Workload::kPairs:
    case Workload::kReconnectStorm:
      for (DeviceIdx i = 0; i + 1 < n; i += 2) plans.push_back({{i, i + 1}, {i, i + 1}, {}});
      break;
    case Workload::kOfflineDrain:
      for (DeviceIdx i = 0; i + 1 < n; i += 2) {
        plans.push_back({{i, i + 1}, {i}, {}});
        senders_.push_back(i);
        receivers_.push_back(i + 1);
      }
      break;
    case Workload::kGroup: {
      const auto gs = static_cast<DeviceIdx>(opt_.group_size);
      for (DeviceIdx start = 0; start < n; start += gs) {
        Plan p;
        for (DeviceIdx m = start; m < std::min(n, start + gs); ++m) p.members.push_back(m);
        if (p.members.size() < 2 && !plans.empty()) {  // a lone leftover joins the last group
          plans.back().members.push_back(p.members[0]);
          continue;
        }
        for (size_t s = 0; s < std::min<size_t>(static_cast<size_t>(opt_.senders), p.members.size()); ++s)
          p.senders.push_back(p.members[s]);
        plans.push_back(std::move(p));
      }
      break;
    }
    case Workload::kBroadcast: {
      const auto per = static_cast<DeviceIdx>(opt_.group_size - 1);  // receivers per group
      for (DeviceIdx start = 1; start < n; start += per) {
        Plan p{{0}, {0}, {}};
        for (DeviceIdx m = start; m < std::min(n, start + per); ++m) p.members.push_back(m);
        plans.push_back(std::move(p));
      }
      break;
    }
  }
  const int threads = std::max(1, std::min<int>(opt_.setup_threads, static_cast<int>(plans.size())));
  auto r = parallel(server_, threads, [&](int t, lean::HttpClient& http) -> Result<void> {
    for (size_t i = static_cast<size_t>(t); i < plans.size(); i += static_cast<size_t>(threads)) {
      Plan& p = plans[i];
      json::array members;
      for (size_t m = 1; m < p.members.size(); ++m) members.emplace_back(devices_[p.members[m]]->user);
      // --offline-members: registered, never connected; every post is delivered to their
      // devices too (fan-out on write), to no connection.
      for (int m = 0; m < opt_.offline_members; ++m) {
        const std::string user =
            opt_.prefix + "-offm-" + std::to_string(index_) + "-" + std::to_string(i) + "-" + std::to_string(m);
        auto a = register_one(http, user);
        if (!a) return a.error();
        members.emplace_back(user);
      }
      json::object req;
      if (p.members.size() == 2 && opt_.workload != Workload::kGroup && opt_.workload != Workload::kBroadcast)
        req = {{"type", "direct"}, {"members", std::move(members)}};
      else
        req = {{"type", "group"}, {"name", "bench"}, {"members", std::move(members)}};
      auto res = http.post_json("/v1/conversations", json::serialize(req), devices_[p.members[0]]->token);
      if (!res) return res.error();
      if (res->status != 200 && res->status != 201) return http_error("create conversation", *res);
      boost::system::error_code ec;
      const json::value v = json::parse(res->body, ec);
      p.id = ec ? std::string() : field(v, "conversation_id");
      if (p.id.empty()) return make_error(ErrorCode::kMalformed, "create conversation: no conversation_id");
    }
    return {};
  });
  if (!r) return r;
  for (auto& p : plans) {
    const ConvIdx c = verifier_.add_conversation(p.members);
    if (!conv_by_id_.emplace(p.id, c).second)
      return make_error(ErrorCode::kInternal, "the server gave two conversations the same id");
    for (DeviceIdx m : p.members) devices_[m]->convs.push_back(c);
    for (DeviceIdx s : p.senders) slots_.push_back(SendSlot{s, c});
    convs_.push_back(ConvInfo{std::move(p.id), std::move(p.members)});
  }
  return {};
}

Result<void> Worker::join_channel() {
  // Everyone but the poster (and its shadow) subscribes, in parallel.
  const int threads = std::max(1, std::min<int>(opt_.setup_threads, static_cast<int>(devices_.size())));
  auto r = parallel(server_, threads, [this, threads](int t, lean::HttpClient& http) -> Result<void> {
    for (size_t i = static_cast<size_t>(t); i < devices_.size(); i += static_cast<size_t>(threads)) {
      if (i == 0) continue;  // the poster owns the channel; in other workers, its shadow
      if (auto j = join_one(http, channel_.id, devices_[i]->token); !j) return j;
    }
    return {};
  });
  if (!r) return r;
  add_channel_conversation();
  return {};
}

ConvIdx Worker::add_channel_conversation() {
  std::vector<DeviceIdx> members;
  for (const auto& d : devices_) members.push_back(d->idx);
  const ConvIdx c = verifier_.add_conversation(members);
  conv_by_id_.emplace(channel_.id, c);
  for (auto& d : devices_) d->convs.push_back(c);
  if (index_ == 0) slots_.push_back(SendSlot{0, c});
  convs_.push_back(ConvInfo{channel_.id, std::move(members)});
  return c;
}

Result<void> Worker::create_mqtt_channel() {
  // The channel's topic is channel_.id; everyone but the poster (device 0 of worker 0, or its
  // shadow elsewhere) subscribes to it.
  const ConvIdx c = add_channel_conversation();
  for (size_t i = 1; i < devices_.size(); ++i) devices_[i]->mqtt_in = c;
  return {};
}

Result<void> Worker::add_offline_subscribers() {
  // Registered and subscribed, never connected: they cost the server an entry in the channel's
  // subscriber list and nothing per post (fan-out on read).
  const int n = offline_subscribers_of_worker(opt_, index_);
  if (n == 0) return {};
  const int threads = std::max(1, std::min(opt_.setup_threads, n));
  std::atomic<uint64_t> joined{0};
  auto r = parallel(server_, threads, [&](int t, lean::HttpClient& http) -> Result<void> {
    for (int i = t; i < n; i += threads) {
      auto a = register_one(http, opt_.prefix + "-off-" + std::to_string(index_) + "-" + std::to_string(i));
      if (!a) return a.error();
      if (auto j = join_one(http, channel_.id, a->token); !j) return j;
      joined.fetch_add(1, std::memory_order_relaxed);
    }
    return {};
  });
  offline_joined_ = joined.load();
  return r;
}

Result<void> Worker::setup_encryption() {
  if (opt_.keyring_disk) {
    char tmpl[] = "/tmp/tern-bench-keys-XXXXXX";
    if (!::mkdtemp(tmpl)) return make_error(ErrorCode::kInternal, "cannot create a temporary keyring directory");
    keyring_dir_ = tmpl;  // removed by ~Worker
  }
  const bool pairs = opt_.workload == Workload::kPairs;
  // pairs: (2k, 2k+1), as create_conversations() made them; group: everyone.
  const size_t n = pairs ? devices_.size() - devices_.size() % 2 : devices_.size();
  const int threads = std::max(1, std::min<int>(opt_.setup_threads, static_cast<int>(n)));
  // A one-time prekey for each sender that will fetch our bundle (at most 100 per upload).
  const size_t prekeys = pairs ? 1 : static_cast<size_t>(std::clamp(opt_.senders, 1, 100));
  // Every device: a keyring and its keys uploaded (identity, signed prekey, one-time prekeys).
  auto r = parallel(server_, threads, [&](int t, lean::HttpClient& http) -> Result<void> {
    for (size_t i = static_cast<size_t>(t); i < n; i += static_cast<size_t>(threads)) {
      Device& d = *devices_[i];
      std::unique_ptr<client::Keyring> k;
      if (keyring_dir_.empty()) {
        k = client::Keyring::in_memory();
        if (!k) return make_error(ErrorCode::kInternal, "keyring: libsodium failed to initialize");
      } else {
        auto opened = client::Keyring::open(keyring_dir_ + "/" + std::to_string(i));
        if (!opened) return opened.error();
        k = std::move(*opened);
      }
      auto body = k->upload_body(true, prekeys);
      if (!body) return body.error();
      auto res = http.put_json("/v1/keys", *body, d.token);
      if (!res) return res.error();
      if (res->status != 200) return http_error("upload keys of " + d.user, *res);
      d.crypto = std::make_unique<DeviceCrypto>(std::move(k));
    }
    return {};
  });
  if (!r) return r;
  if (!pairs) return setup_group_sessions();
  for (size_t i = 0; i < n; i += 2) {
    Device& a = *devices_[i];
    Device& b = *devices_[i + 1];
    a.crypto->peer_key = b.user + ":" + std::to_string(b.device_id);
    b.crypto->peer_key = a.user + ":" + std::to_string(a.device_id);
    a.crypto->initiator = true;
  }
  // The first of each pair fetches its partner's bundle from the key directory and runs X3DH.
  return parallel(server_, threads, [&](int t, lean::HttpClient& http) -> Result<void> {
    for (size_t i = static_cast<size_t>(2 * t); i < n; i += static_cast<size_t>(2 * threads)) {
      if (auto s = session_from_directory(http, *devices_[i], *devices_[i + 1]); !s) return s;
    }
    return {};
  });
}

Result<void> Worker::setup_group_sessions() {
  // Each sender (one group each: the groups partition the devices, so no keyring is shared
  // between threads) fetches every other member's bundle and runs X3DH; each member expects
  // one sender-key distribution per other sender of its group.
  for (const SendSlot& s : slots_)
    for (DeviceIdx m : convs_[s.conv].members)
      if (m != s.device) ++devices_[m]->crypto->distributions_expected;
  const int threads = std::max(1, std::min<int>(opt_.setup_threads, static_cast<int>(slots_.size())));
  return parallel(server_, threads, [&](int t, lean::HttpClient& http) -> Result<void> {
    for (size_t i = static_cast<size_t>(t); i < slots_.size(); i += static_cast<size_t>(threads)) {
      Device& sender = *devices_[slots_[i].device];
      for (DeviceIdx m : convs_[slots_[i].conv].members) {
        if (m == slots_[i].device) continue;
        if (auto s = session_from_directory(http, sender, *devices_[m]); !s) return s;
      }
    }
    return {};
  });
}

Result<void> Worker::create_mqtt_topics() {
  // Pairs (i, i+1): i publishes to ".../a", which i+1 subscribes to, and i+1 to ".../b". Each
  // direction is a verifier conversation of both members in which only one of them sends.
  const auto n = static_cast<DeviceIdx>(devices_.size());
  for (DeviceIdx i = 0; i + 1 < n; i += 2) {
    const std::string base = opt_.prefix + "/p/" + std::to_string(index_) + "-" + std::to_string(i / 2) + "/";
    const std::pair<DeviceIdx, DeviceIdx> dirs[2] = {{i, i + 1}, {i + 1, i}};
    for (int k = 0; k < 2; ++k) {
      const auto [from, to] = dirs[k];
      const ConvIdx c = verifier_.add_conversation({from, to});
      std::string topic = base + (k == 0 ? "a" : "b");
      if (!conv_by_id_.emplace(topic, c).second) return make_error(ErrorCode::kInternal, "two pairs share a topic");
      devices_[from]->convs.push_back(c);
      devices_[to]->convs.push_back(c);
      devices_[to]->mqtt_in = c;
      slots_.push_back(SendSlot{from, c});
      convs_.push_back(ConvInfo{std::move(topic), {from, to}});
    }
  }
  return {};
}

}  // namespace tern::bench
