// The RFC 6455 frame parser on its own: whole and byte by byte, fragments, limits, errors.
#include "gateway/gateway_test_fixture.h"

namespace tern::gateway::gwtest {
namespace {

// --- The frame parser ----------------------------------------------------------------------------

struct Parsed {
  std::vector<ws::Event::Kind> kinds;
  std::vector<std::string> payloads;
  std::vector<uint16_t> codes;
};

// Feeds `bytes` to a parser `chunk` bytes at a time, keeping unconsumed bytes as the
// session does; stops at the first error.
Parsed parse_all(const std::string& bytes, size_t max, size_t chunk) {
  ws::FrameParser parser;
  Parsed out;
  std::string buffer;
  for (size_t at = 0; at < bytes.size(); at += chunk) {
    buffer.append(bytes, at, chunk);
    for (int guard = 0; guard < 1000; ++guard) {
      size_t consumed = 0;
      const ws::Event e = parser.next(buffer.data(), buffer.size(), max, &consumed);
      if (e.kind != ws::Event::kNeedMore && e.kind != ws::Event::kFragment) {
        out.kinds.push_back(e.kind);
        out.payloads.emplace_back(e.payload);  // the view is valid until the buffer changes
        out.codes.push_back(e.code);
      }
      buffer.erase(0, consumed);
      if (e.kind == ws::Event::kNeedMore) break;
      if (e.kind == ws::Event::kError) return out;
    }
  }
  return out;
}

TEST(WsCodec, ParsesMaskedFramesWholeAndByteByByte) {
  const std::string bytes = text_frame("hello") + client_frame(0x89, "ping!") + text_frame(std::string(300, 'x')) +
                            text_frame(std::string(70000, 'y')) + client_frame(0x88, std::string("\x03\xe8" "bye", 5));
  for (size_t chunk : {bytes.size(), size_t{1}, size_t{7}, size_t{4096}}) {
    const Parsed p = parse_all(bytes, 1 << 20, chunk);
    ASSERT_EQ(p.kinds.size(), 5u) << "chunk " << chunk;
    EXPECT_EQ(p.kinds[0], ws::Event::kText);
    EXPECT_EQ(p.payloads[0], "hello");
    EXPECT_EQ(p.kinds[1], ws::Event::kPing);
    EXPECT_EQ(p.payloads[1], "ping!");
    EXPECT_EQ(p.payloads[2], std::string(300, 'x'));
    EXPECT_EQ(p.payloads[3], std::string(70000, 'y'));
    EXPECT_EQ(p.kinds[4], ws::Event::kClose);
    EXPECT_EQ(p.codes[4], 1000);
    EXPECT_EQ(p.payloads[4], "bye");
  }
}

TEST(WsCodec, ReassemblesFragmentsWithControlFramesBetween) {
  // "Hel" (text, no FIN), ping, "lo " (continuation), pong, "world" (continuation, FIN).
  const std::string bytes = client_frame(0x01, "Hel") + client_frame(0x89, "p1") + client_frame(0x00, "lo ") +
                            client_frame(0x8A, "") + client_frame(0x80, "world") + text_frame("next");
  for (size_t chunk : {bytes.size(), size_t{1}}) {
    const Parsed p = parse_all(bytes, 1024, chunk);
    ASSERT_EQ(p.kinds.size(), 4u);
    EXPECT_EQ(p.kinds[0], ws::Event::kPing);
    EXPECT_EQ(p.payloads[0], "p1");
    EXPECT_EQ(p.kinds[1], ws::Event::kPong);
    EXPECT_EQ(p.kinds[2], ws::Event::kText);
    EXPECT_EQ(p.payloads[2], "Hello world");
    EXPECT_EQ(p.payloads[3], "next");
  }
}

TEST(WsCodec, RefusesOversizeAsSoonAsTheHeaderArrives) {
  // A single frame over the limit: only its header is given, no payload yet.
  const std::string frame = text_frame(std::string(2000, 'a'));
  ws::FrameParser parser;
  std::string header = frame.substr(0, 8);  // 2 + 2 (length) + 4 (mask)
  size_t consumed = 0;
  ws::Event e = parser.next(header.data(), header.size(), 1024, &consumed);
  EXPECT_EQ(e.kind, ws::Event::kError);
  EXPECT_EQ(e.code, ws::kCloseTooBig);
  // Fragments that together exceed the limit.
  const Parsed p = parse_all(client_frame(0x01, std::string(600, 'a')) + client_frame(0x80, std::string(600, 'b')), 1024,
                             1);
  ASSERT_EQ(p.kinds.size(), 1u);
  EXPECT_EQ(p.kinds[0], ws::Event::kError);
  EXPECT_EQ(p.codes[0], ws::kCloseTooBig);
  // At the limit is fine.
  const Parsed ok = parse_all(client_frame(0x01, std::string(512, 'a')) + client_frame(0x80, std::string(512, 'b')),
                              1024, 100);
  ASSERT_EQ(ok.kinds.size(), 1u);
  EXPECT_EQ(ok.kinds[0], ws::Event::kText);
  EXPECT_EQ(ok.payloads[0].size(), 1024u);
}

TEST(WsCodec, ProtocolErrors) {
  auto first_error = [](const std::string& bytes) {
    const Parsed p = parse_all(bytes, 1024, bytes.size());
    return p.kinds.empty() || p.kinds.back() != ws::Event::kError ? uint16_t{0} : p.codes.back();
  };
  std::string unmasked = text_frame("abc");
  unmasked[1] = static_cast<char>(unmasked[1] & 0x7F);
  EXPECT_EQ(first_error(unmasked), ws::kCloseProtocol);
  EXPECT_EQ(first_error(client_frame(0x82, "bin")), ws::kCloseUnsupported);
  EXPECT_EQ(first_error(client_frame(0xC1, "rsv")), ws::kCloseProtocol);
  EXPECT_EQ(first_error(client_frame(0x80, "cont")), ws::kCloseProtocol);         // nothing to continue
  EXPECT_EQ(first_error(client_frame(0x01, "a") + text_frame("b")), ws::kCloseProtocol);  // continuation expected
  EXPECT_EQ(first_error(client_frame(0x09, "ping")), ws::kCloseProtocol);          // fragmented control frame
  EXPECT_EQ(first_error(client_frame(0x89, std::string(126, 'p'))), ws::kCloseProtocol);
  EXPECT_EQ(first_error(client_frame(0x88, "x")), ws::kCloseProtocol);            // 1-byte close payload
  EXPECT_EQ(first_error(client_frame(0x88, std::string("\x03\xed", 2))), ws::kCloseProtocol);  // 1005 on the wire
  EXPECT_EQ(first_error(client_frame(0x83, "op")), ws::kCloseProtocol);            // reserved opcode
  const Parsed empty_close = parse_all(client_frame(0x88, ""), 1024, 1);
  ASSERT_EQ(empty_close.kinds.size(), 1u);
  EXPECT_EQ(empty_close.kinds[0], ws::Event::kClose);
  EXPECT_EQ(empty_close.codes[0], ws::kCloseNoStatus);
}

TEST(WsCodec, ServerHeaders) {
  uint8_t h[10];
  ASSERT_EQ(ws::encode_header(ws::kText, 125, h), 2u);
  EXPECT_EQ(h[0], 0x81);
  EXPECT_EQ(h[1], 125);
  ASSERT_EQ(ws::encode_header(ws::kText, 126, h), 4u);
  EXPECT_EQ(h[1], 126);
  EXPECT_EQ(h[2], 0);
  EXPECT_EQ(h[3], 126);
  ASSERT_EQ(ws::encode_header(ws::kPong, 65536, h), 10u);
  EXPECT_EQ(h[0], 0x8A);
  EXPECT_EQ(h[1], 127);
  EXPECT_EQ(h[7], 1);
  EXPECT_EQ(h[9], 0);
  EXPECT_EQ(ws::header_size(125), 2u);
  EXPECT_EQ(ws::header_size(65535), 4u);
  EXPECT_EQ(ws::header_size(65536), 10u);
  EXPECT_EQ(ws::close_payload(1008, "slow"), std::string("\x03\xf0slow", 6));
  EXPECT_EQ(ws::close_payload(1000, std::string(200, 'r')).size(), 125u);
}

}  // namespace
}  // namespace tern::gateway::gwtest
