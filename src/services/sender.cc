#include "services/sender.h"

#include <algorithm>
#include <optional>
#include <set>

#include "base/clock.h"
#include "base/metrics.h"
#include "proto/frames.h"
#include "services/channel_views.h"
#include "services/conversation_ids.h"
#include "services/media.h"
#include "services/send_safety.h"
#include "proto/json_writer.h"

namespace tern::services {
namespace {

Counter& messages_stored = MetricsRegistry::global().counter("tern_messages_stored_total", "messages durably stored");
Counter& key_payloads = MetricsRegistry::global().counter(
    "tern_key_distribution_payloads_total",
    "key-management payloads (sends flagged \"keys\") stored, counted once per recipient device");
Counter& sends_resequenced = MetricsRegistry::global().counter(
    "tern_sends_resequenced_total", "sends sequenced again because another node had appended to the conversation first");
Histogram& send_to_durable = MetricsRegistry::global().histogram(
    "tern_send_to_durable_seconds", "from a send frame's arrival to its durable commit", latency_buckets());

std::string pending_key(const DeviceRef& d, const std::string& cmid) { return d.key() + '\n' + cmid; }

void append_list(std::string& out, const std::vector<std::string>& keys) {
  out += '[';
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i) out += ',';
    proto::append_json_string(out, keys[i]);
  }
  out += ']';
}

// The device_mismatch detail: {"missing":[...],"extra":[...]}, plus "stale":[...] when the
// send carried registration_ids.
std::string mismatch_detail(const std::set<std::string>& expected, const std::set<std::string>& given,
                            const std::vector<std::string>* stale) {
  std::string out = R"({"missing":[)";
  bool first = true;
  for (const auto& k : expected)
    if (!given.count(k)) {
      if (!first) out += ',';
      first = false;
      proto::append_json_string(out, k);
    }
  out += R"(],"extra":[)";
  first = true;
  for (const auto& k : given)
    if (!expected.count(k)) {
      if (!first) out += ',';
      first = false;
      proto::append_json_string(out, k);
    }
  out += ']';
  if (stale) {
    out += R"(,"stale":)";
    append_list(out, *stale);
  }
  out += '}';
  return out;
}

}  // namespace

void Sender::settle(Shard& shard, const std::string& key, const Result<void>& committed) {
  auto p = shard.pending.find(key);
  if (p == shard.pending.end()) return;
  auto waiters = std::move(p->second.waiters);
  const SentInfo info = p->second.info;
  shard.pending.erase(p);
  for (auto& w : waiters) committed ? w(info) : w(committed.error());
}

void Sender::again(Shard& shard, DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done,
                   int attempt, MediaLeases::Lease media_lease) {
  const std::string id = frame.conversation_id;  // before the frame moves into the closure
  core_.resume(shard, id, false,
               [this, &shard, device = std::move(device), frame = std::move(frame), started_us, done = std::move(done),
                attempt, media_lease = std::move(media_lease)](const Error* e) mutable {
                 if (e) return done(*e);
                 send(shard, std::move(device), std::move(frame), started_us, std::move(done), attempt, true,
                      std::move(media_lease));
               });
}

