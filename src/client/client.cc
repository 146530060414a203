#include "client/client.h"

#include <atomic>
#include <future>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "base/base64.h"
#include "base/clock.h"
#include "base/log.h"
#include "client/convert.h"
#include "client/e2e_session.h"
#include "client/errors.h"
#include "client/history_transfer.h"
#include "client/io_thread.h"
#include "client/receiver.h"
#include "client/sqlite_store.h"
#include "client/tls.h"
#include "client/ws_connection.h"
#include "proto/limits.h"
#include "proto/server_frames.h"

namespace tern::client {
namespace asio = boost::asio;
using Strand = asio::strand<asio::io_context::executor_type>;
using Timer = asio::steady_timer;

const char* to_string(ConnectionState s) {
  switch (s) {
    case ConnectionState::kConnecting: return "connecting";
    case ConnectionState::kConnected: return "connected";
    case ConnectionState::kSynced: return "synced";
    case ConnectionState::kDisconnected: return "disconnected";
    case ConnectionState::kStopped: return "stopped";
  }
  return "unknown";
}

namespace {

constexpr size_t kMaxPresenceUsers = 1024;
constexpr size_t kMaxPendingReads = 4096;
// device_mismatch answers to one send before it fails (each fixes the device lists, §14.8).
constexpr int kMaxMismatchRetries = 5;

std::string random_client_msg_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const uint64_t a = rng(), b = rng();
  char buf[40];
  // UUID version 4 layout, variant 1.
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0x0fff),
                static_cast<unsigned>(((b >> 48) & 0x3fff) | 0x8000),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

}  // namespace

struct Client::Impl : std::enable_shared_from_this<Impl> {
  struct Pending {
    OutboxEntry entry;
    Callback<SendResult> done;
    bool in_flight = false;
    bool written_before = false;
    std::string frame;    // end-to-end: the encrypted `send`, built at the first write
    int mismatches = 0;   // device_mismatch answers so far
  };

  Impl(asio::io_context& ioc_, Options o, Events e, ServerUrl u, std::unique_ptr<LocalStore> s, SqliteStore* sql)
      : ioc(ioc_),
        strand(asio::make_strand(ioc_)),
        opts(std::move(o)),
        events(std::move(e)),
        url(std::move(u)),
        store(std::move(s)),
        sqlite(sql),
        api(ioc_, url, opts.credentials.token, opts.api),
        reconnect_timer(strand),
        send_pause_timer(strand),
        ack_timer(strand),
        expiry_timer(strand),
        rng(std::random_device{}()) {}

  asio::io_context& ioc;
  Strand strand;
  Options opts;
  Events events;
  ServerUrl url;
  std::unique_ptr<LocalStore> store;
  SqliteStore* sqlite = nullptr;  // `store` when it is one (the device's history lives there)
  Api api;
  std::unique_ptr<E2eSession> e2e;  // end-to-end encryption; null when off
  std::unique_ptr<HistoryTransfer> history;  // with e2e: history for a newly linked device
  bool keys_published = false;
  bool building = false;  // an encrypted frame waits for a fetch (one at a time, in order)
  std::unique_ptr<Receiver> receiver;

  std::atomic<ConnectionState> state{ConnectionState::kDisconnected};
  std::atomic<bool> stopped{false};
  bool started = false;
  bool shut_down = false;

  std::shared_ptr<WsConnection> conn;
  uint64_t conn_gen = 0;
  int reconnect_attempt = 0;
  Timer reconnect_timer;

  std::list<Pending> outbox;  // submission order
  std::unordered_map<std::string, std::list<Pending>::iterator> by_id;
  size_t in_flight = 0;
  bool send_paused = false;
  int send_retry_attempt = 0;
  Timer send_pause_timer;

  bool ack_scheduled = false;
  Timer ack_timer;
  std::map<std::string, Seq> pending_reads;
  std::set<std::string> presence_users;
  std::set<std::shared_ptr<Timer>> scheduled;  // Receiver timers, cancelled on stop
  // Disappearing messages handed over: expires_at → (conversation, seq); one timer for the
  // earliest (on the strand).
  std::multimap<int64_t, std::pair<std::string, Seq>> expiring;
  Timer expiry_timer;

  std::mt19937_64 rng;
  mutable std::mutex stats_mu;
  ClientStats stats_;

