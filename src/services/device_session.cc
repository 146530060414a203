#include "services/device_session.h"

#include <algorithm>
#include <limits>

#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "proto/frames.h"
#include "services/conversation_ids.h"
#include "services/read_sizing.h"
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

}  // namespace

DeviceSession::DeviceSession(ServiceContext& ctx, std::shared_ptr<gateway::Connection> connection, DeviceRef device)
    : ctx_(ctx),
      conn_(std::move(connection)),
      device_(std::move(device)),
      loop_(ctx.loops.here()),
      bucket_(ctx.options.send_rate_per_sec, ctx.options.send_burst, mono_us()),
      frame_bucket_(ctx.options.frame_rate_per_sec, ctx.options.frame_burst, mono_us()) {}

template <typename T>
void DeviceSession::read(std::function<Result<T>()> fn, void (DeviceSession::*apply)(Result<T>&)) {
  reading_ = true;
  auto done = [self = shared_from_this(), apply](Result<T> r) {
    self->reading_ = false;
    if (self->closed_) return;
    ((*self).*apply)(r);
    // Inline (embedded store) this runs inside the pump, which goes on by itself.
    if (!self->pumping_ && !self->stalled_) self->pump();
  };
  if (loop_ == Loops::kNone) return done(fn());
  ctx_.reads.run<T>(loop_, std::move(fn), std::move(done));
}

void DeviceSession::start() {
  // Attach before reading the inbox: a message committed in between is both notified and
  // (maybe) read from the store; the position check drops the repeat.
  // The count of the user's devices on every node may take a Redis round trip: it reaches
  // presence later, from the bus's thread (Bus::attach_async), in call order.
  ctx_.bus.attach_async(device_, shared_from_this(),
                        [presence = &ctx_.presence, user = device_.user](size_t online, uint64_t order, bool added) {
                          presence->device_attached(user, online, order, added);
                        });
  read<session_reads::Opening>(
      [&ctx = ctx_, device = device_]() -> Result<session_reads::Opening> {
        return session_reads::read_opening(ctx, device);
      },
      &DeviceSession::on_opened);
}

void DeviceSession::on_opened(Result<session_reads::Opening>& r) {
  if (!r) return store_failed("queue", r.error());  // the reader threads' queue is full
  session_reads::Opening& o = *r;
  const std::string_view failed = o.failure ? o.failure->step : std::string_view();
  if (failed == "inbox") {
    spdlog::error("event=inbox_read_failed user={} device={} error=\"{}\"", device_.user, device_.device,
                  o.failure->error.message);
    conn_->close(1011, "store unavailable");
    return;
  }
  if (o.low_prekeys) {
    out_event.inc();
    write(std::make_shared<const std::string>(std::move(*o.low_prekeys)));
  }
  for (size_t i = 0; i < o.rows.size(); ++i) {
    const auto& rows = o.rows[i];
    if (rows.membership.kind != session_reads::Membership::Kind::kMember || rows.failed()) continue;
    Position* pos = make_position(rows.conversation_id, rows.membership.member, rows.cursor);
    if (o.inbox[i].second > pos->sent) mark_behind(rows.conversation_id);
  }
  if (failed == "user_index") {
    spdlog::error("event=user_index_read_failed user={} device={} error=\"{}\"", device_.user, device_.device,
                  o.failure->error.message);
    conn_->close(1011, "store unavailable");
    return;
  }
  if (o.failure) return store_failed(o.failure->step, o.failure->error);
  for (const auto& conv : o.follow) follow(conv, true);
  opened_ = true;
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
  // Followed first, read after: the pump's page read sees what came before the subscription.
  mark_behind(conversation_id);
}

void DeviceSession::mark_behind(const std::string& conversation_id) {
  behind_.insert(conversation_id);
  if (reading_ && conversation_id == reading_page_) reread_ = true;
}

