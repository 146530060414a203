// Worker: event loop and phases (see bench_worker.h).
#include "bench_worker.h"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "base/clock.h"
#include "bench_control.h"
#include "client/lean/lean_proc.h"

namespace tern::bench {
namespace json = boost::json;
using namespace std::chrono_literals;
namespace {

// JSON objects are built outside coroutines: g++ 12 rejects brace-initialised objects
// (initializer lists) inside coroutine bodies ("array used as initializer").
int64_t own_rss_kb() {
  auto s = lean::sample_process(static_cast<int>(::getpid()));
  return s ? s->rss_kb : 0;
}

json::value connected_json(size_t online, bool all) {
  json::object o;
  o["online"] = online;
  o["all"] = all;
  o["gen_rss_kb"] = own_rss_kb();
  return o;
}

json::value one_field(std::string_view k, json::value v) {
  json::object o;
  o[k] = std::move(v);
  return o;
}

}  // namespace

Worker::Worker(const BenchOptions& opt, int index, int ctl_in, int ctl_out, ChannelSetup channel)
    : opt_(opt),
      index_(index),
      ctl_in_fd_(ctl_in),
      ctl_out_fd_(ctl_out),
      encoder_(opt.body_bytes),
      channel_(std::move(channel)),
      tick_(io_) {}

Worker::~Worker() {
  // Connections first (they refer to io_ and scratch_), then the rest in reverse order.
  devices_.clear();
  if (!keyring_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(keyring_dir_, ec);
  }
  if (!ctl_in_ && ctl_in_fd_ >= 0) ::close(ctl_in_fd_);
  if (ctl_out_fd_ >= 0) ::close(ctl_out_fd_);
}

void Worker::write_line(char kind, const json::value& v) {
  if (!write_all(ctl_out_fd_, encode_control_line(kind, v))) {
    // The coordinator is gone; nobody is left to report to.
    finished_ = true;
    io_.stop();
  }
}

int Worker::run() {
  run_started_us_ = mono_us();
  auto addr = lean::parse_server_url(opt_.server, opt_.ca_file);
  if (!addr) {
    write_line('E', json::object{{"message", addr.error().message}});
    return 2;
  }
  server_ = *addr;
  if (opt_.source_addrs > 1 && server_.endpoint.address().is_loopback())
    for (int i = 1; i <= opt_.source_addrs; ++i)
      sources_.push_back(asio::ip::address_v4(0x7F000000u | static_cast<uint32_t>(i)));
  if (auto s = setup(); !s) {
    write_line('E', json::object{{"message", "set-up failed: " + s.error().message}});
    return 2;
  }
  ctl_in_ = std::make_unique<asio::posix::stream_descriptor>(io_, ctl_in_fd_);
  start_tick();
  asio::co_spawn(io_, lifecycle(), [this](std::exception_ptr e) {
    if (e) {
      std::string what = "worker failed";
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        what = x.what();
      }
      write_line('E', json::object{{"message", what}});
      exit_code_ = 2;
    }
    finished_ = true;
    tick_.cancel();
    io_.stop();
  });
  io_.run();
  return exit_code_;
}

// ---- helpers ----

lean::MqttTarget Worker::mqtt_target_for(DeviceIdx d) const {
  const lean::WsTarget t = target_for(d);
  return lean::MqttTarget{t.server, t.source};
}

lean::WsTarget Worker::target_for(DeviceIdx d) const {
  lean::WsTarget t;
  t.server = server_.endpoint;
  t.host_header = server_.host_header();
  t.tls = server_.tls.get();  // one context per worker process, shared by all its connections
  if (!sources_.empty())
    t.source = sources_[static_cast<size_t>(first_client_of_worker(opt_, index_) + static_cast<int>(d)) % sources_.size()];
  return t;
}

std::string Worker::device_key(DeviceIdx d) const { return devices_[d]->user + ":" + std::to_string(devices_[d]->device_id); }

Result<ConvIdx> Worker::conv_of(std::string_view id) const {
  auto it = conv_by_id_.find(id);
  if (it == conv_by_id_.end()) return make_error(ErrorCode::kNotFound, "unknown conversation");
  return it->second;
}