  // On the strand: remembers a delivered message's expiry and arms the timer for the earliest.
  void track_expiry(const std::string& conv, Seq seq, int64_t at) {
    if (expiring.size() >= kMaxExpiryTimers) {
      auto last = std::prev(expiring.end());
      if (last->first <= at) return;  // bounded: the latest ones are not tracked
      expiring.erase(last);
    }
    const bool earliest = expiring.empty() || at < expiring.begin()->first;
    expiring.emplace(at, std::make_pair(conv, seq));
    if (earliest) arm_expiry();
  }
  void arm_expiry() {
    if (expiring.empty() || stopped) return;
    const int64_t wait = std::max<int64_t>(0, expiring.begin()->first - now_ms());
    expiry_timer.expires_after(std::chrono::milliseconds(wait));
    expiry_timer.async_wait([w = weak_from_this()](const boost::system::error_code& ec) {
      auto s = w.lock();
      if (ec || !s || s->stopped) return;
      const int64_t now = now_ms();
      while (!s->expiring.empty() && s->expiring.begin()->first <= now) {
        auto [conv, seq] = s->expiring.begin()->second;
        s->expiring.erase(s->expiring.begin());
        if (s->e2e) (void)s->sqlite->remove_message(conv, seq);
        s->emit(s->events.on_expired, conv, seq);
      }
      s->arm_expiry();
    });
  }

  template <typename F, typename... A>
  void emit(const F& f, A&&... a) {
    if (!stopped && f) f(std::forward<A>(a)...);
  }
  template <typename F>
  void bump(F f) {
    std::lock_guard lock(stats_mu);
    f(stats_);
  }
  void sync_receiver_stats() {
    const auto& r = receiver->stats();
    std::lock_guard lock(stats_mu);
    stats_.delivered = r.delivered;
    stats_.duplicates = r.duplicates;
    stats_.backfills = r.backfills;
    stats_.gaps_accepted = r.gaps_accepted;
  }

  void init_receiver() {
    std::weak_ptr<Impl> w = weak_from_this();
    ReceiverOptions ro;
    ro.self_user = opts.credentials.user;
    ro.self_device = opts.credentials.device;
    ro.backfill_page = opts.backfill_page;
    ro.gap_grace_ms = opts.gap_grace_ms;
    ReceiverHooks h;
    h.deliver = [w](const Message& received) {
      auto s = w.lock();
      if (!s) return;
      OpenResult r = s->open(received);
      for (const auto& m : r.released) s->keep(m), s->hand_over(m);
      if (!r.m) return;
      if (r.store) s->keep(*r.m);
      s->hand_over(*r.m);
    };
    h.backfill = [w](const std::string& conv, Seq after, size_t limit, Callback<HistoryPage> cb) {
      auto s = w.lock();
      if (!s) return;
      s->api.history(conv, after, limit, [w, cb = std::move(cb)](Result<HistoryPage> r) mutable {
        auto s2 = w.lock();
        if (!s2) return;
        asio::post(s2->strand, [s2, cb = std::move(cb), r = std::move(r)]() mutable {
          if (s2->stopped) return;
          cb(std::move(r));
          s2->sync_receiver_stats();
        });
      });
    };
    h.schedule = [w](int64_t delay_ms, std::function<void()> fn) {
      auto s = w.lock();
      if (!s || s->stopped) return;
      auto t = std::make_shared<Timer>(s->strand, std::chrono::milliseconds(delay_ms));
      s->scheduled.insert(t);
      t->async_wait([w, t, fn = std::move(fn)](boost::system::error_code ec) {
        auto s2 = w.lock();
        if (!s2) return;
        s2->scheduled.erase(t);
        if (ec || s2->stopped) return;
        fn();
        s2->sync_receiver_stats();
      });
    };
    h.ack_pending = [w] {
      if (auto s = w.lock()) s->schedule_ack_flush();
    };
    h.random = [w]() -> uint64_t {
      auto s = w.lock();
      return s ? s->rng() : 0;
    };
    receiver = std::make_unique<Receiver>(ro, std::move(h));
  }

  // End-to-end: this device's entry decrypted (or taken from the store when it was opened
  // before, or is our own). Nothing is written here: the caller keeps `store` in the device's
  // history and commits the keyring once for a whole batch (flush_acks, open_page).
  struct OpenResult {
    std::optional<Message> m;  // nullopt: not decrypted (reported; the Receiver acks it all the same)
    bool store = false;        // m goes to the device's history
    bool hidden = false;       // key or history traffic: not a message
    std::vector<Message> released;  // held group messages whose sender key just arrived (stored too)
  };
  OpenResult open(const Message& received) {
    OpenResult out;
    if (!e2e || !E2eSession::encrypted(received.conversation_id)) {
      out.m = received;
      return out;
    }
    if (received.sender == opts.credentials.user && received.sender_device == opts.credentials.device &&
        !received.system_json) {
      // Our own send (met in a backfill page): only the store has it.
      auto stored = sqlite->message(received.conversation_id, received.seq);
      out.m = stored && *stored ? **stored : received;
      return out;
    }
    Message m = received;
    if (m.system_json) {
      e2e->forget_members(m.conversation_id);  // membership changed: read the members again
    } else if (!m.expired) {
      auto stored = sqlite->message(m.conversation_id, m.seq);
      if (stored && *stored) {
        m.body = (*stored)->body;
      } else if (m.conversation_id.starts_with("s-") && m.body.empty()) {
        out.hidden = true;  // history for another own device: nothing for this one
        return out;
      } else if (!m.body.empty()) {
        auto opened = e2e->open_message(m);
        if (!opened) {
          undecryptable(m, opened.error());
          return out;
        }
        for (const auto& [gone, err] : opened->given_up) undecryptable(gone, err);
        out.released = std::move(opened->released);
        if (opened->control) history->on_control(m, *opened->control);
        if (!opened->text) {  // key or history traffic, or waiting for a sender key: not a message
          out.hidden = true;
          return out;
        }
        m.body = std::move(*opened->text);
      }
    }
    out.m = std::move(m);
    out.store = true;
    return out;
  }