// After a membership change: the position's membership is reread, and the conversation is
// followed live iff it fans out on read and the user is in it now (the pump does the read).
void DeviceSession::request_recheck(const std::string& conversation_id) {
  if (std::find(rechecks_.begin(), rechecks_.end(), conversation_id) == rechecks_.end())
    rechecks_.push_back(conversation_id);
}

void DeviceSession::read_recheck() {
  std::string conv = std::move(rechecks_.front());
  rechecks_.erase(rechecks_.begin());
  read<session_reads::Recheck>(
      [&ctx = ctx_, user = device_.user, conv]() -> Result<session_reads::Recheck> {
        return session_reads::read_recheck(ctx, user, conv);
      },
      &DeviceSession::on_recheck);
}

void DeviceSession::on_recheck(Result<session_reads::Recheck>& result) {
  if (!result) return store_failed("queue", result.error());  // the reader threads' queue is full
  session_reads::Recheck& r = *result;
  if (Position* pos = position(r.conversation_id)) refresh_membership(*pos, r.membership);
  follow(r.conversation_id, r.follow);
}

DeviceSession::Position* DeviceSession::position(const std::string& conversation_id) {
  auto it = positions_.find(conversation_id);
  return it == positions_.end() ? nullptr : &it->second;
}

DeviceSession::Position* DeviceSession::make_position(const std::string& conversation_id, const store::Member& m,
                                                      Seq cursor) {
  // An ack still on its way to the store counts too (the device may reconnect faster).
  const Position pos = session_reads::new_window(m, cursor, ctx_.sequencer.pending_ack(device_, conversation_id));
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

// A membership row that could not be read (or a conversation gone) leaves the position as is.
void DeviceSession::refresh_membership(Position& pos, const session_reads::Membership& m) {
  using Kind = session_reads::Membership::Kind;
  if (m.kind == Kind::kNone) pos.limit = 0;
  if (m.kind == Kind::kMember) pos = session_reads::apply_membership(pos, m.member);
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

void DeviceSession::missed() {
  on_loop([self = shared_from_this()] {
    if (self->closed_) return;
    self->missed_ = true;
    self->pump();
  });
}

void DeviceSession::read_missed() {
  missed_ = false;
  read<std::vector<std::pair<std::string, Seq>>>(
      [&ctx = ctx_, device = device_]() -> Result<std::vector<std::pair<std::string, Seq>>> {
        return ctx.store.inbox(device);
      },
      &DeviceSession::on_missed);
}

// Each inbox entry is handled as a notification of its latest seq without a frame: a
// position at or past it drops it, anything else has the conversation read from the store
// (deliver() never writes a frameless one); a conversation without a position is placed first.
void DeviceSession::on_missed(Result<std::vector<std::pair<std::string, Seq>>>& inbox) {
  if (!inbox) return store_failed("inbox", inbox.error());
  for (const auto& [conv, latest] : *inbox) {
    if (Position* pos = position(conv)) {
      if (latest > pos->sent) mark_behind(conv);
      continue;
    }
    if (unplaced_.size() >= kMaxUnplaced) {
      mark_behind(conv);
      continue;
    }
    auto n = std::make_shared<bus::Notification>();
    n->kind = bus::Notification::Kind::kMessage;
    n->conversation_id = conv;
    n->seq = latest;
    unplaced_.push_back(std::move(n));
  }
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
  const std::string& conv = n->conversation_id;
  if (n->kind == bus::Notification::Kind::kMembership) {
    // Nothing of the conversation goes out live until the membership was reread (a channel
    // left: its posts stop at the removal).
    request_recheck(conv);
    if (position(conv)) mark_behind(conv);
    return pump();
  }
  Position* pos = position(conv);
  if (!pos) {
    // No position yet: it is read first (the pump), then the notification is handled as if
    // it came then. Bounded: past kMaxUnplaced the conversation is only marked behind (its
    // log is read from the position instead).
    if (unplaced_.size() < kMaxUnplaced)
      unplaced_.push_back(n);
    else
      mark_behind(conv);
    return pump();
  }
  // A system message may change the membership or move a group across the fan-out
  // threshold: reread (the pump), and nothing more of the conversation goes out live until
  // then.
  if (n->system) request_recheck(conv);
  deliver(*n, *pos);
  if (n->system) {
    mark_behind(conv);
    pump();
  }
}

void DeviceSession::deliver(const bus::Notification& n, Position& pos) {
  if (n.seq <= pos.sent) return;
  const bool next = n.seq == pos.sent + 1 && n.seq <= pos.limit;
  if (n.origin == device_) {  // our own message, sent to the whole conversation: step over it
    if (next) pos.sent = n.seq;
    return;
  }
  if (live_ && next && n.frame && !behind_.count(n.conversation_id)) {
    std::shared_ptr<const std::string> frame = n.frame;
    if (n.per_device) {
      auto rendered = proto::render_message_for(*n.frame, device_);
      if (!rendered) return;
      frame = std::make_shared<const std::string>(std::move(*rendered));
    }
    pos.sent = n.seq;
    out_message.inc();
    // 0: sequenced on another node (a monotonic clock does not cross processes): not measured.
    if (n.send_started_us > 0)
      send_to_delivered.observe(static_cast<double>(mono_us() - n.send_started_us) / 1e6);
    write(std::move(frame));
    return;
  }
  mark_behind(n.conversation_id);
  if (live_) pump();
}

void DeviceSession::on_writable() { pump(); }

// The one place that starts store reads, one at a time, in this order: positions of held
// notifications, the inbox again after missed(), membership rechecks, replay pages (while the write queue is below `high`),
// `synced`, receipts. Inline reads complete within the loop below; offloaded ones resume it
// from their completion (read()).
void DeviceSession::pump() {
  if (pumping_ || closed_ || reading_ || !opened_) return;
  pumping_ = true;
  stalled_ = false;
  const size_t high = high_water();
  while (!reading_ && !closed_ && !store_failed_) {
    if (!unplaced_.empty()) {
      place();
    } else if (missed_) {
      read_missed();
    } else if (!rechecks_.empty()) {
      read_recheck();
    } else if (!behind_.empty()) {
      if (stalled_ || conn_->queued_bytes() >= high) break;  // on_writable() resumes
      read_page(*behind_.begin(), high);
    } else if (!live_) {
      finish_replay();
    } else if (list_receipts_) {
      read_receipt_list();
    } else if (receipt_next_ < receipt_backlog_.size() && conn_->queued_bytes() < high) {
      read_receipts();
    } else {
      break;
    }
  }
  pumping_ = false;
}

// Fill the write queue to 3/4 (leaving room for receipts and presence frames): above half,
// so the gateway calls on_writable() when it drains back to half and the pump resumes.
size_t DeviceSession::high_water() const {
  const size_t limit = conn_->queue_limit_bytes();
  return std::max(limit * 3 / 4, limit / 2 + 1);
}

// The held notifications of the first conversation in unplaced_: its position is read (or
// was made meanwhile), then they are handled in the order they came.
void DeviceSession::place() {
  const std::string conv = unplaced_.front()->conversation_id;
  if (position(conv)) return replay_unplaced(conv);
  read<session_reads::PositionRows>(
      [&ctx = ctx_, device = device_, conv]() -> Result<session_reads::PositionRows> {
        return session_reads::read_rows(ctx, device, conv);
      },
      &DeviceSession::on_placed);
}

void DeviceSession::on_placed(Result<session_reads::PositionRows>& r) {
  if (!r) return store_failed("queue", r.error());  // the reader threads' queue is full
  if (const auto& f = r->failed()) return store_failed(f->step, f->error);
  if (!position(r->conversation_id) && r->membership.kind == session_reads::Membership::Kind::kMember)
    make_position(r->conversation_id, r->membership.member, r->cursor);
  replay_unplaced(r->conversation_id);
}

void DeviceSession::replay_unplaced(const std::string& conversation_id) {
  std::vector<std::shared_ptr<const bus::Notification>> mine;
  auto keep = unplaced_.begin();
  for (auto& n : unplaced_) {
    if (n->conversation_id == conversation_id) mine.push_back(std::move(n));
    else *keep++ = std::move(n);
  }
  unplaced_.erase(keep, unplaced_.end());
  if (unplaced_.empty()) unplaced_ = {};
  // Not a member (no position): dropped, as they always were.
  if (!position(conversation_id)) return;
  for (const auto& n : mine) on_notification(n);
}

void DeviceSession::read_page(const std::string& conversation_id, size_t high) {
  const Position* pos = position(conversation_id);
  // The page stops where the write queue reaches `high` bytes: replay must not trip the
  // slow-consumer limit it exists to respect. A page asks for what fits the room at the size
  // of the frames last read (at least 1 KiB each): small messages need few store seeks, and a
  // page of big ones does not read what has no room. Until a page was read the size is not
  // known: the first asks for at most kFirstPage, so that a backlog of 60 KiB messages reads
  // ~2 MB, not a full page of ~15 MB (read, then mostly dropped) per connecting device.
  const size_t room = high > conn_->queued_bytes() ? high - conn_->queued_bytes() : 0;
  const size_t page = messages_for(room, frame_bytes_, kFirstPage, ctx_.options.replay_page);
  reading_page_ = conversation_id;
  reread_ = false;
  page_size_ = page;
  std::optional<Position> known;
  if (pos) known = *pos;
  read<session_reads::Page>(
      [&ctx = ctx_, device = device_, conv = conversation_id, known, page]() -> Result<session_reads::Page> {
        return session_reads::read_page(ctx, device, conv, known, page);
      },
      &DeviceSession::on_page);
}

void DeviceSession::on_page(Result<session_reads::Page>& r) {
  const std::string conv = std::move(reading_page_);
  reading_page_.clear();
  // Marked behind during the read: something may have come after it; read again.
  const bool again = reread_;
  reread_ = false;
  if (!r) return store_failed("queue", r.error());  // the reader threads' queue is full
  session_reads::Page& p = *r;
  if (!p.messages.empty()) frame_bytes_ = mean_frame_bytes(p.messages);
  Position* pos = position(conv);
  if (!pos) {
    if (p.failure) return store_failed(p.failure->step, p.failure->error);
    if (p.membership.kind != session_reads::Membership::Kind::kMember) {
      if (!again) behind_.erase(conv);
      return;
    }
    pos = make_position(conv, p.membership.member, p.cursor);
  }
  refresh_membership(*pos, p.membership);
  if (p.failure) return store_failed(p.failure->step, p.failure->error);
  const PageEnd end = pos->sent >= pos->limit || !p.read ? PageEnd::kCaughtUp : write_page(*pos, p.messages, page_size_);
  // kMore: the next page follows, read from the position. It is decided by what the page
  // held, not by whether the position moved: with reader threads the position may have
  // moved past the whole page during its read (our own messages stepped over).
  if (end == PageEnd::kCaughtUp && !again) behind_.erase(conv);
  if (end == PageEnd::kNoRoom) stalled_ = true;  // the queue is not empty: on_writable() resumes
}

// Writes a page read from the store. Stops early (kNoRoom) once the write queue holds `high`
// bytes or the next frame does not fit.
DeviceSession::PageEnd DeviceSession::write_page(Position& pos, const std::vector<store::StoredMessage>& messages,
                                                 size_t page) {
  const size_t high = high_water();
  const int64_t now = ctx_.bus.clock_ms();  // expiries are on the shared clock
  for (const auto& m : messages) {
    if (m.seq > pos.limit) return PageEnd::kCaughtUp;
    if (m.seq <= pos.sent) continue;
    if (conn_->queued_bytes() >= high) return PageEnd::kNoRoom;
    auto meta = proto::stored_meta(m.frame);
    pos.sent = m.seq;
    if (!meta) continue;
    const bool own = meta->sender == device_.user && meta->sender_device == device_.device && !meta->system;
    if (own) continue;
    const bool expired = meta->expires_at && *meta->expires_at <= now;
    auto frame = expired ? proto::render_expired(m.frame) : proto::render_message_for(m.frame, device_);
    if (!frame) continue;
    if (conn_->queued_bytes() > 0 && conn_->queued_bytes() + frame->size() > conn_->queue_limit_bytes()) {
      pos.sent = m.seq - 1;  // no room for it yet: resumed by on_writable()
      return PageEnd::kNoRoom;
    }
    replayed.inc();
    out_message.inc();
    if (!write(std::make_shared<const std::string>(std::move(*frame)))) return PageEnd::kCaughtUp;  // closed
  }
  return messages.size() < page || pos.sent >= pos.limit ? PageEnd::kCaughtUp : PageEnd::kMore;
}

void DeviceSession::finish_replay() {
  live_ = true;
  frames_out.with("synced").inc();
  write(std::make_shared<const std::string>(proto::encode_synced()));
  list_receipts_ = true;
}

// Receipts are durable state: after a (re)connect the device gets the latest delivered/read
// marks of the other members of its conversations (at most receipt_sync_conversations of
// them), paced like the replay so that a large group cannot overflow the write queue.
void DeviceSession::read_receipt_list() {
  list_receipts_ = false;
  read<std::vector<store::UserConversation>>(
      [&store = ctx_.store, user = device_.user]() { return store.user_conversations(user); },
      &DeviceSession::on_receipt_list);
}

void DeviceSession::on_receipt_list(Result<std::vector<store::UserConversation>>& convs) {
  if (!convs) return;
  for (auto& uc : *convs) {
    if (uc.left_seq != 0) continue;
    if (receipt_backlog_.size() >= ctx_.options.receipt_sync_conversations) break;
    receipt_backlog_.push_back(std::move(uc.conversation_id));
  }
}

void DeviceSession::read_receipts() {
  const size_t n = std::min(kReceiptBatch, receipt_backlog_.size() - receipt_next_);
  std::vector<std::string> convs(receipt_backlog_.begin() + static_cast<std::ptrdiff_t>(receipt_next_),
                                 receipt_backlog_.begin() + static_cast<std::ptrdiff_t>(receipt_next_ + n));
  receipt_next_ += n;
  read<std::vector<ConversationReceipts>>(
      [&store = ctx_.store, convs = std::move(convs)]() -> Result<std::vector<ConversationReceipts>> {
        auto receipts = store.receipts_of(convs);
        if (!receipts) return receipts.error();
        std::vector<ConversationReceipts> out;
        out.reserve(convs.size());
        for (size_t i = 0; i < convs.size(); ++i) out.push_back(ConversationReceipts{convs[i], std::move((*receipts)[i])});
        return out;
      },
      &DeviceSession::on_receipts);
}

void DeviceSession::on_receipts(Result<std::vector<ConversationReceipts>>& r) {
  if (r) {
    const size_t high = high_water();
    const size_t first = receipt_next_ - r->size();  // the batch's place in the backlog
    for (size_t k = 0; k < r->size(); ++k) {
      // The queue is full before this conversation: it and the rest of the batch are read
      // again once it drains (the pump's condition), as if this read had stopped here.
      if (conn_->queued_bytes() >= high) {
        receipt_next_ = first + k;
        break;
      }
      const ConversationReceipts& c = (*r)[k];
      // Never more than the queue can take: the rest is the newest state anyway next time.
      for (const auto& receipt : c.receipts) {
        if (receipt.user == device_.user) continue;
        for (auto [status, seq] :
             {std::pair<const char*, Seq>{"delivered", receipt.delivered}, {"read", receipt.read}}) {
          if (seq == 0 || conn_->queued_bytes() >= high) continue;
          out_receipt.inc();
          write(std::make_shared<const std::string>(proto::encode_receipt(c.conversation_id, receipt.user, status, seq)));
        }
      }
    }
  }
  if (receipt_next_ >= receipt_backlog_.size()) {
    receipt_backlog_ = {};  // give the memory back: most connections are idle after this
    receipt_next_ = 0;
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
          ack(PendingAck{f.conversation_id, f.seq, std::is_same_v<F, proto::ReadFrame>});
        } else if constexpr (std::is_same_v<F, proto::TypingFrame>) {
          if (auto r = ctx_.presence.typing(device_, f.conversation_id, f.active, self); !r) write_error(r.error());
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

void DeviceSession::ack(PendingAck a) {
  if (ack_checking_) {
    if (acks_.size() >= kMaxWaitingAcks)
      return write_error(make_error(ErrorCode::kOverloaded, "too many acks waiting; retry later"));
    acks_.push_back(std::move(a));
    return;
  }
  const bool following = std::find(following_.begin(), following_.end(), a.conversation_id) != following_.end();
  if (!following && loop_ != Loops::kNone && ctx_.reads.offloaded()) {
    ConversationPtr c = ctx_.directory.cached_conversation(a.conversation_id);
    if (!c || c->type == store::ConvType::kChannel) {
      ack_checking_ = true;
      ctx_.reads.run<AckCheck>(
          loop_,
          [&ctx = ctx_, user = device_.user, conv = a.conversation_id]() -> Result<AckCheck> {
            AckCheck out;
            out.membership = session_reads::read_membership(ctx, user, conv);
            ConversationPtr snap = ctx.directory.cached_conversation(conv);
            out.channel = snap && snap->type == store::ConvType::kChannel;
            return out;
          },
          [self = shared_from_this(), a](Result<AckCheck> r) {
            self->ack_checking_ = false;
            if (self->closed_) return;
            self->on_ack_checked(a, r);
            while (!self->ack_checking_ && !self->acks_.empty() && !self->closed_) {
              PendingAck next = std::move(self->acks_.front());
              self->acks_.erase(self->acks_.begin());
              self->ack(std::move(next));
            }
            if (self->acks_.empty()) self->acks_ = {};
          });
      return;
    }
  }
  submit_ack(std::move(a), following);
}

// The errors are the sequencer's (Receipts::acknowledge) for the same cases.
void DeviceSession::on_ack_checked(const PendingAck& a, Result<AckCheck>& r) {
  if (!r) return write_error(r.error());  // the reader threads' queue is full
  const session_reads::Membership& m = r->membership;
  if (m.failure) return write_error(m.failure->error);
  using Kind = session_reads::Membership::Kind;
  if (m.kind == Kind::kUnknown) return write_error(conversation_access_error());
  if (m.kind == Kind::kNone) return write_error(make_error(ErrorCode::kForbidden, "not a member of this conversation"));
  // An active channel subscriber is all a channel ack needs (as for a follower); a former
  // subscriber's row goes with the ack (its view ends at left_seq), not read again there.
  // A group's membership is checked by the sequencer on its snapshot (warmed off the loop).
  if (r->channel && !m.member.active()) return submit_ack(PendingAck(a), false, m.member);
  submit_ack(PendingAck(a), r->channel && m.member.active());
}

void DeviceSession::submit_ack(PendingAck a, bool following, std::optional<store::Member> channel_row) {
  auto self = shared_from_this();
  ctx_.sequencer.acknowledge(
      device_, std::move(a.conversation_id), a.seq, a.read,
      [self](Result<void> r) {
        if (!r) self->on_loop([self, e = r.error()] { self->write_error(e); });
      },
      following, std::move(channel_row));
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
  ctx_.bus.detach_async(device_, this, [presence = &ctx_.presence, user = device_.user](size_t online, uint64_t order, bool) {
    presence->device_detached(user, online, order);
  });
}

}  // namespace tern::services
