// Worker: one tern-bench process's share of a run. It registers its users and creates their
// conversations over HTTP (blocking, several threads, before the event loop), then drives all
// its clients on one Asio io_context thread: connections, the open-loop send schedule,
// coalesced cumulative acks, latency histograms and the Verifier. Phases are sequenced by a
// coroutine that meets the coordinator at named barriers over a pipe (see bench_control.h),
// so that every worker drops, sends or measures at the same moment.
//
// Device: one simulated client (one user, one device, one connection). Its connection
// callbacks run on the worker thread; it keeps its unacknowledged sends (bounded by
// --max-pending; beyond: counted as a local error and not sent) and retransmits them with the
// same client_msg_id after every reconnect.
//
// MQTT mode (--protocol mqtt, pairs only; bench_device_mqtt.cc): no HTTP set-up; a device is
// an MQTT client (client id = its user name, persistent session) that publishes QoS 1 to
// "<prefix>/p/<worker>-<pair>/a" (or "/b") and subscribes to its partner's topic. Each
// direction of a pair is its own verifier conversation whose seq is the sender's sequence
// (MQTT has no server-assigned seq): PUBACK from the broker plays `sent`, SUBACK plays
// `synced`, and the receiver's PUBACK (sent at once for every message) plays the ack.
//
// Ownership: the Worker owns its io_context, devices and verifier; devices point back to it.
// Everything runs on the thread that calls run().
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/value.hpp>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_options.h"
#include "bench_stats.h"
#include "client/lean/lean_histogram.h"
#include "client/lean/lean_http.h"
#include "client/lean/lean_mqtt.h"
#include "client/lean/lean_record.h"
#include "client/lean/lean_verifier.h"
#include "client/lean/lean_ws_connection.h"
#include "proto/server_frames.h"

namespace tern::bench {

namespace asio = boost::asio;
namespace lean = tern::client::lean;
using lean::ConvIdx;
using lean::DeviceIdx;

class Worker;

// The channel workload's one channel, created by the coordinator before the workers start (so
// that every worker's subscribers can join it): its id, and its poster (owner), who is device
// 0 of worker 0. Empty for other workloads.
struct ChannelSetup {
  std::string id;
  std::string poster;
  std::string poster_token;
};
// Registers the poster (named like worker 0's device 0) and creates the channel; blocking.
Result<ChannelSetup> create_bench_channel(const BenchOptions& opt);

// MQTT packet ids: PUBLISH uses 1..65534 (sender seq s -> (s - 1) % 65534 + 1), SUBSCRIBE
// 65535. At most kMqttMaxPending publishes are unacknowledged per device, so an id names
// exactly one pending send.
inline constexpr size_t kMqttMaxPending = 65534;
inline constexpr uint16_t kMqttSubscribeId = 65535;

class Device final : public lean::WsConnection::Handler, public lean::MqttConnection::Handler {
 public:
  enum class Phase { kOffline, kConnecting, kReplaying, kLive };

  Device(Worker& w, DeviceIdx idx);

  // Connection control. want_online() makes the worker keep this device connected
  // (reconnecting with backoff); go_offline() closes and stops that.
  void connect_now();
  void go_offline(bool abort);
  // Drops the connection abruptly but stays wanted online (reconnect storm).
  void drop_abruptly();
  // Gives up a connect attempt that hangs (and retries later, as after any failure).
  void abort_attempt(std::string_view reason);
  // MQTT: a PINGREQ when nothing was written for half the keep-alive.
  void keepalive(int64_t now);

  // Schedules a new message into `conv`, intended to leave at `intended_us`.
  void send_new(ConvIdx conv, int64_t intended_us);
  // Transmits an unacknowledged send again (channel: after a temporary refusal).
  void resend(uint64_t sender_seq);
  void flush_acks();

  Phase phase() const { return phase_; }
  size_t unacked() const { return unacked_; }

  void on_ws_open(lean::WsConnection& c) override;
  void on_ws_text(lean::WsConnection& c, std::string_view text) override;
  void on_ws_closed(lean::WsConnection& c, std::string_view reason) override;

  void on_mqtt_open(lean::MqttConnection& c, bool session_present) override;
  void on_mqtt_publish(lean::MqttConnection& c, const lean::MqttPublish& p) override;
  void on_mqtt_puback(lean::MqttConnection& c, uint16_t packet_id) override;
  void on_mqtt_suback(lean::MqttConnection& c, const lean::MqttSuback& s) override;
  void on_mqtt_closed(lean::MqttConnection& c, std::string_view reason) override;