  // A plaintext into the device's history. Received messages are kept (and handed over) at
  // once; the keyring's changes that decrypted them are saved later, once for everything
  // before the next ack (flush_acks): a crash before that save leaves them unacked and in
  // the history, so that the server's replay is answered from the history (the older key
  // state would also decrypt it again). Saving the keys before the history would open a
  // window where a crash loses them (the saved state refuses the replay as a duplicate).
  void keep(const Message& m) {
    if (auto r = sqlite->save_message(m); !r)
      spdlog::warn("component=client event=history_save_failed error=\"{}\"", r.error().message);
  }

  // The keyring's changes since the last save, saved (nothing when none).
  Result<void> commit_keys() {
    if (!e2e || !e2e->keyring().dirty()) return {};
    auto r = e2e->keyring().commit();
    if (r) bump([](ClientStats& st) { ++st.keyring_saves; });
    if (!r) spdlog::warn("component=client event=keyring_save_failed error=\"{}\"", r.error().message);
    return r;
  }

  void undecryptable(const Message& m, const Error& err) {
    spdlog::info("component=client event=undecryptable conversation={} seq={} sender={}:{} error=\"{}\"",
                 m.conversation_id, m.seq, m.sender, m.sender_device, err.message);
    emit(events.on_undecryptable, Undecryptable{m.conversation_id, m.seq, m.sender, m.sender_device, err});
  }

  // Gives an opened message to the application (an expired payload as a tombstone).
  void hand_over(const Message& m) {
    if (!m.expires_at) return emit(events.on_message, m);
    if (*m.expires_at <= now_ms()) {  // never hand over an expired payload
      Message tomb = m;
      tomb.body.clear();
      tomb.expired = true;
      return emit(events.on_message, tomb);
    }
    emit(events.on_message, m);
    track_expiry(m.conversation_id, m.seq, *m.expires_at);
  }

  void identity_changed(const std::string& user, uint32_t device) {
    spdlog::info("component=client event=identity_changed user={} device={}", user, device);
    if (auto r = sqlite->note_identity_change(user); !r)
      spdlog::warn("component=client event=identity_note_failed error=\"{}\"", r.error().message);
    emit(events.on_identity_changed, user, device);
  }

  void publish_keys(bool then_connect) {
    e2e->publish([w = weak_from_this(), then_connect](Result<void> r) {
      auto s = w.lock();
      if (!s || s->stopped) return;
      s->keys_published = r.ok();
      if (r && s->history) s->history->on_start();
      if (!r) spdlog::warn("component=client event=key_upload_failed error=\"{}\"", r.error().message);
      if (then_connect) s->connect();
    });
  }

  void set_state(ConnectionState s, const Error* err) {
    state = s;
    emit(events.on_state, s, err);
  }

  // ---- lifecycle (strand) ----
  void do_start() {
    if (started || stopped) return;
    started = true;
    if (auto c = store->cursors(); c) {
      for (const auto& [conv, seq] : *c) receiver->set_cursor(conv, seq);
    } else {
      spdlog::warn("component=client event=cursor_load_failed error=\"{}\"", c.error().message);
    }
    if (auto p = store->pending(); p) {
      for (auto& e : *p) push_pending(std::move(e), {});
    } else {
      spdlog::warn("component=client event=outbox_load_failed error=\"{}\"", p.error().message);
    }
    if (e2e) return publish_keys(true);  // keys first, so that senders find them
    connect();
  }