size_t Worker::live_count(const std::vector<DeviceIdx>& who) const {
  size_t n = 0;
  for (DeviceIdx d : who) n += devices_[d]->phase() == Device::Phase::kLive ? 1 : 0;
  return n;
}

void Worker::queue_connect(DeviceIdx d) {
  Device& dev = *devices_[d];
  dev.want_online = true;
  if (dev.queued) return;
  dev.queued = true;
  connect_queue_.push_back(d);
}

void Worker::retry_later(DeviceIdx d, int64_t at_us) { retry_list_.emplace_back(at_us, d); }

void Worker::pump_connects() {
  while (connecting_ < opt_.connect_concurrency && !connect_queue_.empty()) {
    Device& dev = *devices_[connect_queue_.front()];
    connect_queue_.pop_front();
    dev.queued = false;
    if (!dev.want_online || dev.phase() != Device::Phase::kOffline) continue;
    dev.connect_now();
  }
}

// ---- event loop ----

void Worker::start_tick() {
  // 1 ms while sending (the schedule's resolution); 10 ms otherwise, which is plenty for acks,
  // retries and progress and keeps an idle generator idle.
  tick_.expires_after(sending_ ? 1ms : 10ms);
  tick_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || finished_) return;
    on_tick();
    start_tick();
  });
}