void Sender::send(Shard& shard, DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done,
                  int attempt, bool idempotency_read, MediaLeases::Lease media_lease) {
  const std::string& conv_id = frame.conversation_id;
  auto conv = core_.directory.conversation(conv_id);
  if (!conv) return done(conv.error());
  if (!*conv) return done(conversation_access_error());
  const store::Conversation& c = **conv;
  if (c.type == store::ConvType::kChannel) {
    // Owner and admins post; subscribers read. Channels are not end-to-end encrypted.
    const auto* m = find_member(c, device.user);
    if (!m || !m->active() || !m->admin) {
      auto sub = core_.directory.member(c, device.user);
      if (!sub) return done(sub.error());
      if (!*sub) return done(conversation_access_error());
      return done(make_error(ErrorCode::kForbidden, "only channel admins can post"));
    }
    if (!frame.bodies.empty())
      return done(make_error(ErrorCode::kInvalidArgument,
                             "channels are not end-to-end encrypted: per-device bodies are not allowed"));
  } else if (!is_active_member(c, device.user)) {
    return done(make_error(ErrorCode::kForbidden, "not a member of this conversation"));
  }
  // Fan-out on read (channels, large groups): no inbox mark per recipient device; devices
  // compare the head with their cursor, and live delivery goes through LiveFanout.
  const bool read_side = c.fanout_on_read;

  // Idempotency: a retry while the first is in flight waits for it; after, the store answers
  // (a point read that the idempotency family's bloom filter makes cheap for new ids).
  std::string key = pending_key(device, frame.client_msg_id);
  if (auto p = shard.pending.find(key); p != shard.pending.end()) {
    p->second.waiters.push_back(std::move(done));
    return;
  }
  if (attempt == 0 && !idempotency_read && core_.store.commit_checks_idempotency()) {
    // Redis (docs/scaling.md): no read before a first attempt. The commit refuses a
    // client_msg_id that has a record (as if the conversation were behind), so the send is
    // sequenced again and that attempt reads the record. A check that fails before the commit
    // reads it too: a resend keeps its first answer.
    done = [this, loop = shard.loop, device, cmid = frame.client_msg_id, conv = std::string(conv_id),
            done = std::move(done)](Result<SentInfo> r) {
      if (r) return done(std::move(r));
      core_.reads.run<std::optional<store::IdempotencyRecord>>(
          loop, [this, device, cmid, conv] { return core_.store.send_idempotency(device, cmid, conv, core_.bus.clock_ms()); },
          [cmid, done, r = std::move(r)](Result<std::optional<store::IdempotencyRecord>> seen) {
            if (seen && *seen) return done(SentInfo{cmid, (*seen)->conversation_id, (*seen)->seq, (*seen)->ts});
            done(r);
          });
    };
  } else if (core_.reads.offloaded() && !idempotency_read) {
    // The record is read on a reader thread; the conversation's later work waits (gated).
    std::string cmid = frame.client_msg_id;
    const std::string id = conv_id;  // conv_id refers into the frame, which moves below
    core_.read_then<std::optional<store::IdempotencyRecord>>(
        shard, id, [this, device, cmid, id] { return core_.store.send_idempotency(device, cmid, id, core_.bus.clock_ms()); },
        [this, &shard, device, frame = std::move(frame), started_us, done = std::move(done),
         attempt](Result<std::optional<store::IdempotencyRecord>> seen) mutable {
          if (!seen) return done(seen.error());
          if (*seen)
            return done(SentInfo{frame.client_msg_id, (*seen)->conversation_id, (*seen)->seq, (*seen)->ts});
          again(shard, std::move(device), std::move(frame), started_us, std::move(done), attempt, nullptr);
        });
    return;
  } else if (!idempotency_read) {
    auto seen = core_.store.send_idempotency(device, frame.client_msg_id, conv_id, core_.bus.clock_ms());
    if (!seen) return done(seen.error());
    if (*seen) return done(SentInfo{frame.client_msg_id, (*seen)->conversation_id, (*seen)->seq, (*seen)->ts});
  }
  // Issue 12: blocks and consent (after the retry checks: a retry keeps its first answer).
  auto safety = SendSafety::check(core_.blocks, core_.privacy, c, device.user);
  if (!safety) return done(safety.error());

  // Media named in clear metadata must be the sender's or visible to it (issue 11). The
  // lease keeps the sweep off those blobs until the commit below finished.
  if (!frame.media.empty() && !media_lease) {
    if (!core_.media) return done(make_error(ErrorCode::kInvalidArgument, "media is not enabled on this server"));
    if (core_.reads.offloaded()) {
      // The media records are read on a reader thread (check_send is thread-safe, its lease
      // too); the conversation's later work waits, so the send keeps its place.
      Media* media = core_.media;
      const std::string id = conv_id;  // copied before the frame moves into the closure
      std::vector<std::string> ids = frame.media;
      core_.read_then<MediaLeases::Lease>(
          shard, id, [media, device, ids = std::move(ids)] { return media->check_send(device, ids); },
          [this, &shard, device, frame = std::move(frame), started_us, done = std::move(done),
           attempt](Result<MediaLeases::Lease> lease) mutable {
            if (!lease) return done(lease.error());
            again(shard, std::move(device), std::move(frame), started_us, std::move(done), attempt, std::move(*lease));
          });
      return;
    }
    auto lease = core_.media->check_send(device, frame.media);
    if (!lease) return done(lease.error());
    media_lease = std::move(*lease);
  }

  // A batch of this conversation failed: the head reloads once nothing is in flight, and
  // this send is sequenced after that, not on the old head.
  ConvState* settled = core_.settled_state(
      shard, conv_id, [&](const Error& e) { done(e); },
      [&]() -> std::function<void(const Error*)> {
        return [this, &shard, device = std::move(device), frame = std::move(frame), started_us,
                done = std::move(done), attempt](const Error* e) mutable {
          if (e) return done(*e);
          send(shard, std::move(device), std::move(frame), started_us, std::move(done), attempt);
        };
      });
  if (!settled) return;
  ConvState& cs = *settled;
  if (c.type == store::ConvType::kChannel) {
    auto& bucket = cs.channel_state().posts;
    if (!bucket) bucket.emplace(core_.options.channel_post_rate, core_.options.channel_post_burst, mono_us());
    if (!bucket->take(mono_us()))
      return done(make_error(ErrorCode::kRateLimited, "too many posts in this channel; retry later"));
  }
  if (frame.reply_to && *frame.reply_to > cs.head)
    return done(make_error(ErrorCode::kInvalidArgument, "reply_to refers to a seq that does not exist yet"));

  const Seq seq = cs.head + 1;
  // The recipient devices: needed to fan out on write, or to check per-device bodies.
  Result<std::vector<DeviceRef>> to = std::vector<DeviceRef>{};
  if (!read_side || !frame.bodies.empty()) to = core_.recipients(c, seq, &device);
  if (!to) return done(to.error());

  if (!frame.bodies.empty()) {
    // Per-device payloads must address exactly the current recipient devices.
    std::set<std::string> expected, given;
    for (const auto& d : *to) expected.insert(d.key());
    for (const auto& [k, _] : frame.bodies) given.insert(k);
    // Stale: the sender encrypted for keys the device has replaced since (a new installation
    // has a new registration id), or for a device that has no keys.
    std::vector<std::string> stale;
    if (!frame.registration_ids.empty() && core_.registration_id) {
      for (const auto& [k, reg] : frame.registration_ids) {
        auto d = parse_device_key(k);
        if (!d || !expected.count(k)) continue;  // reported as extra
        auto current = core_.registration_id(*d);
        if (!current) return done(current.error());
        if (*current != reg) stale.push_back(k);
      }
    }
    if (expected != given || !stale.empty()) {
      Error e = make_error(ErrorCode::kDeviceMismatch,
                           expected != given ? "bodies do not match the member devices"
                                             : "bodies were encrypted for keys that changed");
      e.detail_json = mismatch_detail(expected, given, frame.registration_ids.empty() ? nullptr : &stale);
      return done(std::move(e));
    }
  }
  safety->filter(*to);

  // The shared clock (Bus::clock_us): a conversation sequenced by another node next keeps its
  // ts in order, and every node expires the message at one moment.
  const int64_t ts = core_.bus.clock_ms();
  proto::MessageRecord m;
  m.conversation_id = conv_id;
  m.seq = seq;
  m.sender = device.user;
  m.sender_device = device.device;
  m.ts = ts;
  m.body = std::move(frame.body);
  m.bodies = std::move(frame.bodies);
  m.reply_to = frame.reply_to;
  // The conversation's disappearing-messages timer caps the ttl (a client cannot opt out).
  std::optional<int64_t> ttl = frame.ttl_seconds;
  if (c.disappear_seconds > 0) ttl = std::min(ttl.value_or(c.disappear_seconds), c.disappear_seconds);
  if (ttl) m.expires_at = ts + *ttl * 1000;
  m.media = frame.media;
  m.withheld_from = safety->withheld_from;
  const bool per_device = !m.bodies.empty() || !m.withheld_from.empty();
  const bool keys = frame.keys;
  auto stored = std::make_shared<const std::string>(proto::encode_message(m));
  // The frame goes back whole into the completion: if another node appended to the
  // conversation first, the send is sequenced again from it (no copy of the body).
  frame.body = std::move(m.body);
  frame.bodies = std::move(m.bodies);

  store::Batch batch;
  batch.ops.reserve(2 + (read_side ? 0 : to->size()));
  batch.add(store::AppendMessage{conv_id, seq, *stored, m.expires_at.value_or(0), std::move(m.media)});
  batch.add(store::PutIdempotency{device, frame.client_msg_id,
                                  store::IdempotencyRecord{conv_id, seq, ts, ts + core_.options.idempotency_ttl_ms}});
  // Inbox marks are blind puts: seqs of one conversation commit in increasing order.
  if (!read_side)
    for (const auto& d : *to) batch.add(store::InboxMark{d, conv_id, seq});
  safety->add_ops(batch, device.user, conv_id);

  SentInfo info{frame.client_msg_id, conv_id, seq, ts};
  shard.pending.emplace(key, PendingSend{info, {}});
  cs.head = seq;
  SequencerCore::remember_sender(cs, seq, device.user);
  // The sending device, for the commit gap: its next send comes after this one's `sent`.
  const bool accepted = core_.submit(
      cs, std::move(batch),
      [this, &shard, cs = &cs, key = std::move(key), info, to = std::move(*to), stored, per_device, keys, started_us,
       read_side, device, done = std::move(done), safety = std::move(*safety), user = device.user,
       media_lease = std::move(media_lease), frame = std::move(frame), attempt](
          const Result<void>& result) mutable {
        Result<void> committed = result;
        if (SequencerCore::sequence_again(committed, attempt)) {
          // Nothing of it was stored: sequence it again on the reloaded head, after the
          // conversation's other batches in flight completed (they failed the same way).
          // The pending entry stays, so a resend meanwhile waits for this one.
          sends_resequenced.inc();
          cs->retry.push_back([this, &shard, key, device, frame = std::move(frame), started_us, done = std::move(done),
                                attempt](const Error* e) mutable {
            std::vector<SendDone> waiters{std::move(done)};
            if (auto p = shard.pending.find(key); p != shard.pending.end()) {
              for (auto& w : p->second.waiters) waiters.push_back(std::move(w));
              shard.pending.erase(p);
            }
            if (e) {
              for (auto& w : waiters) w(*e);
              return;
            }
            send(shard, std::move(device), std::move(frame), started_us,
                 [waiters = std::move(waiters)](Result<SentInfo> r) {
                   for (auto& w : waiters) w(r);
                 },
                 attempt + 1);
          });
          return;
        }
        if (committed) {
          safety.committed(core_.privacy, core_.bus, user, info.conversation_id);
          messages_stored.inc();
          if (keys) key_payloads.inc(to.size());
          send_to_durable.observe(static_cast<double>(mono_us() - started_us) / 1e6);
          done(info);
          if (read_side)
            core_.publish_conversation(info.conversation_id, info.seq, std::move(stored), started_us, device,
                                       per_device);
          else
            core_.publish_message(to, info.conversation_id, info.seq, std::move(stored), per_device, started_us);
        } else {
          done(committed.error());
        }
        settle(shard, key, committed);
      },
      &device);
  // Rejected (queue full or draining): nothing was queued, so the seq is still free. The
  // completion already answered and dropped the pending entry.
  if (!accepted) {
    cs.head = seq - 1;
    if (!cs.recent_senders.empty() && cs.recent_senders.back().first == seq) cs.recent_senders.pop_back();
  } else if (c.type == store::ConvType::kChannel) {
    ChannelViews::track_post(cs, seq);
  }
}

}  // namespace tern::services
