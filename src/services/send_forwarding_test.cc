// The wire form of forwarded sends between nodes (send_forwarding.h): every field survives,
// and a malformed payload is refused whole.
#include "services/send_forwarding.h"

#include <gtest/gtest.h>

namespace tern::services {
namespace {

proto::SendFrame full_frame() {
  proto::SendFrame f;
  f.client_msg_id = "cmid-1";
  f.conversation_id = "g-abc";
  f.body = "aGVsbG8=";
  f.bodies = {{"bob:1", "Ym9i"}, {"carol:2", "Y2Fyb2w="}};
  f.reply_to = 41;
  f.ttl_seconds = 3600;
  f.keys = true;
  f.registration_ids = {{"bob:1", 77}, {"carol:2", 0xfffffffe}};
  f.media = {"m1", "m2"};
  return f;
}

TEST(SendForwarding, ARequestKeepsEveryField) {
  const std::string wire = send_forwarding::encode_request(DeviceRef{"alice", 3}, full_frame());
  auto r = send_forwarding::decode_request(wire);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->first.user, "alice");
  EXPECT_EQ(r->first.device, 3u);
  const proto::SendFrame& f = r->second;
  const proto::SendFrame want = full_frame();
  EXPECT_EQ(f.client_msg_id, want.client_msg_id);
  EXPECT_EQ(f.conversation_id, want.conversation_id);
  EXPECT_EQ(f.body, want.body);
  EXPECT_EQ(f.bodies, want.bodies);
  EXPECT_EQ(f.reply_to, want.reply_to);
  EXPECT_EQ(f.ttl_seconds, want.ttl_seconds);
  EXPECT_EQ(f.keys, want.keys);
  EXPECT_EQ(f.registration_ids, want.registration_ids);
  EXPECT_EQ(f.media, want.media);
}

TEST(SendForwarding, AbsentOptionalsStayAbsent) {
  proto::SendFrame f;
  f.client_msg_id = "c";
  f.conversation_id = "d-1";
  auto r = send_forwarding::decode_request(send_forwarding::encode_request(DeviceRef{"bob", 1}, f));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->second.body);
  EXPECT_FALSE(r->second.reply_to);
  EXPECT_FALSE(r->second.ttl_seconds);
  EXPECT_FALSE(r->second.keys);
  EXPECT_TRUE(r->second.bodies.empty());
}

TEST(SendForwarding, EveryTruncationAndTrailingBytesAreRefused) {
  const std::string wire = send_forwarding::encode_request(DeviceRef{"alice", 3}, full_frame());
  for (size_t len = 0; len < wire.size(); ++len)
    EXPECT_FALSE(send_forwarding::decode_request(wire.substr(0, len))) << len;
  EXPECT_FALSE(send_forwarding::decode_request(wire + "x"));
  std::string other_version = wire;
  other_version[0] = 9;
  EXPECT_FALSE(send_forwarding::decode_request(other_version));
}

TEST(SendForwarding, AHugeCountIsRefusedWithoutReserving) {
  proto::SendFrame f;
  f.client_msg_id = "c";
  f.conversation_id = "d-1";
  std::string wire = send_forwarding::encode_request(DeviceRef{"bob", 1}, f);
  // The bodies count sits after the fixed fields: find it as the first of three zero counts
  // at the end (bodies, registration ids, media), and claim 4 billion bodies.
  ASSERT_GE(wire.size(), 12u);
  const size_t at = wire.size() - 12;
  wire[at] = wire[at + 1] = wire[at + 2] = wire[at + 3] = static_cast<char>(0xff);
  auto r = send_forwarding::decode_request(wire);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
}

TEST(SendForwarding, AnswersKeepTheInfoOrTheError) {
  SentInfo info{"cmid-1", "g-abc", 42, 1700000000123};
  auto ok = send_forwarding::decode_response(send_forwarding::encode_response(info));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->client_msg_id, info.client_msg_id);
  EXPECT_EQ(ok->conversation_id, info.conversation_id);
  EXPECT_EQ(ok->seq, 42u);
  EXPECT_EQ(ok->ts, info.ts);

  Error e = make_error(ErrorCode::kDeviceMismatch, "bodies do not match the member devices");
  e.detail_json = R"({"missing":["bob:2"],"extra":[]})";
  auto err = send_forwarding::decode_response(send_forwarding::encode_response(Result<SentInfo>(e)));
  ASSERT_FALSE(err);
  EXPECT_EQ(err.error().code, ErrorCode::kDeviceMismatch);
  EXPECT_EQ(err.error().message, e.message);
  EXPECT_EQ(err.error().detail_json, e.detail_json);
}

// Every error code a node can answer with survives the trip, up to kLastErrorCode (base/
// error.h); a code past it (a newer node's) and kOk (not an error) read as malformed.
TEST(SendForwarding, EveryErrorCodeRoundTripsAndOnePastTheLastIsRefused) {
  const int last = static_cast<int>(kLastErrorCode);
  ASSERT_GT(last, static_cast<int>(ErrorCode::kOk));
  for (int c = static_cast<int>(ErrorCode::kOk) + 1; c <= last; ++c) {
    const auto code = static_cast<ErrorCode>(c);
    Error e = make_error(code, "because " + std::string(code_name(code)));
    e.detail_json = R"("n":)" + std::to_string(c);
    auto r = send_forwarding::decode_response(send_forwarding::encode_response(Result<SentInfo>(e)));
    ASSERT_FALSE(r) << c;
    EXPECT_EQ(r.error().code, code) << code_name(code);
    EXPECT_EQ(r.error().message, e.message);
    EXPECT_EQ(r.error().detail_json, e.detail_json);
  }
  for (int bad : {static_cast<int>(ErrorCode::kOk), last + 1}) {
    auto r = send_forwarding::decode_response(
        send_forwarding::encode_response(Result<SentInfo>(make_error(static_cast<ErrorCode>(bad), "x"))));
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable) << bad;
    EXPECT_NE(r.error().message.find("bad error answer"), std::string::npos) << r.error().message;
  }
}

TEST(SendForwarding, AMalformedOrEmptyAnswerIsUnavailable) {
  for (std::string bad : {std::string(), std::string("k"), std::string("z123"), std::string("e\xff\xff\xff\xff")}) {
    auto r = send_forwarding::decode_response(bad);
    ASSERT_FALSE(r) << bad.size();
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  }
  const std::string good = send_forwarding::encode_response(SentInfo{"c", "d", 1, 2});
  for (size_t len = 0; len < good.size(); ++len) EXPECT_FALSE(send_forwarding::decode_response(good.substr(0, len)));
}

}  // namespace
}  // namespace tern::services