  // Identity, filled in by set-up.
  DeviceIdx idx;
  std::string user;
  std::string token;
  std::vector<ConvIdx> convs;  // memberships
  bool want_online = false;
  // channel, workers other than 0: device 0 stands for worker 0's poster in this worker's
  // verifier (its posts are acknowledged here through the "posted" barrier); never connects.
  bool shadow = false;
  int64_t attempt_started_us = 0;
  int failures_in_row = 0;
  bool queued = false;  // in the worker's connect queue
  std::optional<ConvIdx> mqtt_in;  // MQTT: the conversation (partner's topic) subscribed to

 private:
  friend class Worker;
  struct Pending {
    ConvIdx conv;
    int64_t intended_us;
    bool acked = false;      // `sent` arrived, or the send failed for good
    bool transmitted = false;
  };
  struct AckSlot {
    ConvIdx conv;
    Seq highest = 0;  // highest seq received
    Seq acked = 0;    // highest seq acked to the server
  };

  void transmit(uint64_t sender_seq, Pending& p);
  void transmit_mqtt(uint64_t sender_seq, Pending& p);
  // The common tail of both transmits: counts a send the connection `queued` (as written or
  // retransmitted) or refused (a local error; it stays untransmitted for the next connection).
  void count_transmit(Pending& p, bool queued);
  // The common tail of both receive paths: counts what the verifier made of a delivery; `rec`
  // is null for a message without a body record (counted as "other" when it is new).
  void count_delivery(lean::Verifier::Delivery kind, const lean::BodyRecord* rec);
  void opened();                        // a connection is up: counters, verifier, resends
  void closed(std::string_view reason);  // ... and lost: counters, backoff
  void acknowledged(uint64_t sender_seq, Pending& p, Seq seq);
  void on_sent(const proto::SentEvent& e);
  void on_message(const proto::MessageEvent& e);
  void on_error(const proto::ErrorEvent& e);
  void on_receipt(const proto::ReceiptEvent& e);
  void settle(uint64_t sender_seq);  // pops acknowledged sends off the front
  void set_phase(Phase p);

  Worker& w_;
  Phase phase_ = Phase::kOffline;
  std::deque<Pending> pending_;  // pending_[i] is sender seq base_ + i
  uint64_t base_ = 1;
  uint64_t next_seq_ = 1;
  size_t unacked_ = 0;
  std::vector<AckSlot> acks_;
  std::vector<ConvIdx> sent_in_;  // conversations with at least one acknowledged send
  uint32_t unacked_msgs_ = 0;
  bool ack_listed_ = false;
  std::string scratch_body_;

 public:
  lean::WsConnection conn;  // last: destroyed first
  std::unique_ptr<lean::MqttConnection> mqtt;  // MQTT mode only
};

class Worker {
 public:
  // `ctl_in`/`ctl_out`: the pipe ends to and from the coordinator.
  Worker(const BenchOptions& opt, int index, int ctl_in, int ctl_out, ChannelSetup channel = {});
  ~Worker();
  // The whole life of the worker; returns the process exit code.
  int run();

 private:
  friend class Device;
  struct ConvInfo {
    std::string id;
    std::vector<DeviceIdx> members;
  };
  struct SendSlot {
    DeviceIdx device;
    ConvIdx conv;
  };

  // ---- set-up (bench_setup.cc) ----
  Result<void> setup();
  Result<void> register_users();
  Result<void> create_conversations();
  Result<void> create_mqtt_topics();
  Result<void> join_channel();
  Result<void> add_offline_subscribers();
  bool mqtt_mode() const { return opt_.protocol == Protocol::kMqtt; }

  // ---- phases (bench_worker.cc) ----
  asio::awaitable<void> lifecycle();
  asio::awaitable<void> run_idle();
  asio::awaitable<void> run_traffic_steps();
  asio::awaitable<void> run_reconnect_storm();
  asio::awaitable<void> run_offline_drain();
  asio::awaitable<void> run_channel();
  // Wants `who` online and waits until all are live (or the set-up timeout).
  asio::awaitable<bool> bring_online(const std::vector<DeviceIdx>& who);
  asio::awaitable<bool> wait_until(std::function<bool()> done, double timeout_s);
  asio::awaitable<void> sleep_ms(int ms);
  // Meets the coordinator at barrier `name`, handing it `data`; returns its answer.
  asio::awaitable<boost::json::value> barrier(std::string_view name, boost::json::value data);
  // Sending: starts the open-loop schedule (rate per second for `seconds`, or `count` sends).
  void start_sending(double rate, double seconds, uint64_t count);
  asio::awaitable<void> drain(double& drain_s, bool& drained);
  boost::json::value step_json(double rate, double send_s, double drain_s, bool drained) const;
  void begin_step();
  void write_barrier(std::string_view name, boost::json::value data);
  boost::json::value held_json(uint64_t disconnects) const;
  boost::json::value result_json() const;

