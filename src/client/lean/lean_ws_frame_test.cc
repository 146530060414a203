#include "client/lean/lean_ws_frame.h"

#include <gtest/gtest.h>

#include <string>

namespace tern::client::lean {
namespace {

// A server frame (unmasked) with the given payload length, for parser tests.
std::string server_frame(WsOpcode op, const std::string& payload, bool fin = true) {
  std::string f;
  f.push_back(static_cast<char>((fin ? 0x80 : 0) | static_cast<uint8_t>(op)));
  const size_t n = payload.size();
  if (n < 126) {
    f.push_back(static_cast<char>(n));
  } else if (n <= 0xFFFF) {
    f.push_back(126);
    f.push_back(static_cast<char>(n >> 8));
    f.push_back(static_cast<char>(n));
  } else {
    f.push_back(127);
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>(uint64_t(n) >> (8 * i)));
  }
  return f + payload;
}

TEST(LeanWsFrame, RfcAcceptExample) {
  // RFC 6455 section 1.3.
  EXPECT_EQ(expected_accept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(LeanWsFrame, ClientFrameRoundTripsAtEveryLengthForm) {
  for (size_t len : {0u, 1u, 125u, 126u, 127u, 65535u, 65536u, 70000u}) {
    std::string payload(len, '\0');
    for (size_t i = 0; i < len; ++i) payload[i] = static_cast<char>('a' + i % 26);
    std::string out = "prefix";
    append_client_frame(out, WsOpcode::kText, payload, 0xA1B2C3D4u);
    const std::string_view frame = std::string_view(out).substr(6);
    auto r = parse_frame_header(frame, 1 << 20, /*expect_masked=*/true);
    ASSERT_EQ(r.status, WsParse::kOk) << len;
    EXPECT_TRUE(r.header.fin);
    EXPECT_EQ(r.header.opcode, WsOpcode::kText);
    ASSERT_EQ(r.header.payload_len, len);
    ASSERT_EQ(frame.size(), r.header.header_len + len);
    std::string body(frame.substr(r.header.header_len));
    if (len > 0) {
      EXPECT_NE(body, payload);  // masked on the wire
    }
    apply_mask(body.data(), body.size(), r.header.mask);
    EXPECT_EQ(body, payload);
  }
}

TEST(LeanWsFrame, ParsesServerFramesAndAsksForMore) {
  const std::string payload(300, 'x');
  const std::string f = server_frame(WsOpcode::kText, payload);
  for (size_t cut = 0; cut < 4; ++cut)
    EXPECT_EQ(parse_frame_header(std::string_view(f).substr(0, cut), 1 << 20).status, WsParse::kNeedMore) << cut;
  auto r = parse_frame_header(f, 1 << 20);
  ASSERT_EQ(r.status, WsParse::kOk);
  EXPECT_EQ(r.header.header_len, 4u);
  EXPECT_EQ(r.header.payload_len, 300u);
  EXPECT_FALSE(r.header.masked);
}

TEST(LeanWsFrame, RejectsBadFrames) {
  // Masked frame from the server.
  std::string masked;
  append_client_frame(masked, WsOpcode::kText, "hi", 1);
  EXPECT_EQ(parse_frame_header(masked, 1 << 20).status, WsParse::kError);
  // Reserved bit.
  std::string rsv = server_frame(WsOpcode::kText, "hi");
  rsv[0] = static_cast<char>(rsv[0] | 0x40);
  EXPECT_EQ(parse_frame_header(rsv, 1 << 20).status, WsParse::kError);
  // Unknown opcode.
  std::string op = server_frame(WsOpcode::kText, "hi");
  op[0] = static_cast<char>(0x83);
  EXPECT_EQ(parse_frame_header(op, 1 << 20).status, WsParse::kError);
  // Control frame too long / fragmented.
  EXPECT_EQ(parse_frame_header(server_frame(WsOpcode::kPing, std::string(126, 'p')), 1 << 20).status, WsParse::kError);
  EXPECT_EQ(parse_frame_header(server_frame(WsOpcode::kPing, "p", false), 1 << 20).status, WsParse::kError);
  // Over the limit.
  EXPECT_EQ(parse_frame_header(server_frame(WsOpcode::kText, std::string(1000, 'a')), 999).status, WsParse::kError);
}

TEST(LeanWsFrame, UpgradeResponseChecks) {
  const std::string key = "dGhlIHNhbXBsZSBub25jZQ==";
  const std::string good =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
      "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
  EXPECT_TRUE(check_upgrade_response(good, key).ok());
  auto refused = check_upgrade_response("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", key);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message, "http 401");
  const std::string wrong =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: nope\r\n\r\n";
  EXPECT_FALSE(check_upgrade_response(wrong, key).ok());
  EXPECT_FALSE(check_upgrade_response("garbage\r\n\r\n", key).ok());
}

TEST(LeanWsFrame, UpgradeRequestCarriesTokenAndKey) {
  const std::string r = make_upgrade_request("127.0.0.1:8080", "/v1/ws", "KEY==", "tok");
  EXPECT_EQ(r.rfind("GET /v1/ws HTTP/1.1\r\n", 0), 0u);
  EXPECT_NE(r.find("Sec-WebSocket-Key: KEY==\r\n"), std::string::npos);
  EXPECT_NE(r.find("Authorization: Bearer tok\r\n"), std::string::npos);
  EXPECT_EQ(r.substr(r.size() - 4), "\r\n\r\n");
  EXPECT_EQ(make_handshake_key(1, 2).size(), 24u);
}

}  // namespace
}  // namespace tern::client::lean
