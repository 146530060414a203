// The MQTT 3.1.1 packet codec against byte sequences written out from the specification
// (OASIS MQTT 3.1.1, sections 2 and 3), and the remaining-length varint at its edges.
#include "client/lean/lean_mqtt.h"

#include <gtest/gtest.h>

#include <string>

namespace tern::client::lean {
namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

TEST(LeanMqtt, RemainingLengthEdges) {
  // 2.2.3: one byte up to 127, two up to 16,383, three up to 2,097,151, four up to 268,435,455.
  const struct {
    uint32_t n;
    std::string enc;
  } cases[] = {
      {0, bytes({0x00})},
      {127, bytes({0x7F})},
      {128, bytes({0x80, 0x01})},
      {16383, bytes({0xFF, 0x7F})},
      {16384, bytes({0x80, 0x80, 0x01})},
      {2097151, bytes({0xFF, 0xFF, 0x7F})},
      {2097152, bytes({0x80, 0x80, 0x80, 0x01})},
      {268435455, bytes({0xFF, 0xFF, 0xFF, 0x7F})},
  };
  for (const auto& c : cases) {
    std::string out;
    mqtt_append_remaining_length(out, c.n);
    EXPECT_EQ(out, c.enc) << c.n;
    const auto v = mqtt_parse_remaining_length(c.enc + "rest");
    ASSERT_EQ(v.status, MqttParse::kOk) << c.n;
    EXPECT_EQ(v.value, c.n);
    EXPECT_EQ(v.used, c.enc.size());
    // Every strict prefix asks for more.
    for (size_t cut = 0; cut < c.enc.size(); ++cut)
      EXPECT_EQ(mqtt_parse_remaining_length(c.enc.substr(0, cut)).status, MqttParse::kNeedMore) << c.n << " " << cut;
  }
  // A fifth byte is never valid.
  EXPECT_EQ(mqtt_parse_remaining_length(bytes({0xFF, 0xFF, 0xFF, 0xFF, 0x01})).status, MqttParse::kError);
  EXPECT_EQ(mqtt_parse_remaining_length(bytes({0x80, 0x80, 0x80, 0x80})).status, MqttParse::kError);
}

TEST(LeanMqtt, FixedHeaderAtTheVarintEdges) {
  for (uint32_t n : {127u, 128u, 16383u, 16384u}) {
    std::string pkt(1, static_cast<char>(0x30));  // PUBLISH QoS 0
    mqtt_append_remaining_length(pkt, n);
    const size_t header = pkt.size();
    pkt.append(n, 'p');
    const auto r = mqtt_parse_header(pkt, 1 << 20);
    ASSERT_EQ(r.status, MqttParse::kOk) << n;
    EXPECT_EQ(r.header.type, MqttType::kPublish);
    EXPECT_EQ(r.header.remaining_len, n);
    EXPECT_EQ(r.header.header_len, header);
    EXPECT_EQ(r.header.total_len(), pkt.size());
    EXPECT_EQ(mqtt_parse_header(pkt.substr(0, header - 1), 1 << 20).status, MqttParse::kNeedMore);
    EXPECT_EQ(mqtt_parse_header(pkt, pkt.size() - 1).status, MqttParse::kError) << "over max_packet";
  }
  EXPECT_EQ(mqtt_parse_header("", 100).status, MqttParse::kNeedMore);
  EXPECT_EQ(mqtt_parse_header(bytes({0x00, 0x00}), 100).status, MqttParse::kError);  // type 0
  EXPECT_EQ(mqtt_parse_header(bytes({0xF0, 0x00}), 100).status, MqttParse::kError);  // type 15
  EXPECT_EQ(mqtt_parse_header(bytes({0x41, 0x02}), 100).status, MqttParse::kError);  // PUBACK flags
  EXPECT_EQ(mqtt_parse_header(bytes({0x80, 0x00}), 100).status, MqttParse::kError);  // SUBSCRIBE flags 0
  EXPECT_EQ(mqtt_parse_header(bytes({0x36, 0x00}), 100).status, MqttParse::kError);  // PUBLISH QoS 3
}

TEST(LeanMqtt, Connect) {
  std::string out;
  mqtt_append_connect(out, MqttConnect{"ab", 60, true});
  // 3.1: 0x10, remaining 14; "MQTT", level 4, flags clean session, keep-alive 60, client id "ab".
  EXPECT_EQ(out, bytes({0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 2, 'a', 'b'}));
  out.clear();
  mqtt_append_connect(out, MqttConnect{"c", 300, false});
  EXPECT_EQ(out, bytes({0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x00, 0x01, 0x2C, 0, 1, 'c'}));
  const auto h = mqtt_parse_header(out, 100);
  ASSERT_EQ(h.status, MqttParse::kOk);
  EXPECT_EQ(h.header.type, MqttType::kConnect);
  EXPECT_EQ(h.header.total_len(), out.size());
}

TEST(LeanMqtt, Connack) {
  const std::string accepted = bytes({0x20, 0x02, 0x01, 0x00});
  const auto h = mqtt_parse_header(accepted, 100);
  ASSERT_EQ(h.status, MqttParse::kOk);
  EXPECT_EQ(h.header.type, MqttType::kConnack);
  auto a = mqtt_decode_connack(std::string_view(accepted).substr(h.header.header_len));
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->session_present);
  EXPECT_EQ(a->return_code, 0);
  auto refused = mqtt_decode_connack(bytes({0x00, 0x05}));  // not authorised
  ASSERT_TRUE(refused.has_value());
  EXPECT_FALSE(refused->session_present);
  EXPECT_EQ(refused->return_code, 5);
  EXPECT_FALSE(mqtt_decode_connack(bytes({0x02, 0x00})).has_value());  // reserved flag bit
  EXPECT_FALSE(mqtt_decode_connack(bytes({0x00})).has_value());
}

