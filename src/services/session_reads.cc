#include "services/session_reads.h"

#include <algorithm>
#include <limits>

#include "services/service_context.h"

namespace tern::services::session_reads {
namespace {
constexpr Seq kNoLimit = std::numeric_limits<Seq>::max();
}  // namespace

Window apply_membership(Window w, const store::Member& m) {
  const Seq floor = m.joined_seq - 1;
  if (floor > w.floor) {  // re-added after a removal: a new era starts
    w.floor = floor;
    w.sent = std::max(w.sent, floor);
  }
  w.limit = m.active() ? kNoLimit : m.left_seq;
  return w;
}

Window new_window(const store::Member& m, Seq cursor, Seq pending_ack) {
  Window w;
  w.floor = m.joined_seq - 1;
  w.limit = m.active() ? kNoLimit : m.left_seq;
  w.sent = std::max({cursor, w.floor, pending_ack});
  return w;
}

namespace {
// The user's membership of `conv` (a snapshot, or null: the conversation is gone).
Membership membership_in(ServiceContext& ctx, const std::string& user, const ConversationPtr& conv) {
  Membership out;
  if (!conv) return out;
  auto member = ctx.directory.member(*conv, user);
  if (!member) {
    out.failure = Failure{"member", member.error()};
    return out;
  }
  if (!*member) {
    out.kind = Membership::Kind::kNone;
    return out;
  }
  out.kind = Membership::Kind::kMember;
  out.member = std::move(**member);
  return out;
}
}  // namespace

Membership read_membership(ServiceContext& ctx, const std::string& user, const std::string& conversation_id) {
  auto conv = ctx.directory.conversation(conversation_id);
  if (!conv) {
    Membership out;
    out.failure = Failure{"conversation", conv.error()};
    return out;
  }
  return membership_in(ctx, user, *conv);
}

PositionRows read_rows(ServiceContext& ctx, const DeviceRef& device, const std::string& conversation_id) {
  PositionRows rows;
  rows.conversation_id = conversation_id;
  rows.membership = read_membership(ctx, device.user, conversation_id);
  if (rows.membership.kind != Membership::Kind::kMember) return rows;
  auto cursor = ctx.store.cursor(device, conversation_id);
  if (!cursor) rows.failure = Failure{"cursor", cursor.error()};
  else rows.cursor = *cursor;
  return rows;
}

Opening read_opening(ServiceContext& ctx, const DeviceRef& device) {
  Opening o;
  auto inbox = ctx.store.inbox(device);
  if (!inbox) {
    o.failure = Failure{"inbox", inbox.error()};
    return o;
  }
  o.inbox = std::move(*inbox);
  // A device low on one-time prekeys hears it on every connect until it refills.
  if (ctx.keys) o.low_prekeys = ctx.keys->low_frame(device);
  // The inbox's conversations, then the device's cursors in those it is a member of: one
  // store call each, whatever the inbox holds (on Redis one round trip each, not one or two
  // per conversation: a device back after a day may have news in dozens).
  std::vector<std::string> ids;
  ids.reserve(o.inbox.size());
  for (const auto& [conv, latest] : o.inbox) ids.push_back(conv);
  auto snapshots = ctx.directory.conversations(ids);
  if (!snapshots) {
    o.failure = Failure{"conversation", snapshots.error()};
    return o;
  }
  o.rows.reserve(o.inbox.size());
  std::vector<std::string> member_of;
  std::vector<size_t> at;  // member_of[k] is o.rows[at[k]]
  for (size_t i = 0; i < ids.size(); ++i) {
    PositionRows rows;
    rows.conversation_id = ids[i];
    rows.membership = membership_in(ctx, device.user, (*snapshots)[i]);
    if (const auto& f = rows.failed()) {
      o.failure = f;
      o.rows.clear();  // none is used: the session closes
      return o;
    }
    o.rows.push_back(std::move(rows));
    if (o.rows.back().membership.kind == Membership::Kind::kMember) {
      member_of.push_back(ids[i]);
      at.push_back(i);
    }
  }
  if (!member_of.empty()) {
    auto cursors = ctx.store.cursors(device, member_of);
    if (!cursors) {
      o.failure = Failure{"cursor", cursors.error()};
      o.rows.clear();  // their cursors are unknown: none is used, the session closes
      return o;
    }
    for (size_t k = 0; k < at.size(); ++k) o.rows[at[k]].cursor = (*cursors)[k];
  }
  // Read-side conversations have no inbox entries: the session follows them.
  auto convs = ctx.store.user_conversations(device.user);
  if (!convs) {
    o.failure = Failure{"user_index", convs.error()};
    return o;
  }
  for (auto& uc : *convs)
    if (uc.fanout_on_read && uc.left_seq == 0) o.follow.push_back(std::move(uc.conversation_id));
  return o;
}

Page read_page(ServiceContext& ctx, const DeviceRef& device, const std::string& conversation_id,
               std::optional<Window> known, size_t page) {
  Page p;
  Window w;
  if (known) {
    // The membership is refreshed on every page; a failed refresh keeps the window.
    p.membership = read_membership(ctx, device.user, conversation_id);
    w = *known;
    if (p.membership.kind == Membership::Kind::kNone) w.limit = 0;
    if (p.membership.kind == Membership::Kind::kMember) w = apply_membership(w, p.membership.member);
  } else {
    PositionRows rows = read_rows(ctx, device, conversation_id);
    if (const auto& f = rows.failed()) {
      p.failure = f;
      return p;
    }
    p.membership = std::move(rows.membership);
    if (p.membership.kind != Membership::Kind::kMember) return p;
    p.cursor = rows.cursor;
    w = new_window(p.membership.member, rows.cursor, ctx.sequencer.pending_ack(device, conversation_id));
  }
  if (w.sent >= w.limit) return p;
  auto messages = ctx.store.read_messages(conversation_id, w.sent, page);
  if (!messages) {
    p.failure = Failure{"replay", messages.error()};
    return p;
  }
  p.read = true;
  p.messages = std::move(*messages);
  return p;
}

Recheck read_recheck(ServiceContext& ctx, const std::string& user, const std::string& conversation_id) {
  Recheck r;
  r.conversation_id = conversation_id;
  r.membership = read_membership(ctx, user, conversation_id);
  auto row = ctx.store.user_conversation(user, conversation_id);
  r.follow = row && *row && (*row)->fanout_on_read && (*row)->left_seq == 0;
  return r;
}

}  // namespace tern::services::session_reads