  void connect() {
    if (stopped) return;
    set_state(ConnectionState::kConnecting, nullptr);
    const uint64_t gen = ++conn_gen;
    std::weak_ptr<Impl> w = weak_from_this();
    WsHandlers h;
    h.on_open = [w, gen] {
      if (auto s = w.lock(); s && s->conn_gen == gen) s->on_open();
    };
    h.on_text = [w, gen](std::string_view text) {
      if (auto s = w.lock(); s && s->conn_gen == gen) s->on_text(text);
    };
    h.on_close = [w, gen](Error e) {
      if (auto s = w.lock(); s && s->conn_gen == gen) s->on_close(std::move(e));
    };
    WsOptions wo;
    wo.idle_timeout_ms = opts.idle_timeout_ms;
    wo.connect_timeout_ms = opts.api.timeout_ms;
    conn = WsConnection::create(strand, url, opts.credentials.token, wo, std::move(h));
    conn->start();
  }

  void on_open() {
    bump([](ClientStats& s) { ++s.connects; });
    set_state(ConnectionState::kConnected, nullptr);
    if (e2e && !keys_published) publish_keys(false);
    if (!presence_users.empty()) {
      std::vector<std::string> chunk;
      for (const auto& u : presence_users) {
        chunk.push_back(u);
        if (chunk.size() == proto::Limits{}.max_presence_users) {
          conn->send(proto::encode_presence_subscribe(chunk), true);
          chunk.clear();
        }
      }
      if (!chunk.empty()) conn->send(proto::encode_presence_subscribe(chunk), true);
    }
    for (const auto& [conv, seq] : pending_reads) conn->send(proto::encode_read(conv, seq));
    pending_reads.clear();
    pump();
    receiver->retry_gaps();
    sync_receiver_stats();
  }

  void on_close(Error err) {
    conn.reset();
    if (e2e) e2e->on_disconnect();
    for (auto& p : outbox) p.in_flight = false;
    in_flight = 0;
    bump([](ClientStats& s) { ++s.disconnects; });
    if (stopped) return;
    spdlog::info("component=client event=disconnected user={} device={} reason=\"{}\"", opts.credentials.user,
                 opts.credentials.device, err.message);
    // A refused token or a certificate that does not verify will not change by retrying.
    if (err.code == ErrorCode::kUnauthorized || is_tls_verify_error(err) ||
        !backoff_allows(opts.reconnect, reconnect_attempt)) {
      set_state(ConnectionState::kStopped, &err);
      return;
    }
    const int64_t delay = backoff_delay_ms(opts.reconnect, reconnect_attempt++, rng());
    set_state(ConnectionState::kDisconnected, &err);
    reconnect_timer.expires_after(std::chrono::milliseconds(delay));
    reconnect_timer.async_wait([w = weak_from_this()](boost::system::error_code ec) {
      auto s = w.lock();
      if (!s || ec || s->stopped || s->conn) return;
      s->connect();
    });
  }

  void shutdown() {
    if (shut_down) return;
    shut_down = true;
    stopped = true;
    const bool keys_saved = commit_keys().ok();
    state = ConnectionState::kStopped;
    reconnect_timer.cancel();
    ack_timer.cancel();
    send_pause_timer.cancel();
    expiry_timer.cancel();
    for (const auto& t : scheduled) t->cancel();
    scheduled.clear();
    if (receiver && keys_saved)  // (else the server replays them at the next start)
      for (const auto& [conv, seq] : receiver->take_acks()) (void)store->save_cursor(conv, seq);
    if (conn) {
      ++conn_gen;  // its on_close is of no interest any more
      conn->close();
      conn.reset();
    }
    for (auto& p : outbox)
      if (p.done)
        p.done(make_error(ErrorCode::kDraining, "client stopped before the server acknowledged the send"));
    outbox.clear();
    by_id.clear();
    in_flight = 0;
  }

  // ---- frames (strand) ----
  void on_text(std::string_view text) {
    auto frame = proto::parse_server_frame(text);
    if (!frame) {
      spdlog::debug("component=client event=bad_frame error=\"{}\"", frame.error().message);
      return;
    }
    std::visit([this](auto&& f) { handle(std::move(f)); }, std::move(*frame));
  }

  void handle(proto::SentEvent&& e) {
    if (opts.receive && !e.conversation_id.empty()) receiver->on_own_sent(e.conversation_id, e.seq);
    if (e2e && e2e->on_keys_sent(e.client_msg_id)) return;  // a sender-key distribution
    auto it = by_id.find(e.client_msg_id);
    if (it == by_id.end()) return;  // a repeat `sent` (the send went out twice)
    Pending p = std::move(*it->second);
    outbox.erase(it->second);
    by_id.erase(it);
    if (p.in_flight) --in_flight;
    if (e2e && E2eSession::encrypted(p.entry.conversation_id) && history_kind(p.entry.client_msg_id) == 0x01)
      save_own(p.entry, e);  // history traffic is not a message
    if (auto r = store->remove(p.entry.client_msg_id); !r)
      spdlog::warn("component=client event=outbox_remove_failed error=\"{}\"", r.error().message);
    send_retry_attempt = 0;
    bump([](ClientStats& s) { ++s.sends_acked; });
    SendResult res{p.entry.client_msg_id, e.conversation_id.empty() ? p.entry.conversation_id : e.conversation_id,
                   e.seq, e.ts};
    if (p.done && !stopped) p.done(res);
    emit(events.on_sent, res);
    sync_receiver_stats();
    pump();
  }

