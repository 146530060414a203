#include "services/device_session.h"

#include <algorithm>
#include <limits>

#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "proto/frames.h"
#include "services/service_context.h"

namespace tern::services {
namespace {

CounterFamily& frames_in = MetricsRegistry::global().family("tern_frames_in_total", "type", "client frames by type");
CounterFamily& frames_out = MetricsRegistry::global().family("tern_frames_out_total", "type", "server frames by type");
CounterFamily& errors = MetricsRegistry::global().family("tern_errors_total", "code", "error frames by code");
Counter& replayed = MetricsRegistry::global().counter("tern_replayed_messages_total",
                                                      "messages written from the store (replay and gap fill)");
Histogram& send_to_delivered = MetricsRegistry::global().histogram(
    "tern_send_to_delivered_seconds", "from a send frame's arrival to its write to a live recipient",
    latency_buckets());
// The hot labels, looked up once (a family lookup takes a mutex and a map search).
Counter& out_message = frames_out.with("message");
Counter& out_sent = frames_out.with("sent");
Counter& out_event = frames_out.with("event");
Counter& out_receipt = frames_out.with("receipt");
Counter& out_error = frames_out.with("error");
Counter& in_rate_limited = frames_in.with("rate_limited");
Counter& in_invalid = frames_in.with("invalid");
Counter& dropped_frames = MetricsRegistry::global().counter(
    "tern_lossy_frames_dropped_total", "typing and presence frames not written because the connection's queue was above half");
Counter& overloaded_refusals = MetricsRegistry::global().counter(
    "tern_sends_refused_overloaded_total", "sends refused at admission (in-flight bound per connection or loop)");
Counter* const in_by_type[] = {&frames_in.with("send"), &frames_in.with("ack"), &frames_in.with("read"),
                               &frames_in.with("typing"), &frames_in.with("presence_subscribe")};

constexpr Seq kNoLimit = std::numeric_limits<Seq>::max();

}  // namespace

DeviceSession::DeviceSession(ServiceContext& ctx, std::shared_ptr<gateway::Connection> connection, DeviceRef device)
    : ctx_(ctx),
      conn_(std::move(connection)),
      device_(std::move(device)),
      loop_(ctx.loops.here()),
      bucket_(ctx.options.send_rate_per_sec, ctx.options.send_burst, mono_us()),
      frame_bucket_(ctx.options.frame_rate_per_sec, ctx.options.frame_burst, mono_us()) {}

void DeviceSession::start() {
  // Attach before reading the inbox: a message committed in between is both notified and
  // (maybe) read from the store; the position check drops the repeat.
  const size_t online = ctx_.bus.attach(device_, shared_from_this());
  ctx_.presence.device_attached(device_.user, online);
  auto inbox = ctx_.store.inbox(device_);
  if (!inbox) {
    spdlog::error("event=inbox_read_failed user={} device={} error=\"{}\"", device_.user, device_.device,
                  inbox.error().message);
    conn_->close(1011, "store unavailable");
    return;
  }
  // A device low on one-time prekeys hears it on every connect until it refills.
  if (ctx_.keys)
    if (auto low = ctx_.keys->low_frame(device_)) {
      out_event.inc();
      write(std::make_shared<const std::string>(std::move(*low)));
    }
  for (const auto& [conv, latest] : *inbox) {
    Position* pos = position(conv);
    if (pos && latest > pos->sent) behind_.insert(conv);
  }
  // Read-side conversations have no inbox entries: follow them, then compare head and cursor.
  auto convs = ctx_.store.user_conversations(device_.user);
  if (!convs) {
    spdlog::error("event=user_index_read_failed user={} device={} error=\"{}\"", device_.user, device_.device,
                  convs.error().message);
    conn_->close(1011, "store unavailable");
    return;
  }
  for (const auto& uc : *convs)
    if (uc.fanout_on_read && uc.left_seq == 0) follow(uc.conversation_id, true);
  pump();
}

void DeviceSession::follow(const std::string& conversation_id, bool on) {
  auto it = std::find(following_.begin(), following_.end(), conversation_id);
  if (!on) {
    if (it == following_.end()) return;
    ctx_.fanout.unsubscribe(loop_, conversation_id, this);
    following_.erase(it);
    return;
  }
  if (it == following_.end()) {
    ctx_.fanout.subscribe(loop_, conversation_id, shared_from_this());
    following_.push_back(conversation_id);
  }
  Position* pos = position(conversation_id);
  if (!pos) return;
  auto head = ctx_.store.head(conversation_id);
  if (head && *head > pos->sent) behind_.insert(conversation_id);
}

// After a membership change: follow the conversation live iff it fans out on read and the
// user is in it now.
void DeviceSession::recheck_following(const std::string& conversation_id) {
  if (auto it = positions_.find(conversation_id); it != positions_.end()) refresh_membership(conversation_id, it->second);
  auto row = ctx_.store.user_conversation(device_.user, conversation_id);
  const bool on = row && *row && (*row)->fanout_on_read && (*row)->left_seq == 0;
  follow(conversation_id, on);
  if (on && live_) pump();
}

DeviceSession::Position* DeviceSession::position(const std::string& conversation_id) {
  if (auto it = positions_.find(conversation_id); it != positions_.end()) return &it->second;
  auto conv = ctx_.directory.conversation(conversation_id);
  if (!conv) return store_failed("conversation", conv.error()), nullptr;
  if (!*conv) return nullptr;
  auto member = ctx_.directory.member(**conv, device_.user);
  if (!member) return store_failed("member", member.error()), nullptr;
  if (!*member) return nullptr;
  const store::Member* m = &**member;
  auto cursor = ctx_.store.cursor(device_, conversation_id);
  if (!cursor) return store_failed("cursor", cursor.error()), nullptr;
  Position pos;
  pos.floor = m->joined_seq - 1;
  pos.limit = m->active() ? kNoLimit : m->left_seq;
  // An ack still on its way to the store counts too (the device may reconnect faster).
  pos.sent = std::max({*cursor, pos.floor, ctx_.sequencer.pending_ack(device_, conversation_id)});
  return &positions_.emplace(conversation_id, pos).first->second;
}

// A read the session's position depends on failed: skipping the conversation would end the
// replay with `synced` while messages are missing, so the connection is closed instead
// (1011); the client reconnects and replays from its last ack once the store answers.
void DeviceSession::store_failed(std::string_view step, const Error& error) {
  if (store_failed_) return;
  store_failed_ = true;
  spdlog::error("event=session_read_failed step={} user={} device={} error=\"{}\"", step, device_.user,
                device_.device, error.message);
  conn_->close(1011, "store unavailable");
}

void DeviceSession::refresh_membership(const std::string& conversation_id, Position& pos) {
  auto conv = ctx_.directory.conversation(conversation_id);
  if (!conv || !*conv) return;
  auto member = ctx_.directory.member(**conv, device_.user);
  if (!member) return;
  if (!*member) {
    pos.limit = 0;
    return;
  }
  const store::Member* m = &**member;
  const Seq floor = m->joined_seq - 1;
  if (floor > pos.floor) {  // re-added after a removal: a new era starts
    pos.floor = floor;
    pos.sent = std::max(pos.sent, floor);
  }
  pos.limit = m->active() ? kNoLimit : m->left_seq;
}

bool DeviceSession::write(std::shared_ptr<const std::string> frame) {
  if (closed_) return false;
  return conn_->send(std::move(frame));
}

void DeviceSession::write_error(const Error& error, std::string_view ref) {
  errors.with(std::string(code_name(error.code))).inc();
  out_error.inc();
  write(std::make_shared<const std::string>(proto::encode_error(error, ref)));
}

// ---------------------------------------------------------------- delivery

void DeviceSession::on_loop(std::function<void()> fn) {
  if (loop_ == Loops::kNone) return conn_->post(std::move(fn));
  ctx_.loops.run(loop_, std::move(fn));
}

void DeviceSession::notify(std::shared_ptr<const bus::Notification> n) {
  // Already on this connection's loop (the publisher owns a conversation on the same loop):
  // deliver now, without a hop.
  if (loop_ != Loops::kNone && ctx_.loops.here() == loop_) return on_notification(n);
  on_loop([self = shared_from_this(), n = std::move(n)] { self->on_notification(n); });
}

void DeviceSession::replaced() {
  on_loop([self = shared_from_this()] {
    if (!self->closed_) self->conn_->close(1008, "replaced by a newer connection of this device");
  });
}

void DeviceSession::on_notification(const std::shared_ptr<const bus::Notification>& n) {
  if (closed_) return;
  if (n->kind == bus::Notification::Kind::kFrame) {
    // Typing and presence are lossy: under load (queue above half) they go first.
    if (n->droppable && conn_->queued_bytes() > conn_->queue_limit_bytes() / 2) {
      dropped_frames.inc();
      return;
    }
    out_event.inc();
    write(n->frame);
    return;
  }
  if (n->kind == bus::Notification::Kind::kMembership) return recheck_following(n->conversation_id);
  // A system message may have moved a group across the fan-out threshold.
  if (n->system) recheck_following(n->conversation_id);
  Position* pos = position(n->conversation_id);
  if (!pos || n->seq <= pos->sent) return;
  const bool next = n->seq == pos->sent + 1 && n->seq <= pos->limit;
  if (n->origin == device_) {  // our own message, sent to the whole conversation: step over it
    if (next) pos->sent = n->seq;
    return;
  }
  if (live_ && next && !behind_.count(n->conversation_id)) {
    std::shared_ptr<const std::string> frame = n->frame;
    if (n->per_device) {
      auto rendered = proto::render_message_for(*n->frame, device_);
      if (!rendered) return;
      frame = std::make_shared<const std::string>(std::move(*rendered));
    }
    pos->sent = n->seq;
    if (n->system) refresh_membership(n->conversation_id, *pos);
    out_message.inc();
    // 0: sequenced on another node (a monotonic clock does not cross processes): not measured.
    if (n->send_started_us > 0)
      send_to_delivered.observe(static_cast<double>(mono_us() - n->send_started_us) / 1e6);
    write(std::move(frame));
    return;
  }
  behind_.insert(n->conversation_id);
  if (live_) pump();
}

void DeviceSession::on_writable() { pump(); }

void DeviceSession::pump() {
  if (pumping_ || closed_) return;
  pumping_ = true;
  // Fill the write queue to 3/4 (leaving room for receipts and presence frames): above half,
  // so the gateway calls on_writable() when it drains back to half and the pump resumes.
  const size_t limit = conn_->queue_limit_bytes();
  const size_t high = std::max(limit * 3 / 4, limit / 2 + 1);
  while (!behind_.empty() && !closed_ && !store_failed_ && conn_->queued_bytes() < high) {
    const std::string conv = *behind_.begin();
    const Position* pos = position(conv);
    const Seq before = pos ? pos->sent : 0;
    if (pump_conversation(conv, high)) behind_.erase(conv);
    else if (pos && pos->sent == before) break;  // no room for the next frame: on_writable() resumes
  }
  if (behind_.empty() && !live_ && !closed_ && !store_failed_) finish_replay();
  if (live_) pump_receipts(high);
  pumping_ = false;
}

// Writes one page of a conversation from the store; true when the conversation caught up.
// Stops early (false) once the write queue holds `high` bytes.
bool DeviceSession::pump_conversation(const std::string& conversation_id, size_t high) {
  Position* pos = position(conversation_id);
  if (!pos) return true;
  refresh_membership(conversation_id, *pos);
  if (pos->sent >= pos->limit) return true;
  // The page stops where the write queue reaches `high` bytes: replay must not trip the
  // slow-consumer limit it exists to respect. Pages assume ~1 KiB frames: small messages
  // need few store seeks, and what a page of big ones reads beyond the room is little.
  const size_t room = high > conn_->queued_bytes() ? high - conn_->queued_bytes() : 0;
  const size_t page = std::clamp<size_t>(room / 1024, 1, std::max<size_t>(1, ctx_.options.replay_page));
  auto messages = ctx_.store.read_messages(conversation_id, pos->sent, page);
  if (!messages) {
    store_failed("replay", messages.error());
    return false;
  }
  const int64_t now = now_ms();
  for (const auto& m : *messages) {
    if (m.seq > pos->limit) return true;
    if (m.seq <= pos->sent) continue;
    if (conn_->queued_bytes() >= high) return false;
    auto meta = proto::stored_meta(m.frame);
    pos->sent = m.seq;
    if (!meta) continue;
    const bool own = meta->sender == device_.user && meta->sender_device == device_.device && !meta->system;
    if (own) continue;
    const bool expired = meta->expires_at && *meta->expires_at <= now;
    auto frame = expired ? proto::render_expired(m.frame) : proto::render_message_for(m.frame, device_);
    if (!frame) continue;
    if (conn_->queued_bytes() > 0 && conn_->queued_bytes() + frame->size() > conn_->queue_limit_bytes()) {
      pos->sent = m.seq - 1;  // no room for it yet: resumed by on_writable()
      return false;
    }
    replayed.inc();
    out_message.inc();
    if (!write(std::make_shared<const std::string>(std::move(*frame)))) return true;
  }
  return messages->size() < page || pos->sent >= pos->limit;
}

void DeviceSession::finish_replay() {
  live_ = true;
  frames_out.with("synced").inc();
  write(std::make_shared<const std::string>(proto::encode_synced()));
  send_receipt_state();
}

// Receipts are durable state: after a (re)connect the device gets the latest delivered/read
// marks of the other members of its conversations (at most receipt_sync_conversations of
// them), paced like the replay so that a large group cannot overflow the write queue.
void DeviceSession::send_receipt_state() {
  auto convs = ctx_.store.user_conversations(device_.user);
  if (!convs) return;
  for (const auto& uc : *convs) {
    if (uc.left_seq != 0) continue;
    if (receipt_backlog_.size() >= ctx_.options.receipt_sync_conversations) break;
    receipt_backlog_.push_back(uc.conversation_id);
  }
}

void DeviceSession::pump_receipts(size_t high) {
  while (receipt_next_ < receipt_backlog_.size() && !closed_ && conn_->queued_bytes() < high) {
    const std::string conv = std::move(receipt_backlog_[receipt_next_++]);
    if (receipt_next_ == receipt_backlog_.size()) {
      receipt_backlog_ = {};  // give the memory back: most connections are idle after this
      receipt_next_ = 0;
    }
    auto receipts = ctx_.store.receipts(conv);
    if (!receipts) continue;
    // Never more than the queue can take: the rest is the newest state anyway next time.
    for (const auto& r : *receipts) {
      if (r.user == device_.user) continue;
      for (auto [status, seq] : {std::pair<const char*, Seq>{"delivered", r.delivered}, {"read", r.read}}) {
        if (seq == 0 || conn_->queued_bytes() >= high) continue;
        out_receipt.inc();
        write(std::make_shared<const std::string>(proto::encode_receipt(conv, r.user, status, seq)));
      }
    }
  }
}

// ---------------------------------------------------------------- client frames

void DeviceSession::on_text(std::string_view text) {
  if (closed_) return;
  // A frame costs one token plus two per KiB: the work it causes (parsing first) grows with
  // its size, and the limit bounds that work.
  if (!frame_bucket_.take(mono_us(), 1.0 + 2.0 * static_cast<double>(text.size() / 1024))) {
    in_rate_limited.inc();
    // Not parsed (that is the work this limit bounds), but a refused send still names itself.
    write_error(make_error(ErrorCode::kRateLimited, "too many frames; slow down"), proto::peek_send_ref(text));
    return;
  }
  std::string ref;
  auto parsed = proto::parse_client_frame(text, ctx_.options.limits, &ref);
  if (!parsed) {
    in_invalid.inc();
    write_error(parsed.error(), ref);
    return;
  }
  in_by_type[parsed->index()]->inc();
  auto self = shared_from_this();
  std::visit(
      [&](auto& f) {
        using F = std::decay_t<decltype(f)>;
        if constexpr (std::is_same_v<F, proto::SendFrame>) {
          if (ctx_.draining.load()) return write_error(make_error(ErrorCode::kDraining, "server is shutting down"), f.client_msg_id);
          if (!bucket_.take(mono_us()))
            return write_error(make_error(ErrorCode::kRateLimited, "send rate exceeded; retry later"), f.client_msg_id);
          // Admission: work in flight is bounded per connection and per loop; beyond it the
          // send is refused at once (the client retries with the same client_msg_id).
          size_t& loop_in_flight = ctx_.admission.in_flight(loop_);
          if (in_flight_ >= ctx_.options.max_inflight_sends_per_connection ||
              loop_in_flight >= ctx_.options.max_inflight_sends_per_loop) {
            overloaded_refusals.inc();
            return write_error(make_error(ErrorCode::kOverloaded, "too many sends in flight; retry later"),
                               f.client_msg_id);
          }
          ++in_flight_;
          ++loop_in_flight;
          std::string cmid = f.client_msg_id;
          ctx_.sequencer.send(device_, std::move(f), mono_us(), [self, cmid = std::move(cmid)](Result<SentInfo> r) mutable {
            self->on_loop([self, cmid = std::move(cmid), r = std::move(r)] { self->on_sent(cmid, r); });
          });
        } else if constexpr (std::is_same_v<F, proto::AckFrame> || std::is_same_v<F, proto::ReadFrame>) {
          const bool read = std::is_same_v<F, proto::ReadFrame>;
          const bool following =
              std::find(following_.begin(), following_.end(), f.conversation_id) != following_.end();
          ctx_.sequencer.acknowledge(
              device_, f.conversation_id, f.seq, read,
              [self](Result<void> r) {
                if (!r) self->on_loop([self, e = r.error()] { self->write_error(e); });
              },
              following);
        } else if constexpr (std::is_same_v<F, proto::TypingFrame>) {
          if (auto r = ctx_.presence.typing(device_, f.conversation_id, f.active); !r) write_error(r.error());
        } else if constexpr (std::is_same_v<F, proto::PresenceSubscribeFrame>) {
          // Its work grows with the users named: it costs one more frame token per 8 users,
          // so that a loop of large subscriptions is slowed at its own connection.
          if (!frame_bucket_.take(mono_us(), static_cast<double>(f.users.size()) / 8.0)) {
            in_rate_limited.inc();
            return write_error(make_error(ErrorCode::kRateLimited, "too many presence subscriptions; slow down"));
          }
          if (auto r = ctx_.presence.subscribe(conn_->id(), device_.user, self, f.users); !r) write_error(r.error());
        }
      },
      *parsed);
}

void DeviceSession::on_sent(const std::string& cmid, const Result<SentInfo>& r) {
  --in_flight_;
  --ctx_.admission.in_flight(loop_);
  if (!r) return write_error(r.error(), cmid);
  // Our own message takes a seq too: step over it so the next one is "next".
  if (Position* pos = position(r->conversation_id); pos && pos->sent + 1 == r->seq) pos->sent = r->seq;
  out_sent.inc();
  write(std::make_shared<const std::string>(proto::encode_sent(r->client_msg_id, r->conversation_id, r->seq, r->ts)));
}

void DeviceSession::on_close() {
  if (closed_) return;
  closed_ = true;
  for (const auto& conv : following_) ctx_.fanout.unsubscribe(loop_, conv, this);
  following_ = {};
  ctx_.presence.unsubscribe_all(conn_->id());
  const size_t online = ctx_.bus.detach(device_, this);
  ctx_.presence.device_detached(device_.user, online);
}

}  // namespace tern::services