TEST(LeanMqtt, Subscribe) {
  std::string out;
  mqtt_append_subscribe(out, 0x1234, "a/b", 1);
  // 3.8: 0x82, remaining 8: packet id, filter "a/b", requested QoS 1.
  EXPECT_EQ(out, bytes({0x82, 8, 0x12, 0x34, 0, 3, 'a', '/', 'b', 0x01}));
  const auto h = mqtt_parse_header(out, 100);
  ASSERT_EQ(h.status, MqttParse::kOk);
  EXPECT_EQ(h.header.type, MqttType::kSubscribe);
}

TEST(LeanMqtt, Suback) {
  const std::string granted = bytes({0x12, 0x34, 0x01});  // the views point into it
  auto s = mqtt_decode_suback(granted);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->packet_id, 0x1234);
  EXPECT_EQ(s->return_codes, bytes({0x01}));
  const std::string two = bytes({0x00, 0x07, 0x80, 0x00});
  auto failed = mqtt_decode_suback(two);
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(failed->return_codes, bytes({0x80, 0x00}));
  EXPECT_FALSE(mqtt_decode_suback(bytes({0x00, 0x07, 0x03})).has_value());  // no such code
  EXPECT_FALSE(mqtt_decode_suback(bytes({0x00, 0x07})).has_value());        // no code at all
  const auto h = mqtt_parse_header(bytes({0x90, 0x03, 0x12, 0x34, 0x01}), 100);
  ASSERT_EQ(h.status, MqttParse::kOk);
  EXPECT_EQ(h.header.type, MqttType::kSuback);
}

