#include "client/receiver.h"

#include <cassert>

#include "client/errors.h"

namespace tern::client {

namespace {
constexpr size_t kMaxEarlyOwn = 1024;
}

Receiver::Receiver(ReceiverOptions options, ReceiverHooks hooks)
    : opts_(std::move(options)), hooks_(std::move(hooks)) {
  assert(hooks_.deliver && hooks_.backfill);
  if (opts_.backfill_page == 0) opts_.backfill_page = 1;
}

Receiver::~Receiver() = default;

Receiver::Conv& Receiver::conv(const std::string& id) { return convs_[id]; }

bool Receiver::is_own(const Message& m) const {
  return !m.system_json && m.sender == opts_.self_user && m.sender_device == opts_.self_device;
}

void Receiver::schedule(int64_t delay_ms, std::function<void(Receiver&)> fn) {
  std::weak_ptr<int> alive = alive_;
  auto run = [this, alive, fn = std::move(fn)] {
    if (alive.lock()) fn(*this);
  };
  if (hooks_.schedule) hooks_.schedule(delay_ms, std::move(run));
  else run();  // no timer facility: act at once
}

void Receiver::mark_ack(const std::string& id) {
  const bool was_empty = ack_due_.empty();
  ack_due_.insert(id);
  if (was_empty && hooks_.ack_pending) hooks_.ack_pending();
}

void Receiver::set_cursor(const std::string& id, Seq seq) {
  Conv& c = conv(id);
  if (c.known && c.last >= seq) return;
  c.known = true;
  c.last = seq;
  while (!c.buffer.empty() && c.buffer.begin()->first <= c.last) c.buffer.erase(c.buffer.begin());
  drain(id, c);
}

void Receiver::insert(const std::string& id, Conv& c, Message m, bool force) {
  (void)id;
  const Seq seq = m.seq;
  if (!force && seq != c.last + 1 && c.buffer.size() >= opts_.max_buffered) {
    ++stats_.overflow_dropped;
    return;
  }
  if (is_own(m)) c.buffer.emplace(seq, std::nullopt);
  else c.buffer.emplace(seq, std::move(m));
}

void Receiver::on_message(Message m) {
  if (m.seq == 0) return;  // not a valid seq; nothing to order it by
  const std::string id = m.conversation_id;
  Conv& c = conv(id);
  if (!c.known) {
    c.known = true;
    c.last = m.seq - 1;
    for (Seq s : c.early_own)
      if (s > c.last) c.buffer.emplace(s, std::nullopt);
    c.early_own.clear();
  }
  c.seen_max = std::max(c.seen_max, m.seq);
  if (m.seq <= c.last || c.buffer.contains(m.seq)) {
    ++stats_.duplicates;
    mark_ack(id);  // the server may not have our ack yet (it replayed): tell it again
    return;
  }
  insert(id, c, std::move(m), false);
  drain(id, c);
}

void Receiver::on_own_sent(const std::string& id, Seq seq) {
  if (seq == 0) return;
  Conv& c = conv(id);
  if (!c.known) {
    c.early_own.insert(seq);
    if (c.early_own.size() > kMaxEarlyOwn) c.early_own.erase(c.early_own.begin());
    return;
  }
  if (seq <= c.last || c.buffer.contains(seq)) return;
  c.seen_max = std::max(c.seen_max, seq);
  c.buffer.emplace(seq, std::nullopt);
  drain(id, c);
}

void Receiver::drain(const std::string& id, Conv& c, bool start_gap) {
  bool moved = false;
  while (!c.buffer.empty() && c.buffer.begin()->first == c.last + 1) {
    auto node = c.buffer.extract(c.buffer.begin());
    c.last = node.key();
    moved = true;
    if (node.mapped()) {
      ++stats_.delivered;
      hooks_.deliver(*node.mapped());
    } else {
      ++stats_.own_filled;
    }
  }
  if (moved) mark_ack(id);
  if (!has_hole(c)) {
    if (c.gap != GapState::kInFlight) c.gap = GapState::kIdle;
    c.failures = 0;
    return;
  }
  // A hole below the first buffered message.
  if (!start_gap || c.gap != GapState::kIdle) return;  // the caller or a timer handles it
  if (opts_.gap_grace_ms > 0 && hooks_.schedule) {
    c.gap = GapState::kGrace;
    schedule(opts_.gap_grace_ms, [id](Receiver& r) {
      Conv& cc = r.conv(id);
      if (cc.gap != GapState::kGrace) return;
      cc.gap = GapState::kIdle;
      if (has_hole(cc)) r.request_backfill(id);
    });
  } else {
    request_backfill(id);
  }
}

void Receiver::accept_gap(const std::string& id, Conv& c, Seq up_to) {
  if (up_to <= c.last) return;
  ++stats_.gaps_accepted;
  c.last = up_to;
  c.seen_max = std::max(c.seen_max, c.last);
  while (!c.buffer.empty() && c.buffer.begin()->first <= c.last) c.buffer.erase(c.buffer.begin());
  mark_ack(id);
}

void Receiver::request_backfill(const std::string& id) {
  Conv& c = conv(id);
  c.gap = GapState::kInFlight;
  ++stats_.backfills;
  const Seq after = c.last;
  std::weak_ptr<int> alive = alive_;
  hooks_.backfill(id, after, opts_.backfill_page, [this, alive, id, after](Result<HistoryPage> page) {
    if (alive.lock()) on_backfill(id, after, std::move(page));
  });
}

void Receiver::on_backfill(const std::string& id, Seq after, Result<HistoryPage> r) {
  Conv& c = conv(id);
  c.gap = GapState::kIdle;
  if (!r) {
    ++stats_.backfill_errors;
    if (!has_hole(c)) return;
    if (!retryable(r.error().code)) {
      // Not a member any more (or the conversation is gone): nothing more will come.
      accept_gap(id, c, hole_top(c));
      drain(id, c);
      return;
    }
    if (!backoff_allows(opts_.backfill_retry, c.failures)) {
      c.gap = GapState::kStalled;  // until retry_gaps() (the next reconnect)
      return;
    }
    const uint64_t rnd = hooks_.random ? hooks_.random() : (rng_state_ = rng_state_ * 6364136223846793005ULL + 1);
    const int64_t delay = backoff_delay_ms(opts_.backfill_retry, c.failures++, rnd);
    c.gap = GapState::kRetryWait;
    schedule(delay, [id](Receiver& rr) {
      Conv& cc = rr.conv(id);
      if (cc.gap != GapState::kRetryWait) return;
      cc.gap = GapState::kIdle;
      if (has_hole(cc)) rr.request_backfill(id);
    });
    return;
  }
  c.failures = 0;
  HistoryPage& page = r.value();
  if (!has_hole(c)) {
    // The hole filled by itself meanwhile; still take what is new (it is in order).
    for (auto& m : page.messages)
      if (m.conversation_id.empty() || m.conversation_id == id) {
        m.conversation_id = id;
        on_message(std::move(m));
      }
    return;
  }
  const Seq top = hole_top(c);
  Seq first = 0;
  for (const auto& m : page.messages)
    if (m.seq > after && (first == 0 || m.seq < first)) first = m.seq;
  if (first == 0) {
    accept_gap(id, c, top);  // nothing after `after` that the server will give us
    drain(id, c);
    return;
  }
  if (first > c.last + 1) accept_gap(id, c, std::min(first - 1, top));  // before our join
  for (auto& m : page.messages) {
    if (m.seq <= c.last || c.buffer.contains(m.seq)) continue;
    m.conversation_id = id;
    c.seen_max = std::max(c.seen_max, m.seq);
    insert(id, c, std::move(m), true);
  }
  drain(id, c, false);
  if (!has_hole(c)) return;
  if (page.messages.size() >= opts_.backfill_page) {
    request_backfill(id);  // a full page: more may follow
  } else {
    accept_gap(id, c, hole_top(c));  // the server has nothing more to give
    drain(id, c);
  }
}

void Receiver::retry_gaps() {
  for (auto& [id, c] : convs_) {
    if (!has_hole(c)) continue;
    if (c.gap == GapState::kRetryWait || c.gap == GapState::kStalled) {
      c.failures = 0;
      c.gap = GapState::kIdle;
      request_backfill(id);
    }
  }
}

std::vector<std::pair<std::string, Seq>> Receiver::take_acks() {
  std::vector<std::pair<std::string, Seq>> out;
  for (const auto& id : ack_due_) {
    auto it = convs_.find(id);
    if (it != convs_.end() && it->second.known && it->second.last > 0) out.emplace_back(id, it->second.last);
  }
  ack_due_.clear();
  return out;
}

std::optional<Seq> Receiver::last_handed(const std::string& id) const {
  auto it = convs_.find(id);
  if (it == convs_.end() || !it->second.known) return std::nullopt;
  return it->second.last;
}

size_t Receiver::buffered(const std::string& id) const {
  auto it = convs_.find(id);
  return it == convs_.end() ? 0 : it->second.buffer.size();
}

}  // namespace tern::client