  // Our own encrypted send, acknowledged: its plaintext joins the device's history (the
  // server holds no entry for the sending device).
  void save_own(const OutboxEntry& entry, const proto::SentEvent& e) {
    Message m;
    m.conversation_id = e.conversation_id.empty() ? entry.conversation_id : e.conversation_id;
    m.seq = e.seq;
    m.sender = opts.credentials.user;
    m.sender_device = opts.credentials.device;
    m.ts = e.ts;
    m.body = base64_decode(entry.body_b64).value_or(std::string());
    m.reply_to = entry.reply_to;
    if (entry.ttl_seconds) m.expires_at = e.ts + *entry.ttl_seconds * 1000;
    if (auto r = sqlite->save_message(m); !r)
      spdlog::warn("component=client event=history_save_failed error=\"{}\"", r.error().message);
    if (m.expires_at) track_expiry(m.conversation_id, m.seq, *m.expires_at);  // deleted when it expires
  }

  void handle(proto::MessageEvent&& e) {
    if (!opts.receive) return;
    receiver->on_message(message_from_event(std::move(e)));
    sync_receiver_stats();
  }

  void handle(proto::SyncedEvent&&) {
    reconnect_attempt = 0;
    set_state(ConnectionState::kSynced, nullptr);
  }

  void handle(proto::ReceiptEvent&& e) {
    Receipt r{std::move(e.conversation_id), std::move(e.user),
              e.status == "read" ? ReceiptStatus::kRead : ReceiptStatus::kDelivered, e.seq};
    emit(events.on_receipt, r);
  }

  void handle(proto::TypingEvent&& e) {
    Typing t{std::move(e.conversation_id), std::move(e.user), e.active};
    emit(events.on_typing, t);
  }

  void handle(proto::PrekeysLowEvent&& e) {
    if (e2e) e2e->refill(e.count);
    emit(events.on_prekeys_low, e.count);
  }

  void handle(proto::PresenceEvent&& e) {
    Presence p{std::move(e.user), e.online, e.last_seen};
    emit(events.on_presence, p);
  }

  void handle(proto::ErrorEvent&& e) {
    Error err = make_error(error_code_from_name(e.code), e.message);
    if (!e.ref.empty()) {
      if (e2e && e2e->on_keys_error(e.ref, e.code, e.missing, e.extra, e.stale)) return;
      if (auto it = by_id.find(e.ref); it != by_id.end()) {
        Pending& p = *it->second;
        if (p.in_flight) {
          p.in_flight = false;
          --in_flight;
        }
        if (retryable(err.code)) {
          pause_sends();
          return;
        }
        if (e2e && e.code == "device_mismatch" && !p.frame.empty() && ++p.mismatches <= kMaxMismatchRetries) {
          // §14.8: fix the device lists, encrypt again, retry with the same client_msg_id.
          e2e->on_device_mismatch(p.entry.conversation_id, e.missing, e.extra, e.stale);
          p.frame.clear();
          pump();
          return;
        }
        fail_pending(it->second, err);
        return;
      }
    }
    emit(events.on_error, err);
  }

  // A send refused for good: it leaves the outbox.
  void fail_pending(std::list<Pending>::iterator pos, const Error& err) {
    Pending gone = std::move(*pos);
    if (gone.in_flight) --in_flight;
    by_id.erase(gone.entry.client_msg_id);
    outbox.erase(pos);
    (void)store->remove(gone.entry.client_msg_id);
    if (gone.done && !stopped) gone.done(err);
    emit(events.on_send_failed, gone.entry.client_msg_id, err);
    pump();
  }

  // End-to-end: the encrypted frame of `p`, or nullopt while keys are fetched (pump runs
  // again when they arrived) or when the entry failed.
  std::optional<std::string> encrypted_frame(std::list<Pending>::iterator pos) {
    if (!pos->frame.empty()) return pos->frame;
    const std::string id = pos->entry.client_msg_id;
    auto built = e2e->build_send(pos->entry, [w = weak_from_this(), id](Result<void> r) {
      auto s = w.lock();
      if (!s || s->stopped) return;
      s->building = false;
      if (r) return s->pump();
      auto it = s->by_id.find(id);
      if (retryable(r.error().code) || is_network_error(r.error()) || it == s->by_id.end()) {
        spdlog::info("component=client event=key_fetch_failed error=\"{}\"", r.error().message);
        return s->pause_sends();
      }
      s->fail_pending(it->second, r.error());
    });
    if (!built) {
      fail_pending(pos, built.error());
      return std::nullopt;
    }
    if (!*built) {
      building = true;
      return std::nullopt;
    }
    pos->frame = std::move(**built);
    return pos->frame;
  }