TEST(LeanMqtt, PublishQos1RoundTrip) {
  std::string out;
  mqtt_append_publish(out, "t/1", "hi", 1, 0x0A0B);
  // 3.3: 0x32 (QoS 1), remaining 9: topic "t/1", packet id, payload "hi".
  EXPECT_EQ(out, bytes({0x32, 9, 0, 3, 't', '/', '1', 0x0A, 0x0B, 'h', 'i'}));
  auto h = mqtt_parse_header(out, 100);
  ASSERT_EQ(h.status, MqttParse::kOk);
  auto p = mqtt_decode_publish(h.header.flags, std::string_view(out).substr(h.header.header_len));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->topic, "t/1");
  EXPECT_EQ(p->payload, "hi");
  EXPECT_EQ(p->packet_id, 0x0A0B);
  EXPECT_EQ(p->qos, 1);
  EXPECT_FALSE(p->dup);
  EXPECT_FALSE(p->retain);

  // A retransmission carries DUP; a 100-byte payload (the benchmark's) keeps a 1-byte varint
  // until the topic pushes the packet past 127.
  out.clear();
  const std::string payload(100, 'x');
  mqtt_append_publish(out, "p/x/1/a", payload, 1, 7, /*dup=*/true);
  EXPECT_EQ(static_cast<uint8_t>(out[0]), 0x3A);
  h = mqtt_parse_header(out, 1000);
  ASSERT_EQ(h.status, MqttParse::kOk);
  EXPECT_EQ(h.header.header_len, 2u);
  EXPECT_EQ(h.header.remaining_len, 2 + 7 + 2 + 100u);
  p = mqtt_decode_publish(h.header.flags, std::string_view(out).substr(h.header.header_len));
  ASSERT_TRUE(p.has_value());
  EXPECT_TRUE(p->dup);
  EXPECT_EQ(p->payload, payload);
  out.clear();
  mqtt_append_publish(out, std::string(30, 't'), payload, 1, 7);
  h = mqtt_parse_header(out, 1000);
  ASSERT_EQ(h.status, MqttParse::kOk);
  EXPECT_EQ(h.header.header_len, 3u);  // remaining 134 > 127
  EXPECT_EQ(h.header.total_len(), out.size());

  // QoS 0 has no packet id; malformed ones are refused.
  out.clear();
  mqtt_append_publish(out, "t", "z", 0, 99);
  EXPECT_EQ(out, bytes({0x30, 4, 0, 1, 't', 'z'}));
  EXPECT_FALSE(mqtt_decode_publish(0x2, bytes({0, 1, 't', 0, 0})).has_value());  // packet id 0
  EXPECT_FALSE(mqtt_decode_publish(0x2, bytes({0, 5, 't'})).has_value());        // topic past the end
  EXPECT_FALSE(mqtt_decode_publish(0x8, bytes({0, 1, 't'})).has_value());        // DUP on QoS 0
}

TEST(LeanMqtt, Puback) {
  std::string out;
  mqtt_append_puback(out, 0xBEEF);
  EXPECT_EQ(out, bytes({0x40, 0x02, 0xBE, 0xEF}));
  const auto h = mqtt_parse_header(out, 100);
  ASSERT_EQ(h.status, MqttParse::kOk);
  EXPECT_EQ(h.header.type, MqttType::kPuback);
  auto id = mqtt_decode_packet_id(std::string_view(out).substr(2));
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(*id, 0xBEEF);
  EXPECT_FALSE(mqtt_decode_packet_id(bytes({0, 0})).has_value());
  EXPECT_FALSE(mqtt_decode_packet_id(bytes({0, 1, 2})).has_value());
}

TEST(LeanMqtt, PingAndDisconnect) {
  std::string out;
  mqtt_append_pingreq(out);
  EXPECT_EQ(out, bytes({0xC0, 0x00}));
  out.clear();
  mqtt_append_disconnect(out);
  EXPECT_EQ(out, bytes({0xE0, 0x00}));
  const auto h = mqtt_parse_header(bytes({0xD0, 0x00}), 100);
  ASSERT_EQ(h.status, MqttParse::kOk);
  EXPECT_EQ(h.header.type, MqttType::kPingresp);
  EXPECT_EQ(h.header.total_len(), 2u);
}

}  // namespace
}  // namespace tern::client::lean
