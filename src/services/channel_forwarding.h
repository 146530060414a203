// ChannelForwarding: the wire form of a channel change (a join, a leave, an admin's change of
// subscribers or admins) that one node hands to the node that sequences the channel, and of
// the answer that comes back (bus/bus.h route() and request(); docs/scaling.md "Channels
// across nodes"). A channel change takes no seq, so nothing in the store catches two nodes
// writing the channel's record (its subscriber count, its admins) from two copies; with every
// change made by one node, each counts from the one before it. The same form carries the
// channel's views (channel_views.h): a batch of subscribers' read markers (kReads, answered
// with nothing) and a request for the counts (kViews, answered with them).
//
// It travels as a forwarded send does (send_forwarding.h): its first byte, kRequestVersion,
// tells the two apart (a send's is 1); a node of an older version refuses it as malformed,
// and the client gets `unavailable`. Both forms are decoded with bounds checks: a malformed
// payload is refused with an error, never trusted half way.
//
// Stateless functions; any thread.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/ids.h"
#include "base/result.h"
#include "proto/http_shapes.h"
#include "services/channels.h"

namespace tern::services::channel_forwarding {

constexpr char kRequestVersion = 2;

enum class Op : char {
  kJoin = 'j',
  kLeave = 'l',
  kSubscribers = 's',
  kAdmins = 'a',
  kReads = 'r',  // no actor: the node checked each reader's subscription when it acked
  kViews = 'v',  // no actor: the node checked the caller's access
};

// Bounds a payload may claim: names of a change, read markers of a batch (ChannelViews holds
// fewer), posts with views.
constexpr size_t kMaxNames = 100000;
constexpr size_t kMaxReads = 100000;
constexpr size_t kMaxViews = 1000;

struct Request {
  Op op = Op::kJoin;
  DeviceRef actor;  // authenticated by the node that got the HTTP request (empty for kReads, kViews)
  std::string channel_id;
  proto::MembersRequest members;                  // kSubscribers, kAdmins
  std::vector<std::pair<std::string, Seq>> reads;  // kReads: (user, read marker)
};

// What a change answers: a join its joined_seq and the count; a leave and a subscriber change
// the count (info.subscribers); an admin change the admins; kViews the counts.
struct Answer {
  SubscriptionInfo info;
  std::vector<std::string> admins;
  std::vector<std::pair<Seq, uint64_t>> views;  // kViews: (post seq, readers), oldest first
};

// Whether `payload` is a channel change (else a forwarded send, or something malformed).
bool is_request(std::string_view payload);
std::string encode_request(const Request& request);
Result<Request> decode_request(std::string_view payload);

std::string encode_response(const Result<Answer>& result);
// A malformed answer (or an empty one) reads as `unavailable`.
Result<Answer> decode_response(std::string_view payload);

}  // namespace tern::services::channel_forwarding