  // ---- outbox (strand) ----
  void push_pending(OutboxEntry e, Callback<SendResult> done) {
    if (auto it = by_id.find(e.client_msg_id); it != by_id.end()) {
      if (done && !it->second->done) it->second->done = std::move(done);
      return;
    }
    std::string id = e.client_msg_id;
    outbox.push_back(Pending{std::move(e), std::move(done), false, false, {}, 0});
    by_id.emplace(std::move(id), std::prev(outbox.end()));
  }

  void pump() {
    if (!conn || !conn->open() || send_paused || stopped || building) return;
    for (auto pos = outbox.begin(); pos != outbox.end(); ++pos) {
      auto& p = *pos;
      if (in_flight >= opts.max_in_flight) break;
      if (p.in_flight) continue;
      const auto& e = p.entry;
      std::string frame;
      if (e2e && E2eSession::encrypted(e.conversation_id)) {
        auto f = encrypted_frame(pos);
        if (!f) return;  // fetching (pump runs again), or failed (fail_pending pumped)
        frame = std::move(*f);
        // The ratchet steps of this frame (all its devices' ciphertexts) are saved before it
        // leaves: after a crash the same message key must not encrypt another plaintext. One
        // save per send; nothing when the frame was built (and saved) before.
        if (!commit_keys()) return pause_sends();
      } else {
        frame = proto::encode_send(e.client_msg_id, e.conversation_id, e.body_b64, e.reply_to, e.ttl_seconds, e.media);
      }
      if (!conn->send(frame)) break;
      p.in_flight = true;
      ++in_flight;
      if (p.written_before) bump([](ClientStats& s) { ++s.resends; });
      p.written_before = true;
    }
  }

  void pause_sends() {
    if (send_paused) return;
    send_paused = true;
    const int64_t delay = backoff_delay_ms(opts.send_retry, send_retry_attempt++, rng());
    send_pause_timer.expires_after(std::chrono::milliseconds(delay));
    send_pause_timer.async_wait([w = weak_from_this()](boost::system::error_code ec) {
      auto s = w.lock();
      if (!s || ec || s->stopped) return;
      s->send_paused = false;
      s->pump();
    });
  }

  // ---- acks (strand) ----
  void schedule_ack_flush(int64_t delay_ms = -1) {
    if (ack_scheduled || stopped) return;
    ack_scheduled = true;
    ack_timer.expires_after(std::chrono::milliseconds(delay_ms < 0 ? opts.ack_delay_ms : delay_ms));
    ack_timer.async_wait([w = weak_from_this()](boost::system::error_code ec) {
      auto s = w.lock();
      if (!s || ec || s->stopped) return;
      s->flush_acks();
    });
  }

  void flush_acks() {
    ack_scheduled = false;
    // Nothing is acked (nor its cursor kept) before the keys that decrypted it are saved:
    // one save for every message received since the last ack. A failed save: tried again
    // (a second later, not to flood the log), nothing acked meanwhile.
    if (!commit_keys()) return schedule_ack_flush(1000);
    for (const auto& [conv, seq] : receiver->take_acks()) {
      // The cursor first: a crash after the ack must not make us repeat what the app had.
      if (auto r = store->save_cursor(conv, seq); !r)
        spdlog::warn("component=client event=cursor_save_failed error=\"{}\"", r.error().message);
      if (conn && conn->open() && conn->send(proto::encode_ack(conv, seq))) bump([](ClientStats& s) { ++s.acks_sent; });
    }
  }

  // ---- public entry points (any thread) ----
  Result<std::string> send(const std::string& conv, std::string body, SendOptions so, Callback<SendResult> done) {
    if (stopped) return make_error(ErrorCode::kDraining, "client stopped");
    if (!valid_conversation_id(conv)) return make_error(ErrorCode::kInvalidArgument, "bad conversation id");
    if (body.size() > proto::Limits{}.max_body_bytes) return make_error(ErrorCode::kTooLarge, "body too large");
    std::string id = so.client_msg_id.empty() ? random_client_msg_id() : so.client_msg_id;
    if (!valid_client_msg_id(id)) return make_error(ErrorCode::kInvalidArgument, "bad client_msg_id");
    OutboxEntry e{id, conv, base64_encode(body), so.reply_to, so.ttl_seconds, now_ms(), so.media};
    if (auto r = store->add(e); !r) return r.error();
    asio::post(strand, [s = shared_from_this(), e = std::move(e), done = std::move(done)]() mutable {
      if (s->stopped) {
        if (done) done(make_error(ErrorCode::kDraining, "client stopped before the send went out"));
        return;
      }
      s->push_pending(std::move(e), std::move(done));
      s->pump();
    });
    return id;
  }
};

