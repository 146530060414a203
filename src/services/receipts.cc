#include "services/receipts.h"

#include <set>

#include <boost/asio/steady_timer.hpp>

#include "base/metrics.h"

#include "proto/frames.h"
#include "services/conversation_ids.h"

namespace tern::services {
namespace {

Counter& coalesced_flushes = MetricsRegistry::global().counter(
    "tern_receipt_batches_total", "receipt windows flushed for large (read-side) groups");

}  // namespace

Seq Receipts::pending_ack(const DeviceRef& device, const std::string& conversation_id) {
  std::lock_guard lock(acks_mu_);
  auto it = pending_acks_.find(device.key() + '\n' + conversation_id);
  return it == pending_acks_.end() ? 0 : it->second;
}

std::pair<Seq, Seq> Receipts::log_range(const ConvState& cs, Seq from, Seq to) {
  // Older than what the loop remembers (e.g. sent before a restart): ask the log, bounded.
  const Seq remembered_from = cs.senders_from;
  if (from + 1 >= remembered_from) return {0, 0};
  const Seq last = std::min(to, remembered_from - 1);
  const Seq first = last - from > SequencerCore::kRecentSenders ? last - SequencerCore::kRecentSenders : from;
  return {first, last};
}

Receipts::LogSenders Receipts::read_log(const std::string& conversation_id, std::pair<Seq, Seq> range) {
  LogSenders l;
  l.first = range.first;
  l.last = range.second;
  auto messages = core_.store.read_messages(conversation_id, range.first, range.second - range.first);
  if (!messages) return l;  // the receipt goes to the senders known without them
  for (const auto& m : *messages)
    if (auto meta = proto::stored_meta(m.frame); meta && !meta->system) l.senders.emplace_back(m.seq, std::move(meta->sender));
  return l;
}

std::vector<std::string> Receipts::senders(ConvState& cs, const std::string& conversation_id,
                                           const std::string& reader, Seq from, Seq to, const LogSenders* older) {
  std::set<std::string> out;
  for (auto it = cs.recent_senders.rbegin(); it != cs.recent_senders.rend() && it->first > from; ++it)
    if (it->first <= to && it->second != reader) out.insert(it->second);
  const auto range = log_range(cs, from, to);
  if (range.first < range.second) {
    LogSenders read_here;
    // The embedded store reads here. With offloaded reads a range not covered after
    // kLogReads reads (it moved during each) is not read on the loop: the receipt goes to the
    // senders known from memory and the reads, as after a failed read.
    if (!covers(older, range) && !(core_.reads.offloaded() && older)) {
      read_here = read_log(conversation_id, range);
      older = &read_here;
    }
    for (const auto& [s, user] : older->senders)
      if (s > range.first && s <= range.second && user != reader) out.insert(user);
  }
  return {out.begin(), out.end()};
}

void Receipts::settle_ack(const std::string& ack_key, Seq seq) {
  std::lock_guard lock(acks_mu_);
  auto it = pending_acks_.find(ack_key);
  if (it != pending_acks_.end() && it->second <= seq) pending_acks_.erase(it);
}

// A channel subscriber's ack moves only its cursor: no receipt goes to the poster (who sees
// a view count instead) and there is no inbox entry to clear (channels fan out on read).
void Receipts::acknowledge_channel(Shard& shard, ConvState& cs, const DeviceRef& device, const std::string& conversation_id,
                                   Seq seq, bool read, std::string ack_key, AckDone done) {
  if (read) views_.read(shard, cs, conversation_id, device.user, seq);
  store::Batch batch;
  batch.add(store::SetCursor{device, conversation_id, seq});
  core_.submit(cs, std::move(batch), [this, ack_key = std::move(ack_key), seq, done = std::move(done)](
                                         const Result<void>& committed) {
    settle_ack(ack_key, seq);
    done(committed);
  }, &device);
}

void Receipts::hold_receipt(Shard& shard, const std::string& target, const std::string& conversation_id,
                            const std::string& reader, bool read, Seq seq) {
  Seq& held = shard.pending_receipts[{target, conversation_id, reader, read}];
  held = std::max(held, seq);
  if (shard.receipts_armed) return;
  shard.receipts_armed = true;
  auto timer = std::make_shared<boost::asio::steady_timer>(core_.loops.context(shard.loop),
                                                           std::chrono::milliseconds(core_.options.receipt_batch_ms));
  timer->async_wait([this, &shard, timer](const boost::system::error_code&) { flush_receipts(shard); });
}

void Receipts::flush_receipts(Shard& shard) {
  shard.receipts_armed = false;
  auto held = std::move(shard.pending_receipts);
  shard.pending_receipts.clear();
  // One frame per (conversation, reader, status, seq), shared by every target it goes to.
  std::map<std::tuple<std::string, std::string, bool, Seq>, std::shared_ptr<const bus::Notification>> frames;
  for (const auto& [key, seq] : held) {
    const auto& [target, conv, reader, read] = key;
    auto& n = frames[{conv, reader, read, seq}];
    if (!n) {
      auto f = std::make_shared<bus::Notification>();
      f->kind = bus::Notification::Kind::kFrame;
      f->frame = std::make_shared<const std::string>(proto::encode_receipt(conv, reader, read ? "read" : "delivered", seq));
      n = std::move(f);
    }
    core_.bus.publish_user(target, n);
  }
  coalesced_flushes.inc();
}

void Receipts::acknowledge(Shard& shard, const DeviceRef& device, const std::string& conversation_id, Seq seq,
                           bool read, AckDone done, bool following, const LogSenders* older,
                           std::optional<store::Member> channel_row) {
  auto conv = core_.directory.conversation(conversation_id);
  if (!conv) return done(conv.error());
  if (!*conv) return done(conversation_access_error());
  // A channel's subscribers are not in its record: checking one costs a store read of the
  // user's index row, once per ack of every subscriber of every post. A session that follows
  // the channel read that row when it followed, and drops it when told the user left (a
  // kMembership notice), so its acks skip the read; an active subscription is all a channel
  // ack needs (no left_seq to clamp to). Others (groups, non-followers) are checked here.
  std::optional<store::Member> member_row;
  if (following && (*conv)->type == store::ConvType::kChannel) {
    member_row = store::Member{device.user, 0, 0, false};
  } else if (channel_row && (*conv)->type == store::ConvType::kChannel) {
    member_row = std::move(channel_row);  // read by the session off the loop (a former subscriber)
  } else {
    auto member = core_.directory.member(**conv, device.user);
    if (!member) return done(member.error());
    if (!*member) return done(make_error(ErrorCode::kForbidden, "not a member of this conversation"));
    member_row = std::move(*member);
  }
  const store::Member* me = &*member_row;
  auto st = core_.state(shard, conversation_id);
  if (!st) return done(st.error());
  ConvState& cs = **st;
  if (seq > cs.head) return done(make_error(ErrorCode::kInvalidArgument, "seq is beyond the conversation's head"));
  if (!me->active()) seq = std::min(seq, me->left_seq);  // a removed member's view ends at its removal
  std::string ack_key = device.key() + '\n' + conversation_id;
  auto note_pending = [&] {
    std::lock_guard lock(acks_mu_);
    auto& pending = pending_acks_[ack_key];
    pending = std::max(pending, seq);
  };
  if ((*conv)->type == store::ConvType::kChannel) {
    note_pending();
    return acknowledge_channel(shard, cs, device, conversation_id, seq, read, std::move(ack_key), std::move(done));
  }

  if (!cs.receipts_loaded) {
    auto r = core_.store.receipts(conversation_id);
    if (!r) return done(r.error());
    for (auto& rs : *r) cs.receipts[rs.user] = rs;
    cs.receipts_loaded = true;
  }
  auto& rs = cs.receipts[device.user];
  rs.user = device.user;
  const bool delivered_up = seq > rs.delivered;
  const bool read_up = read && seq > rs.read;
  std::vector<std::string> to;
  if (delivered_up || read_up) {
    // The senders of the messages this receipt newly covers: (previous mark, seq].
    const Seq covered_from = std::min(delivered_up ? rs.delivered : seq, read_up ? rs.read : seq);
    const auto range = log_range(cs, covered_from, seq);
    if (core_.reads.offloaded() && range.first < range.second && !covers(older, range) &&
        (!older || older->reads < kLogReads)) {
      // Offloaded reads (Redis): the log is read on a reader thread, then this ack runs again
      // with it (nothing changed yet); the conversation's later work waits meanwhile.
      const int reads = older ? older->reads : 0;
      // Read again because the range moved (other nodes' messages pushed the oldest senders
      // out of memory): read on to the ack's seq, up to twice the usual bound, so that moves
      // during this read stay inside what it read (a range only moves forward, never past seq).
      const auto to_read =
          older ? std::pair<Seq, Seq>{range.first, std::min(seq, range.first + 2 * SequencerCore::kRecentSenders)} : range;
      core_.read_then<LogSenders>(
          shard, conversation_id, [this, conversation_id, to_read] { return Result<LogSenders>(read_log(conversation_id, to_read)); },
          [this, &shard, device, conversation_id, seq, read, done = std::move(done), following, to_read,
           reads](Result<LogSenders> l) {
            auto log = std::make_shared<LogSenders>();
            if (l) *log = std::move(*l);
            else *log = LogSenders{to_read.first, to_read.second, {}, 0};  // no reader: as a failed read
            log->reads = reads + 1;
            core_.resume(shard, conversation_id, true,
                         [this, &shard, device, conversation_id, seq, read, done, following, log](const Error* e) {
                           if (e) return done(*e);
                           acknowledge(shard, device, conversation_id, seq, read, done, following, log.get());
                         });
          });
      return;
    }
    for (auto& u : senders(cs, conversation_id, device.user, covered_from, seq, older))
      if (is_active_member(**conv, u)) to.push_back(std::move(u));
  }
  note_pending();
  if (delivered_up) rs.delivered = seq;
  if (read_up) rs.read = seq;

  store::Batch batch;
  batch.add(store::SetCursor{device, conversation_id, seq});
  // Caught up with everything sequenced so far (in flight included, whose inbox marks commit
  // before this batch): the device has no news here any more.
  if (seq >= cs.head) batch.add(store::InboxDelete{device, conversation_id});
  std::vector<std::shared_ptr<const bus::Notification>> frames;
  if (delivered_up || read_up) {
    batch.add(store::SetReceipt{conversation_id, device.user, rs.delivered, rs.read});
    auto make = [&](const char* status) {
      auto n = std::make_shared<bus::Notification>();
      n->kind = bus::Notification::Kind::kFrame;
      n->frame = std::make_shared<const std::string>(proto::encode_receipt(conversation_id, device.user, status, seq));
      frames.push_back(std::move(n));
    };
    if (delivered_up) make("delivered");
    if (read_up) make("read");
  }
  // In a read-side (large) group the receipts to each sender are coalesced over a window:
  // every member acks every message, and a sender needs only each reader's latest mark.
  const bool coalesce = (*conv)->fanout_on_read && core_.options.receipt_batch_ms > 0;
  const bool accepted = core_.submit(
      cs, std::move(batch),
      [this, &shard, coalesce, conversation_id, reader = device.user, delivered_up, read_up,
       frames = std::move(frames), to = std::move(to), done = std::move(done), ack_key = std::move(ack_key),
       seq](const Result<void>& committed) {
        settle_ack(ack_key, seq);
        if (committed && coalesce) {
          for (const auto& u : to) {
            if (delivered_up) hold_receipt(shard, u, conversation_id, reader, false, seq);
            if (read_up) hold_receipt(shard, u, conversation_id, reader, true, seq);
          }
        } else if (committed) {
          for (const auto& u : to)
            for (const auto& n : frames) core_.bus.publish_user(u, n);
        }
        done(committed);
      },
      &device);
  if (!accepted) {  // the advanced receipt state was not stored: reload it next time
    cs.receipts.clear();
    cs.receipts_loaded = false;
  }
}

}  // namespace tern::services