void Worker::on_tick() {
  const int64_t now = mono_us();
  send_due(now);
  if (now - last_ack_flush_us_ >= opt_.ack_interval_ms * 1000LL) {
    last_ack_flush_us_ = now;
    std::vector<DeviceIdx> dirty;
    dirty.swap(ack_dirty_);
    for (DeviceIdx d : dirty) {
      devices_[d]->ack_listed_ = false;
      devices_[d]->flush_acks();
    }
  }
  if (now - last_housekeeping_us_ >= 20'000) housekeeping(now);
  pump_connects();
  if (!opt_.quiet && now - last_progress_us_ >= 1'000'000) report_progress(now);
}

void Worker::housekeeping(int64_t now) {
  last_housekeeping_us_ = now;
  for (size_t i = 0; i < resend_list_.size();) {
    if (resend_list_[i].first <= now) {
      const auto [d, sender_seq] = resend_list_[i].second;
      resend_list_[i] = resend_list_.back();
      resend_list_.pop_back();
      devices_[d]->resend(sender_seq);
    } else {
      ++i;
    }
  }
  for (size_t i = 0; i < retry_list_.size();) {
    if (retry_list_[i].first <= now) {
      const DeviceIdx d = retry_list_[i].second;
      retry_list_[i] = retry_list_.back();
      retry_list_.pop_back();
      if (devices_[d]->want_online && devices_[d]->phase() == Device::Phase::kOffline) queue_connect(d);
    } else {
      ++i;
    }
  }
  // A connect or handshake that hangs (e.g. a SYN lost to a full backlog) is abandoned and
  // retried; replay is not bounded here because a long backlog legitimately takes a while.
  const auto limit = static_cast<int64_t>(opt_.connect_timeout_s * 1e6);
  if (connecting_ > 0 && now - last_timeout_scan_us_ >= 500'000) {
    last_timeout_scan_us_ = now;
    for (auto& dev : devices_) {
      if (dev->phase() == Device::Phase::kConnecting && now - dev->attempt_started_us > limit)
        dev->abort_attempt("timeout");
    }
  }
  // MQTT keep-alive: the broker drops a client that sends nothing for 1.5 x keep-alive.
  if (mqtt_mode() && opt_.mqtt_keepalive_s > 0 && now - last_keepalive_scan_us_ >= 1'000'000) {
    last_keepalive_scan_us_ = now;
    for (auto& dev : devices_) dev->keepalive(now);
  }
}

void Worker::report_progress(int64_t now) {
  last_progress_us_ = now;
  size_t online = 0;
  for (const auto& d : devices_) online += d->phase() == Device::Phase::kLive ? 1 : 0;
  uint64_t errors = 0;
  for (const auto& [k, n] : errors_) errors += n;
  write_line('P', json::object{{"phase", phase_name_},
                               {"online", online},
                               {"clients", real_clients()},
                               {"counters", counters_.to_json()},
                               {"errors", errors},
                               {"hist", interval_latency_.to_json()}});
  interval_latency_.clear();
}

void Worker::start_sending(double rate, double seconds, uint64_t count) {
  const int64_t now = mono_us();
  send_t0_us_ = now + 1000;
  send_started_us_ = send_t0_us_;
  send_stopped_us_ = send_t0_us_;
  send_interval_us_ = rate > 0 ? 1e6 / rate : 0;
  send_k_ = 0;
  if (count > 0) {
    send_total_ = count;
    send_end_us_ = INT64_MAX;
  } else {
    send_total_ = static_cast<uint64_t>(std::floor(rate * seconds));
    send_end_us_ = send_t0_us_ + static_cast<int64_t>(seconds * 1e6);
  }
  sending_ = rate > 0 && !slots_.empty() && send_total_ > 0;
  if (!sending_ && count == 0) send_stopped_us_ = send_end_us_;
  // Re-arm at the 1 ms period now (expires_after aborts the pending 10 ms wait, whose
  // handler then ends its chain), so the first sends are not late.
  if (sending_) start_tick();
}

void Worker::send_due(int64_t now) {
  if (!sending_) return;
  // Bounded per tick so that a generator that has fallen behind still serves its sockets; the
  // schedule is fixed in advance (open loop), so lateness shows up as latency, not as a
  // slower offered rate.
  int budget = 8192;
  while (send_k_ < send_total_ && budget-- > 0) {
    const int64_t due = send_t0_us_ + static_cast<int64_t>(static_cast<double>(send_k_) * send_interval_us_);
    if (due > now || due >= send_end_us_) break;
    const SendSlot& s = slots_[send_k_ % slots_.size()];
    devices_[s.device]->send_new(s.conv, due);
    ++send_k_;
  }
  if (send_k_ >= send_total_ || now >= send_end_us_) {
    sending_ = false;
    send_stopped_us_ = std::min(now, send_end_us_);
  }
}

// ---- phases ----

asio::awaitable<void> Worker::sleep_ms(int ms) {
  asio::steady_timer t(io_);
  t.expires_after(std::chrono::milliseconds(ms));
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

asio::awaitable<bool> Worker::wait_until(std::function<bool()> done, double timeout_s) {
  const int64_t deadline = mono_us() + static_cast<int64_t>(timeout_s * 1e6);
  while (!done()) {
    if (mono_us() >= deadline) co_return false;
    co_await sleep_ms(5);
  }
  co_return true;
}

asio::awaitable<json::value> Worker::barrier(std::string_view name, json::value data) {
  write_barrier(name, std::move(data));
  for (;;) {
    const size_t nl = ctl_buf_.find('\n');
    if (nl != std::string::npos) {
      auto line = parse_control_line(std::string_view(ctl_buf_).substr(0, nl));
      ctl_buf_.erase(0, nl + 1);
      if (!line || line->first != 'G') throw std::runtime_error("bad control line from the coordinator");
      co_return std::move(line->second);
    }
    auto [ec, n] = co_await asio::async_read_until(*ctl_in_, asio::dynamic_buffer(ctl_buf_, 1 << 20), '\n',
                                                   asio::as_tuple(asio::use_awaitable));
    if (ec) throw std::runtime_error("the coordinator went away");
  }
}

asio::awaitable<bool> Worker::bring_online(const std::vector<DeviceIdx>& who) {
  for (DeviceIdx d : who) queue_connect(d);
  pump_connects();
  const bool all = co_await wait_until([&] { return live_count(who) == who.size(); }, opt_.setup_timeout_s);
  if (!all) count_error("set-up: clients not online in time", who.size() - live_count(who));
  co_return all;
}

void Worker::begin_step() {
  step_start_counters_ = counters_;
  step_cpu0_us_ = lean::self_cpu_us();
  step_started_us_ = mono_us();
  step_latency_.clear();
  step_ack_latency_.clear();
  step_extra_storm_s_ = -1;
  step_extra_replay_s_ = -1;
  delivered_at_send_end_ = counters_.delivered;
  acked_at_send_end_ = counters_.acked;
}

asio::awaitable<void> Worker::drain(double& drain_s, bool& drained) {
  // A server that is behind keeps delivering: wait as long as the backlog shrinks, and give
  // up only after --drain-timeout without progress (or --drain-max in all). What is still
  // missing then counts as lost.
  const int64_t t = mono_us();
  const auto stall = static_cast<int64_t>(opt_.drain_timeout_s * 1e6);
  const int64_t cap = t + static_cast<int64_t>(opt_.drain_max_s * 1e6);
  uint64_t left = unacked_sends_ + verifier_.outstanding();
  int64_t moved = t;
  drained = left == 0;
  while (!drained) {
    co_await sleep_ms(5);
    const int64_t now = mono_us();
    const uint64_t l = unacked_sends_ + verifier_.outstanding();
    if (l != left) {
      left = l;
      moved = now;
    }
    drained = l == 0;
    if (now - moved > stall || now > cap) break;
  }
  drain_s = static_cast<double>(mono_us() - t) / 1e6;
  // Acks out now, so the server's cursors are current before anyone measures or reconnects.
  for (DeviceIdx d : ack_dirty_) {
    devices_[d]->ack_listed_ = false;
    devices_[d]->flush_acks();
  }
  ack_dirty_.clear();
}

json::value Worker::step_json(double rate, double send_s, double drain_s, bool drained) const {
  const Counters d = counters_ - step_start_counters_;
  json::object o{{"rate", rate},
                 {"send_s", send_s},
                 {"drain_s", drain_s},
                 {"drained", drained},
                 {"wall_s", static_cast<double>(mono_us() - step_started_us_) / 1e6},
                 {"counters", d.to_json()},
                 {"delivered_in_send", delivered_at_send_end_ - step_start_counters_.delivered},
                 {"acked_in_send", acked_at_send_end_ - step_start_counters_.acked},
                 {"latency", step_latency_.to_json()},
                 {"ack_latency", step_ack_latency_.to_json()},
                 {"gen_cpu_us", lean::self_cpu_us() - step_cpu0_us_},
                 {"undelivered", verifier_.outstanding()},
                 {"unacked", unacked_sends_},
                 {"violations", verifier_.violations_so_far()},
                 {"online", live_count_all()}};
  if (step_extra_storm_s_ >= 0) o["storm_s"] = step_extra_storm_s_;
  if (step_extra_replay_s_ >= 0) o["replay_s"] = step_extra_replay_s_;
  return o;
}

size_t Worker::live_count_all() const {
  size_t n = 0;
  for (const auto& d : devices_) n += d->phase() == Device::Phase::kLive ? 1 : 0;
  return n;
}

std::vector<DeviceIdx> Worker::all_devices() const {
  std::vector<DeviceIdx> v;
  v.reserve(devices_.size());
  for (size_t i = 0; i < devices_.size(); ++i)
    if (!devices_[i]->shadow && catchup_dev_ != static_cast<DeviceIdx>(i)) v.push_back(static_cast<DeviceIdx>(i));
  return v;
}

void Worker::write_barrier(std::string_view name, json::value data) {
  write_line('B', json::object{{"name", name}, {"data", std::move(data)}});
}

json::value Worker::held_json(uint64_t disconnects) const {
  return json::object{{"online", live_count_all()},
                      {"disconnects", disconnects},
                      {"gen_cpu_us", lean::self_cpu_us() - step_cpu0_us_}};
}

json::value Worker::result_json() const {
  return json::object{{"clients", real_clients()},
                      {"online_at_end", live_count_all()},
                      {"offline_subscribers", offline_joined_},
                      {"counters", counters_.to_json()},
                      {"errors", errors_to_json(errors_)},
                      {"verifier", verifier_.totals().to_json()},
                      {"gen_cpu_us", lean::self_cpu_us()}};
}

asio::awaitable<void> Worker::lifecycle() {
  phase_name_ = "ready";
  co_await barrier("ready", one_field("gen_rss_kb", own_rss_kb()));
  switch (opt_.workload) {
    case Workload::kIdle: co_await run_idle(); break;
    case Workload::kReconnectStorm: co_await run_reconnect_storm(); break;
    case Workload::kOfflineDrain: co_await run_offline_drain(); break;
    case Workload::kChannel: co_await run_channel(); break;
    default: co_await run_traffic_steps(); break;
  }
  phase_name_ = "done";
  const json::value result = result_json();
  for (auto& d : devices_) d->go_offline(false);
  co_await sleep_ms(200);  // let the close frames go out
  write_line('R', result);
}

asio::awaitable<void> Worker::run_idle() {
  phase_name_ = "connect";
  const bool all = co_await bring_online(all_devices());
  co_await barrier("connected", connected_json(live_count_all(), all));
  phase_name_ = "hold";
  begin_step();
  const uint64_t lost0 = counters_.disconnects;
  const int64_t end = mono_us() + static_cast<int64_t>(opt_.duration_s * 1e6);
  while (mono_us() < end) co_await sleep_ms(static_cast<int>(std::min<int64_t>(100, (end - mono_us()) / 1000 + 1)));
  co_await barrier("held", held_json(counters_.disconnects - lost0));
}

asio::awaitable<bool> Worker::handshake() {
  // The first message of each pair carries the X3DH set-up (a PreKeySignalMessage) from the
  // initiator; once every partner has its session, each answers once, which ends the
  // initiator's prekey messages. So every step measures the Double Ratchet's steady state
  // (SignalMessages both ways). Both are ordinary, verified messages outside every step.
  phase_name_ = "handshake";
  if (opt_.workload == Workload::kGroup) {
    // Sender keys: one distribution per sender and group, then every member holds them all.
    for (const SendSlot& s : slots_) devices_[s.device]->send_new(s.conv, mono_us(), /*distribution=*/true);
    const bool all = co_await wait_until(
        [this] {
          for (const auto& d : devices_)
            if (d->crypto && d->crypto->distributions_received() < d->crypto->distributions_expected) return false;
          return true;
        },
        opt_.setup_timeout_s);
    if (!all) {
      count_error("handshake: sender keys not distributed in time");
      co_return false;
    }
    co_return co_await wait_until([this] { return unacked_sends_ == 0 && verifier_.outstanding() == 0; },
                                  opt_.setup_timeout_s);
  }
  auto all_of = [this](bool initiators) {
    for (const auto& d : devices_)
      if (d->crypto && d->crypto->initiator != initiators && d->crypto->decrypted() == 0) return false;
    return true;
  };
  for (bool initiators : {true, false}) {
    for (auto& d : devices_)
      if (d->crypto && d->crypto->initiator == initiators && !d->convs.empty()) d->send_new(d->convs[0], mono_us());
    if (!co_await wait_until([&] { return all_of(initiators); }, opt_.setup_timeout_s)) {
      count_error("handshake: sessions not set up in time");
      co_return false;
    }
  }
  co_return co_await wait_until([this] { return unacked_sends_ == 0 && verifier_.outstanding() == 0; },
                                opt_.setup_timeout_s);
}

asio::awaitable<void> Worker::run_traffic_steps() {
  phase_name_ = "connect";
  bool all = co_await bring_online(all_devices());
  if (all && opt_.encrypt) all = co_await handshake();
  co_await barrier("connected", connected_json(live_count_all(), all));
  for (;;) {
    const json::value go = co_await barrier("step_start", json::object{});
    const auto& g = go.as_object();
    if (g.contains("stop")) break;
    const double rate = rate_of_worker(opt_, index_, g.at("rate").to_number<double>());
    begin_step();
    phase_name_ = "send";
    start_sending(rate, opt_.duration_s, 0);
    co_await wait_until([this] { return !sending_; }, opt_.duration_s + 60);
    const double send_s = static_cast<double>(send_stopped_us_ - send_started_us_) / 1e6;
    delivered_at_send_end_ = counters_.delivered;
    acked_at_send_end_ = counters_.acked;
    phase_name_ = "drain";
    double drain_s = 0;
    bool drained = false;
    co_await drain(drain_s, drained);
    co_await barrier("step_end", step_json(rate, send_s, drain_s, drained));
  }
}

asio::awaitable<void> Worker::run_reconnect_storm() {
  phase_name_ = "connect";
  const auto everyone = all_devices();
  const bool all = co_await bring_online(everyone);
  co_await barrier("connected", connected_json(live_count_all(), all));
  for (;;) {
    const json::value go = co_await barrier("step_start", json::object{});
    const auto& g = go.as_object();
    if (g.contains("stop")) break;
    const double rate = rate_of_worker(opt_, index_, g.at("rate").to_number<double>());
    begin_step();
    phase_name_ = "send";
    start_sending(rate, opt_.duration_s, 0);
    const int64_t storm_at = send_t0_us_ + static_cast<int64_t>(opt_.duration_s * opt_.storm_at * 1e6);
    co_await wait_until([storm_at] { return mono_us() >= storm_at; }, opt_.duration_s + 1);
    co_await barrier("storm", json::object{});
    phase_name_ = "storm";
    const int64_t t = mono_us();
    for (auto& d : devices_) d->drop_abruptly();
    pump_connects();
    const bool back = co_await wait_until([&] { return live_count(everyone) == everyone.size(); }, opt_.setup_timeout_s);
    step_extra_storm_s_ = static_cast<double>(mono_us() - t) / 1e6;
    if (!back) count_error("storm: clients not back in time", everyone.size() - live_count(everyone));
    phase_name_ = "send";
    co_await wait_until([this] { return !sending_; }, opt_.duration_s + 60);
    const double send_s = static_cast<double>(send_stopped_us_ - send_started_us_) / 1e6;
    delivered_at_send_end_ = counters_.delivered;
    acked_at_send_end_ = counters_.acked;
    phase_name_ = "drain";
    double drain_s = 0;
    bool drained = false;
    co_await drain(drain_s, drained);
    co_await barrier("step_end", step_json(rate, send_s, drain_s, drained));
  }
}

asio::awaitable<void> Worker::run_offline_drain() {
  phase_name_ = "connect";
  const bool all = co_await bring_online(senders_);
  co_await barrier("connected", connected_json(live_count_all(), all));
  for (;;) {
    const json::value go = co_await barrier("step_start", json::object{});
    const auto& g = go.as_object();
    if (g.contains("stop")) break;
    const double rate = rate_of_worker(opt_, index_, g.at("rate").to_number<double>());
    begin_step();
    phase_name_ = "queue";
    const uint64_t count = static_cast<uint64_t>(opt_.queued) * receivers_.size();
    start_sending(rate, 0, count);
    co_await wait_until([this] { return !sending_; }, static_cast<double>(count) / std::max(rate, 1.0) + 60);
    co_await wait_until([this] { return unacked_sends_ == 0; }, opt_.drain_timeout_s);
    const double send_s = static_cast<double>(send_stopped_us_ - send_started_us_) / 1e6;
    co_await barrier("queued", one_field("acked", counters_.acked - step_start_counters_.acked));
    phase_name_ = "replay";
    const int64_t t = mono_us();
    for (DeviceIdx d : receivers_) queue_connect(d);
    pump_connects();
    const bool back = co_await wait_until(
        [&] { return live_count(receivers_) == receivers_.size() && verifier_.outstanding() == 0; },
        opt_.setup_timeout_s);
    step_extra_replay_s_ = static_cast<double>(mono_us() - t) / 1e6;
    if (!back) count_error("replay: receivers not synced in time", receivers_.size() - live_count(receivers_));
    delivered_at_send_end_ = counters_.delivered;
    acked_at_send_end_ = counters_.acked;
    phase_name_ = "drain";
    double drain_s = 0;
    bool drained = false;
    co_await drain(drain_s, drained);
    co_await barrier("step_end", step_json(rate, send_s, drain_s, drained));
  }
}

json::value Worker::posts_json(size_t from) const {
  json::array a;
  for (size_t i = from; i < posts_.size(); ++i) a.push_back(json::array{posts_[i].first, posts_[i].second});
  json::object o;
  o["posts"] = std::move(a);
  return o;
}

void Worker::note_catchup_delivery(DeviceIdx d) {
  if (!catchup_dev_ || d != *catchup_dev_ || catchup_last_us_ != 0 || catchup_connect_us_ == 0) return;
  if (verifier_.device_delivered(d) >= catchup_target_) catchup_last_us_ = mono_us();
}

// One channel, one poster (worker 0's device 0), every other client a subscriber. The poster
// posts at --rate for --duration (with --catchup: exactly --catchup posts while the catch-up
// subscriber is offline). Workers other than 0 learn the acknowledged posts at the "posted"
// barrier, so that each verifier expects every post at each of its subscribers.
asio::awaitable<void> Worker::run_channel() {
  phase_name_ = "connect";
  const bool all = co_await bring_online(all_devices());
  co_await barrier("connected", connected_json(live_count_all(), all));
  const json::value go = co_await barrier("step_start", json::object{});
  if (go.as_object().contains("stop")) co_return;
  const double rate = rate_of_worker(opt_, index_, go.as_object().at("rate").to_number<double>());
  begin_step();
  phase_name_ = "send";
  const uint64_t count = static_cast<uint64_t>(opt_.catchup);
  start_sending(rate, count > 0 ? 0 : opt_.duration_s, count);
  const double send_limit_s = count > 0 ? static_cast<double>(count) / std::max(rate, 1.0) + 60 : opt_.duration_s + 60;
  co_await wait_until([this] { return !sending_; }, send_limit_s);
  co_await wait_until([this] { return unacked_sends_ == 0; }, opt_.drain_timeout_s);
  const double send_s = static_cast<double>(send_stopped_us_ - send_started_us_) / 1e6;
  delivered_at_send_end_ = counters_.delivered;
  acked_at_send_end_ = counters_.acked;
  ack_posts(co_await barrier("posted", posts_json()));
  if (catchup_dev_) {
    // Everything is posted and stored: the catch-up subscriber connects and replays.
    phase_name_ = "catchup";
    catchup_target_ = posts_.size();
    catchup_connect_us_ = mono_us();
    const std::vector<DeviceIdx> one(1, *catchup_dev_);
    note_catchup_delivery(*catchup_dev_);
    const bool back = co_await bring_online(one);
    if (back) co_await wait_until([this] { return catchup_last_us_ != 0; }, opt_.setup_timeout_s);
    if (!catchup_last_us_) count_error("catch-up: not every post arrived in time");
  }
  phase_name_ = "drain";
  double drain_s = 0;
  bool drained = false;
  co_await drain(drain_s, drained);
  json::value step = step_json(rate, send_s, drain_s, drained);
  if (catchup_dev_) {
    auto& o = step.as_object();
    o["catchup_posts"] = catchup_target_;
    o["catchup_replayed"] = verifier_.device_delivered(*catchup_dev_);
    o["catchup_synced_s"] = catchup_synced_us_ ? static_cast<double>(catchup_synced_us_ - catchup_connect_us_) / 1e6 : -1.0;
    o["catchup_last_post_s"] = catchup_last_us_ ? static_cast<double>(catchup_last_us_ - catchup_connect_us_) / 1e6 : -1.0;
  }
  co_await barrier("step_end", std::move(step));
  co_await run_store_probe(rate);
}

void Worker::ack_posts(const json::value& posted) {
  if (!shadow_) return;
  const ConvIdx c = 0;  // the channel, the only conversation
  for (const auto& p : posted.as_object().at("posts").as_array()) {
    const auto& pair = p.as_array();
    verifier_.on_acked(0, c, pair.at(0).to_number<Seq>(), pair.at(1).to_number<uint64_t>());
  }
}

// What one post costs the store, from ternd's own counter: the coordinator reads
// tern_store_writes_total before and after kProbePosts posts while no subscriber acks (an ack
// is a cursor write), then the acks resume and the posts are verified like the others.
asio::awaitable<void> Worker::run_store_probe(double rate) {
  constexpr uint64_t kProbePosts = 10;
  phase_name_ = "probe";
  acks_paused_ = true;
  co_await barrier("probe_start", json::object{});
  const size_t from = posts_.size();
  if (index_ == 0) {
    start_sending(std::max(rate, 20.0), 0, kProbePosts);
    co_await wait_until([this] { return !sending_; }, 60);
    co_await wait_until([this] { return unacked_sends_ == 0; }, opt_.drain_timeout_s);
  }
  ack_posts(co_await barrier("probe_end", posts_json(from)));
  acks_paused_ = false;
  for (auto& d : devices_) d->flush_acks();
  double drain_s = 0;
  bool drained = false;
  co_await drain(drain_s, drained);
  if (!drained) count_error("store probe: posts not delivered in time");
}

}  // namespace tern::bench
