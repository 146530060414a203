// The wire form of channel changes forwarded between nodes (channel_forwarding.h): every field
// survives, a malformed payload is refused whole, and a forwarded send is never taken for one.
#include "services/channel_forwarding.h"

#include <gtest/gtest.h>

#include "base/byte_codec.h"
#include "services/send_forwarding.h"

namespace tern::services {
namespace {

using channel_forwarding::Answer;
using channel_forwarding::Op;
using channel_forwarding::Request;

Request full(Op op) { return Request{op, DeviceRef{"alice", 7}, "ch-0123", {{"bob", "carol"}, {"dave"}}}; }

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
  EXPECT_FALSE(channel_forwarding::decode_request(channel_forwarding::encode_request(Request{Op::kJoin, {"", 1}, "ch-1", {}})));
  EXPECT_FALSE(channel_forwarding::decode_request(channel_forwarding::encode_request(Request{Op::kJoin, {"bob", 1}, "", {}})));
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
  Answer a{SubscriptionInfo{42, 1000001}, {"alice", "erin"}};
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

}  // namespace
}  // namespace tern::services
