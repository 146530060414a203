// The wire form of channel changes forwarded between nodes (channel_forwarding.h): every field
// survives, a malformed payload is refused whole, and a forwarded send is never taken for one.
// Also the views' requests (read markers, counts) that travel in it.
#include "services/channel_forwarding.h"

#include <gtest/gtest.h>

#include "base/byte_codec.h"
#include "services/send_forwarding.h"

namespace tern::services {
namespace {

using channel_forwarding::Answer;
using channel_forwarding::Op;
using channel_forwarding::Request;

Request full(Op op) { return Request{op, DeviceRef{"alice", 7}, "ch-0123", {{"bob", "carol"}, {"dave"}}, {}}; }
Request reads() { return Request{Op::kReads, {}, "ch-0123", {}, {{"bob", 7}, {"carol", 1ull << 40}}}; }

TEST(ChannelForwarding, EveryChangeKeepsEveryField) {
  for (Op op : {Op::kJoin, Op::kLeave, Op::kSubscribers, Op::kAdmins}) {
    const std::string wire = channel_forwarding::encode_request(full(op));
    EXPECT_TRUE(channel_forwarding::is_request(wire));
    auto r = channel_forwarding::decode_request(wire);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->op, op);
    EXPECT_EQ(r->actor.user, "alice");
    EXPECT_EQ(r->actor.device, 7u);
    EXPECT_EQ(r->channel_id, "ch-0123");
    EXPECT_EQ(r->members.add, (std::vector<std::string>{"bob", "carol"}));
    EXPECT_EQ(r->members.remove, (std::vector<std::string>{"dave"}));
  }
}

// The request sink gets both kinds: a send's first byte (its version, 1) is never a channel
// change's, and neither decoder takes the other's payload.
TEST(ChannelForwarding, ASendAndAChangeAreToldApart) {
  proto::SendFrame f;
  f.client_msg_id = "c1";
  f.conversation_id = "ch-0123";
  const std::string send = send_forwarding::encode_request(DeviceRef{"alice", 1}, f);
  EXPECT_FALSE(channel_forwarding::is_request(send));
  EXPECT_FALSE(channel_forwarding::decode_request(send));
  const std::string change = channel_forwarding::encode_request(full(Op::kJoin));
  EXPECT_FALSE(send_forwarding::decode_request(change)) << "an older node refuses a change as malformed";
  EXPECT_FALSE(channel_forwarding::is_request(""));
}

TEST(ChannelForwarding, EveryTruncationTrailingBytesAndBadFieldsAreRefused) {
  const std::string wire = channel_forwarding::encode_request(full(Op::kSubscribers));
  for (size_t n = 0; n < wire.size(); ++n) {
    auto r = channel_forwarding::decode_request(wire.substr(0, n));
    ASSERT_FALSE(r) << "a truncation to " << n << " bytes was taken";
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  }
  EXPECT_FALSE(channel_forwarding::decode_request(wire + "x"));
  std::string unknown = wire;
  unknown[1] = 'z';
  EXPECT_FALSE(channel_forwarding::decode_request(unknown));
  EXPECT_FALSE(channel_forwarding::decode_request(channel_forwarding::encode_request(Request{Op::kJoin, {"", 1}, "ch-1", {}, {}})));
  EXPECT_FALSE(channel_forwarding::decode_request(channel_forwarding::encode_request(Request{Op::kJoin, {"bob", 1}, "", {}, {}})));
  // A count of names far beyond what the payload holds is refused before anything is kept.
  std::string huge;
  huge.push_back(channel_forwarding::kRequestVersion);
  huge.push_back('s');
  put_str(huge, "alice");
  put_u32(huge, 1);
  put_str(huge, "ch-1");
  put_u32(huge, 0xffffffff);
  EXPECT_FALSE(channel_forwarding::decode_request(huge));
}

TEST(ChannelForwarding, AnswersKeepTheCountsAdminsOrTheError) {
  Answer a{SubscriptionInfo{42, 1000001}, {"alice", "erin"}, {}};
  auto ok = channel_forwarding::decode_response(channel_forwarding::encode_response(a));
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->info.joined_seq, 42u);
  EXPECT_EQ(ok->info.subscribers, 1000001u);
  EXPECT_EQ(ok->admins, (std::vector<std::string>{"alice", "erin"}));
  Error e = make_error(ErrorCode::kForbidden, "only the owner names admins");
  auto err = channel_forwarding::decode_response(channel_forwarding::encode_response(e));
  ASSERT_FALSE(err);
  EXPECT_EQ(err.error().code, ErrorCode::kForbidden);
  EXPECT_EQ(err.error().message, "only the owner names admins");
  for (const std::string& bad : {std::string(), std::string("k"), std::string("e"), std::string("?")}) {
    auto r = channel_forwarding::decode_response(bad);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable) << "'" << bad << "'";
  }
  EXPECT_FALSE(channel_forwarding::decode_response(channel_forwarding::encode_response(a) + "x"));
}