// ---- Client ----

Result<std::unique_ptr<Client>> Client::create(Options options, Events events) {
  auto thread = std::make_unique<IoThread>();
  auto r = create(thread->context(), std::move(options), std::move(events));
  if (!r) return r.error();
  r.value()->own_thread_ = std::move(thread);
  return r;
}

Result<std::unique_ptr<Client>> Client::create(asio::io_context& ioc, Options options, Events events) {
  auto url = parse_server_url(options.server, options.ca_file);
  if (!url) return url.error();
  const auto& c = options.credentials;
  if (!valid_user_id(c.user) || c.device == 0 || c.token.empty())
    return make_error(ErrorCode::kInvalidArgument, "credentials need a user, a device and a token");
  std::unique_ptr<LocalStore> store;
  SqliteStore* sqlite = nullptr;
  if (options.store_path.empty()) {
    store = std::make_unique<MemoryStore>(options.max_outbox);
  } else {
    auto s = SqliteStore::open(options.store_path, options.max_outbox);
    if (!s) return s.error();
    sqlite = s.value().get();
    store = std::move(s.value());
  }
  if (options.max_in_flight == 0) options.max_in_flight = 1;
  std::unique_ptr<Client> client(new Client());
  client->impl_ = std::make_shared<Impl>(ioc, std::move(options), std::move(events), std::move(url.value()),
                                         std::move(store), sqlite);
  Impl& impl = *client->impl_;
  if (sqlite && !impl.opts.plaintext) {
    if (impl.opts.keyring_dir.empty()) impl.opts.keyring_dir = impl.opts.store_path + ".keys";
    std::weak_ptr<Impl> w = client->impl_;
    auto post = [w](std::function<void()> fn) {
      if (auto s = w.lock()) asio::post(s->strand, [w, fn = std::move(fn)] {
        if (auto s2 = w.lock(); s2 && !s2->stopped) fn();
      });
    };
    E2eHooks hooks;
    hooks.post = post;
    hooks.identity_changed = [w](const std::string& user, uint32_t device) {
      if (auto s = w.lock()) s->identity_changed(user, device);
    };
    hooks.send_keys = [w](const std::string& frame) {
      auto s = w.lock();
      return s && s->conn && s->conn->open() && s->conn->send(frame);
    };
    KeyringOptions ko;
    if (impl.opts.keyring_passphrase) ko.passphrase = *impl.opts.keyring_passphrase;
    auto e2e = E2eSession::open(impl.opts.keyring_dir, impl.opts.credentials, impl.api, std::move(hooks), ko);
    if (!e2e) return e2e.error();
    impl.e2e = std::move(*e2e);
    HistoryTransfer::Hooks hh;
    hh.post = post;
    hh.enqueue = [w](OutboxEntry e) {
      auto s = w.lock();
      if (!s) return;
      if (auto r = s->store->add(e); !r && r.error().code != ErrorCode::kExists)
        return spdlog::warn("component=client event=history_enqueue_failed error=\"{}\"", r.error().message);
      s->push_pending(std::move(e), {});
      s->pump();
    };
    hh.track_expiry = [w](const Message& m) {
      if (auto s = w.lock()) s->track_expiry(m.conversation_id, m.seq, *m.expires_at);
    };
    hh.received = [w](size_t n) {
      if (auto s = w.lock()) s->emit(s->events.on_history_received, n);
    };
    impl.history = std::make_unique<HistoryTransfer>(
        impl.opts.credentials, impl.api, *sqlite,
        HistoryOptions{impl.opts.history_messages, impl.opts.history_conversations}, std::move(hh));
    if (auto r = sqlite->remove_expired(now_ms()); !r)
      spdlog::warn("component=client event=history_expiry_failed error=\"{}\"", r.error().message);
  }
  client->impl_->init_receiver();
  return client;
}

Client::~Client() { stop(); }

void Client::start() {
  asio::post(impl_->strand, [s = impl_] { s->do_start(); });
}