  // ---- event loop ----
  void start_tick();
  void on_tick();
  void send_due(int64_t now);
  void pump_connects();
  void queue_connect(DeviceIdx d);
  void retry_later(DeviceIdx d, int64_t at_us);
  void housekeeping(int64_t now);
  void report_progress(int64_t now);
  void write_line(char kind, const boost::json::value& v);
  void count_error(std::string_view code, uint64_t n = 1) { errors_[std::string(code)] += n; }
  lean::WsTarget target_for(DeviceIdx d) const;
  lean::MqttTarget mqtt_target_for(DeviceIdx d) const;
  Result<ConvIdx> conv_of(std::string_view id) const;
  size_t live_count(const std::vector<DeviceIdx>& who) const;
  size_t live_count_all() const;
  // Every device that connects (all but a channel's shadow poster and catch-up subscriber).
  std::vector<DeviceIdx> all_devices() const;
  size_t real_clients() const { return devices_.size() - (shadow_ ? 1 : 0); }
  // Posts acknowledged to worker 0's poster from index `from` on, for the other workers.
  boost::json::value posts_json(size_t from = 0) const;
  void ack_posts(const boost::json::value& posted);  // a shadow's verifier learns them
  asio::awaitable<void> run_store_probe(double rate);
  void note_catchup_delivery(DeviceIdx d);

  const BenchOptions opt_;
  const int index_;
  int ctl_in_fd_;
  int ctl_out_fd_;
  asio::io_context io_;
  lean::ReadScratch scratch_;
  lean::ServerAddress server_;
  std::vector<asio::ip::address> sources_;
  lean::Verifier verifier_;
  lean::BodyEncoder encoder_;
  std::vector<ConvInfo> convs_;
  struct IdHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, ConvIdx, IdHash, std::equal_to<>> conv_by_id_;
  std::vector<SendSlot> slots_;
  std::vector<DeviceIdx> senders_, receivers_;  // offline-drain's halves
  // channel
  ChannelSetup channel_;
  bool shadow_ = false;                            // devices_[0] is the shadow poster
  std::vector<std::pair<Seq, uint64_t>> posts_;    // worker 0: acknowledged posts (seq, sender seq)
  std::optional<DeviceIdx> catchup_dev_;           // worker 0 with --catchup: offline until posted
  uint64_t catchup_target_ = 0;                    // posts it must get
  int64_t catchup_connect_us_ = 0, catchup_synced_us_ = 0, catchup_last_us_ = 0;
  uint64_t offline_joined_ = 0;
  bool acks_paused_ = false;                       // the store probe: no acks, so no cursor writes
  Counters counters_;
  ErrorCounts errors_;
  lean::LatencyHistogram step_latency_, step_ack_latency_, interval_latency_;

  // Open-loop schedule: send k is due at t0 + k / rate, from slot k mod slots.
  bool sending_ = false;
  int64_t send_t0_us_ = 0;
  int64_t send_end_us_ = 0;
  double send_interval_us_ = 0;
  uint64_t send_k_ = 0;
  uint64_t send_total_ = 0;
  int64_t send_started_us_ = 0;
  int64_t send_stopped_us_ = 0;

  // Step snapshot.
  Counters step_start_counters_;
  int64_t step_cpu0_us_ = 0;
  int64_t step_started_us_ = 0;
  double step_extra_storm_s_ = -1;
  double step_extra_replay_s_ = -1;
  uint64_t delivered_at_send_end_ = 0;
  uint64_t acked_at_send_end_ = 0;

  // Connections.
  std::deque<DeviceIdx> connect_queue_;
  std::vector<std::pair<int64_t, DeviceIdx>> retry_list_;  // (due, device)
  std::vector<std::pair<int64_t, std::pair<DeviceIdx, uint64_t>>> resend_list_;  // (due, (device, sender seq))
  int connecting_ = 0;
  std::vector<DeviceIdx> ack_dirty_;
  uint64_t unacked_sends_ = 0;  // sends without `sent` (or a refusal) yet, all devices

  asio::steady_timer tick_;
  int64_t last_ack_flush_us_ = 0;
  int64_t last_housekeeping_us_ = 0;
  int64_t last_timeout_scan_us_ = 0;
  int64_t last_keepalive_scan_us_ = 0;
  int64_t last_progress_us_ = 0;
  int64_t run_started_us_ = 0;
  Counters progress_counters_;
  std::string phase_name_ = "setup";
  std::unique_ptr<asio::posix::stream_descriptor> ctl_in_;
  std::string ctl_buf_;
  bool finished_ = false;
  int exit_code_ = 0;

  std::vector<std::unique_ptr<Device>> devices_;  // last: destroyed first
};

}  // namespace tern::bench
