#include "client/lean/lean_verifier.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace tern::client::lean {
namespace {

// Two devices in one direct conversation, three in a group.
struct Fixture {
  Verifier v;
  DeviceIdx a = v.add_device(), b = v.add_device(), c = v.add_device();
  ConvIdx direct = v.add_conversation({a, b});
  ConvIdx group = v.add_conversation({a, b, c});
};

TEST(LeanVerifier, CleanExchangeIsOk) {
  Fixture f;
  f.v.on_acked(f.a, f.direct, 1, 1);
  EXPECT_EQ(f.v.outstanding(), 1u);
  EXPECT_EQ(f.v.on_delivered(f.b, f.direct, 1, MessageKey{f.a, 1}), Verifier::Delivery::kNew);
  EXPECT_EQ(f.v.outstanding(), 0u);
  // Delivery may come before the `sent`.
  EXPECT_EQ(f.v.on_delivered(f.a, f.direct, 2, MessageKey{f.b, 1}), Verifier::Delivery::kNew);
  f.v.on_acked(f.b, f.direct, 2, 1);
  EXPECT_EQ(f.v.outstanding(), 0u);
  auto t = f.v.totals();
  EXPECT_TRUE(t.ok()) << boost::json::serialize(t.to_json());
  EXPECT_EQ(t.acked, 2u);
  EXPECT_EQ(t.expected, 2u);
  EXPECT_EQ(t.delivered, 2u);
  EXPECT_EQ(f.v.device_acked(f.a), 1u);
  EXPECT_EQ(f.v.device_delivered(f.b), 1u);
}

TEST(LeanVerifier, RepeatIsAllowedButCounted) {
  Fixture f;
  f.v.on_acked(f.a, f.direct, 1, 1);
  f.v.on_delivered(f.b, f.direct, 1, MessageKey{f.a, 1});
  EXPECT_EQ(f.v.on_delivered(f.b, f.direct, 1, MessageKey{f.a, 1}), Verifier::Delivery::kRepeat);
  // After a reconnect the replay may repeat it too.
  f.v.on_connection_start(f.b);
  EXPECT_EQ(f.v.on_delivered(f.b, f.direct, 1, MessageKey{f.a, 1}), Verifier::Delivery::kRepeat);
  auto t = f.v.totals();
  EXPECT_TRUE(t.ok());
  EXPECT_EQ(t.redelivered, 2u);
  EXPECT_EQ(t.delivered, 1u);
}

TEST(LeanVerifier, LossIsFoundOnlyForAcknowledgedMessages) {
  Fixture f;
  f.v.on_acked(f.a, f.group, 1, 1);
  f.v.on_delivered(f.b, f.group, 1, MessageKey{f.a, 1});
  // Sent but never acknowledged: not expected anywhere.
  f.v.on_delivered(f.b, f.group, 2, MessageKey{f.a, 2});
  EXPECT_EQ(f.v.outstanding(), 1u);  // c still lacks seq 1
  auto t = f.v.totals();
  EXPECT_FALSE(t.ok());
  EXPECT_EQ(t.losses, 1u);
  EXPECT_EQ(t.devices_with_loss, 1u);
  EXPECT_EQ(t.expected, 2u);
  EXPECT_EQ(t.delivered, 1u);
  EXPECT_EQ(t.delivered_other, 1u);
  ASSERT_FALSE(t.samples.empty());
  EXPECT_NE(t.samples[0].find("never got seq 1"), std::string::npos);
}

TEST(LeanVerifier, OrderIsJudgedPerConnection) {
  Fixture f;
  f.v.on_delivered(f.b, f.direct, 5, MessageKey{f.a, 5});
  EXPECT_EQ(f.v.on_delivered(f.b, f.direct, 3, MessageKey{f.a, 3}), Verifier::Delivery::kOutOfOrder);
  EXPECT_EQ(f.v.totals().order_violations, 1u);
  // A new connection starts over: replaying 4 after a reconnect is fine.
  f.v.on_connection_start(f.b);
  EXPECT_EQ(f.v.on_delivered(f.b, f.direct, 4, MessageKey{f.a, 4}), Verifier::Delivery::kNew);
  EXPECT_EQ(f.v.totals().order_violations, 1u);
  // Order is per conversation: the group has its own counter.
  EXPECT_EQ(f.v.on_delivered(f.b, f.group, 1, std::nullopt), Verifier::Delivery::kNew);
}

TEST(LeanVerifier, OneMessageUnderTwoSeqsIsADuplicate) {
  Fixture f;
  f.v.on_acked(f.a, f.direct, 1, 7);
  // The retry of sender seq 7 got a second seq: idempotency broken.
  f.v.on_delivered(f.b, f.direct, 2, MessageKey{f.a, 7});
  auto t = f.v.totals();
  EXPECT_EQ(t.duplicates, 1u);
  EXPECT_FALSE(t.ok());
  // Seen again by another path: counted once.
  f.v.on_acked(f.a, f.direct, 2, 7);
  EXPECT_EQ(f.v.totals().duplicates, 1u);
}

TEST(LeanVerifier, TwoMessagesUnderOneSeqIsAConflict) {
  Fixture f;
  f.v.on_acked(f.a, f.group, 1, 1);
  f.v.on_delivered(f.c, f.group, 1, MessageKey{f.b, 9});
  EXPECT_EQ(f.v.totals().seq_conflicts, 1u);
}

TEST(LeanVerifier, ForeignEchoAndBadSeq) {
  Verifier v;
  DeviceIdx a = v.add_device(), b = v.add_device(), x = v.add_device();
  ConvIdx c = v.add_conversation({a, b});
  EXPECT_EQ(v.on_delivered(x, c, 1, MessageKey{a, 1}), Verifier::Delivery::kForeign);
  EXPECT_EQ(v.on_delivered(a, c, 1, MessageKey{a, 1}), Verifier::Delivery::kEcho);
  EXPECT_EQ(v.on_delivered(b, c, 0, std::nullopt), Verifier::Delivery::kBadSeq);
  EXPECT_EQ(v.on_delivered(b, c, Verifier::kMaxSeq + 1, std::nullopt), Verifier::Delivery::kBadSeq);
  v.on_acked(a, c, Verifier::kMaxSeq + 5, 1);
  auto t = v.totals();
  EXPECT_EQ(t.foreign, 1u);
  EXPECT_EQ(t.echoes, 1u);
  EXPECT_EQ(t.bad_seqs, 3u);
  EXPECT_EQ(t.violations(), 5u);
}

TEST(LeanVerifier, SystemMessagesNeedNoAck) {
  Fixture f;
  // Group creation: a system message to every member, the creator included.
  for (DeviceIdx d : {f.a, f.b, f.c}) EXPECT_EQ(f.v.on_delivered(d, f.group, 1, std::nullopt), Verifier::Delivery::kNew);
  auto t = f.v.totals();
  EXPECT_TRUE(t.ok());
  EXPECT_EQ(t.delivered_other, 3u);
}

TEST(LeanVerifier, TotalsMergeAndJsonRoundTrip) {
  Fixture f1, f2;
  f1.v.on_acked(f1.a, f1.direct, 1, 1);
  f1.v.on_delivered(f1.b, f1.direct, 1, MessageKey{f1.a, 1});
  f2.v.on_acked(f2.a, f2.direct, 1, 1);  // lost
  auto t = f1.v.totals();
  t.merge(f2.v.totals());
  EXPECT_EQ(t.devices, 6u);
  EXPECT_EQ(t.acked, 2u);
  EXPECT_EQ(t.losses, 1u);
  EXPECT_EQ(t.acked_per_device_max, 1u);
  EXPECT_EQ(t.acked_per_device_min, 0u);
  auto back = VerifierTotals::from_json(boost::json::parse(boost::json::serialize(t.to_json())));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->losses, 1u);
  EXPECT_EQ(back->acked, 2u);
  EXPECT_EQ(back->devices, 6u);
  EXPECT_EQ(back->samples, t.samples);
  EXPECT_FALSE(back->ok());
}

}  // namespace
}  // namespace tern::client::lean