void Client::stop() {
  if (!impl_ || stop_called_) return;
  stop_called_ = true;
  impl_->stopped = true;
  if (own_thread_) {
    if (own_thread_->in_thread()) {
      impl_->shutdown();  // only one thread: we are on the strand
    } else {
      auto done = std::make_shared<std::promise<void>>();
      auto f = done->get_future();
      asio::post(impl_->strand, [s = impl_, done] {
        s->shutdown();
        done->set_value();
      });
      f.wait_for(std::chrono::seconds(5));  // the loop may already be gone: do not hang
    }
    own_thread_->stop();
  } else {
    asio::post(impl_->strand, [s = impl_] { s->shutdown(); });
  }
}

Result<std::string> Client::send(const std::string& conversation_id, std::string body, SendOptions options,
                                 Callback<SendResult> done) {
  return impl_->send(conversation_id, std::move(body), std::move(options), std::move(done));
}

void Client::mark_read(const std::string& conversation_id, Seq seq) {
  asio::post(impl_->strand, [s = impl_, conversation_id, seq] {
    if (s->stopped) return;
    if (s->conn && s->conn->open() && s->conn->send(proto::encode_read(conversation_id, seq))) return;
    auto it = s->pending_reads.find(conversation_id);
    if (it != s->pending_reads.end()) it->second = std::max(it->second, seq);
    else if (s->pending_reads.size() < kMaxPendingReads) s->pending_reads.emplace(conversation_id, seq);
  });
}

void Client::set_typing(const std::string& conversation_id, bool active) {
  asio::post(impl_->strand, [s = impl_, conversation_id, active] {
    if (!s->stopped && s->conn && s->conn->open()) s->conn->send(proto::encode_typing_frame(conversation_id, active), true);
  });
}

void Client::subscribe_presence(const std::vector<std::string>& users) {
  asio::post(impl_->strand, [s = impl_, users] {
    if (s->stopped) return;
    std::vector<std::string> fresh;
    for (const auto& u : users)
      if (s->presence_users.size() < kMaxPresenceUsers && s->presence_users.insert(u).second) fresh.push_back(u);
    if (fresh.size() > proto::Limits{}.max_presence_users) fresh.resize(proto::Limits{}.max_presence_users);
    if (!fresh.empty() && s->conn && s->conn->open()) s->conn->send(proto::encode_presence_subscribe(fresh), true);
  });
}

void Client::reconnect_now() {
  asio::post(impl_->strand, [s = impl_] {
    if (s->stopped || !s->started) return;
    s->reconnect_attempt = 0;
    if (s->conn) {
      s->conn->close();
    } else {
      s->reconnect_timer.cancel();
      s->connect();
    }
  });
}

const Api& Client::api() const { return impl_->api; }
const Credentials& Client::credentials() const { return impl_->opts.credentials; }
ConnectionState Client::state() const { return impl_->state; }

ClientStats Client::stats() const {
  std::lock_guard lock(impl_->stats_mu);
  return impl_->stats_;
}

size_t Client::outbox_size() const { return impl_->store->size(); }

bool Client::encrypts() const { return impl_->e2e != nullptr; }

void Client::open_page(HistoryPage page, Callback<HistoryPage> done) {
  asio::post(impl_->strand, [s = impl_, page = std::move(page), done = std::move(done)]() mutable {
    // Decrypted all, kept in the history, then one keyring save for the page (none when
    // everything came from the history): the order of `keep`.
    std::vector<Message> shown, released;
    std::vector<size_t> to_store;  // indexes into shown
    for (auto& m : page.messages) {
      auto opened = s->open(m);
      for (auto& r : opened.released) released.push_back(std::move(r));
      if (opened.m) {
        if (opened.store) to_store.push_back(shown.size());
        shown.push_back(std::move(*opened.m));
      } else if (!opened.hidden) {  // key traffic of a group is left out of the page
        m.body.clear();
        m.undecryptable = true;
        shown.push_back(std::move(m));
      }
    }
    for (size_t i : to_store) s->keep(shown[i]);
    for (const auto& r : released) s->keep(r);
    (void)s->commit_keys();  // a failure is logged; the changes stay for the next save
    for (const auto& r : released) s->hand_over(r);
    page.messages = std::move(shown);
    done(std::move(page));
  });
}

Result<std::vector<Message>> Client::local_history(const std::string& conversation_id, Seq after, size_t limit) const {
  if (!impl_->sqlite) return make_error(ErrorCode::kInvalidArgument, "no local history without a store_path");
  return impl_->sqlite->messages(conversation_id, after, limit);
}

Result<std::vector<std::string>> Client::identity_changes() const {
  if (!impl_->sqlite) return std::vector<std::string>();
  return impl_->sqlite->identity_changes();
}

Result<void> Client::clear_identity_change(const std::string& user) const {
  if (!impl_->sqlite) return {};
  return impl_->sqlite->clear_identity_change(user);
}

}  // namespace tern::client