TEST(ChannelForwarding, ReadMarkersAndAViewsRequestKeepEveryField) {
  auto r = channel_forwarding::decode_request(channel_forwarding::encode_request(reads()));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->op, Op::kReads);
  EXPECT_TRUE(r->actor.user.empty());
  EXPECT_EQ(r->channel_id, "ch-0123");
  EXPECT_EQ(r->reads, (std::vector<std::pair<std::string, Seq>>{{"bob", 7}, {"carol", 1ull << 40}}));
  auto v = channel_forwarding::decode_request(channel_forwarding::encode_request(Request{Op::kViews, {}, "ch-9", {}, {}}));
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->op, Op::kViews);
  EXPECT_EQ(v->channel_id, "ch-9");
  // Only a change names its actor, and only a node's own request goes without one.
  EXPECT_FALSE(channel_forwarding::decode_request(channel_forwarding::encode_request(Request{Op::kViews, {"bob", 1}, "ch-9", {}, {}})));
  Request named = reads();
  named.actor = DeviceRef{"bob", 1};
  EXPECT_FALSE(channel_forwarding::decode_request(channel_forwarding::encode_request(named)));
  // A change carries no read markers: its form is as before views travelled.
  Request join = full(Op::kJoin);
  const std::string before = channel_forwarding::encode_request(join);
  join.reads = {{"bob", 1}};
  EXPECT_EQ(channel_forwarding::encode_request(join), before);
}

TEST(ChannelForwarding, MalformedReadMarkersAreRefused) {
  const std::string wire = channel_forwarding::encode_request(reads());
  for (size_t n = 0; n < wire.size(); ++n)
    ASSERT_FALSE(channel_forwarding::decode_request(wire.substr(0, n))) << "a truncation to " << n << " bytes was taken";
  EXPECT_FALSE(channel_forwarding::decode_request(wire + "x"));
  Request empty_user = reads();
  empty_user.reads.emplace_back("", 3);
  EXPECT_FALSE(channel_forwarding::decode_request(channel_forwarding::encode_request(empty_user)));
  // A count of markers far beyond what the payload holds is refused before anything is kept.
  std::string huge = channel_forwarding::encode_request(Request{Op::kReads, {}, "ch-1", {}, {}});
  huge.resize(huge.size() - 4);
  put_u32(huge, 0xffffffff);
  EXPECT_FALSE(channel_forwarding::decode_request(huge));
}

TEST(ChannelForwarding, AViewsAnswerKeepsTheCountsAndAChangesAnswerHasNone) {
  Answer counts{{}, {}, {{5, 2}, {6, 0}, {1ull << 40, 1000001}}};
  const std::string wire = channel_forwarding::encode_response(counts);
  auto ok = channel_forwarding::decode_response(wire);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->views, counts.views);
  // The views come after a change's answer, which without them is as it was before views
  // travelled (an older node reads it).
  Answer none{{}, {}, {}};
  const std::string change = channel_forwarding::encode_response(none);
  EXPECT_EQ(wire.substr(0, change.size()), change);
  // Every other truncation is refused (cut just before the views, it is a change's answer).
  for (size_t n = 1; n < wire.size(); ++n)
    if (n != change.size()) {
      ASSERT_FALSE(channel_forwarding::decode_response(wire.substr(0, n))) << "a truncation to " << n << " bytes was taken";
    }
  EXPECT_FALSE(channel_forwarding::decode_response(wire + "x"));
  auto plain = channel_forwarding::decode_response(change);
  ASSERT_TRUE(plain);
  EXPECT_TRUE(plain->views.empty());
  std::string huge = change;
  put_u32(huge, 0xffffffff);
  EXPECT_FALSE(channel_forwarding::decode_response(huge));
}

}  // namespace
}  // namespace tern::services
