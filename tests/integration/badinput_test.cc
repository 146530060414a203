// Integration: bad input of every kind gets an `error` frame or an HTTP error with its stable
// code, affects only the offending connection, and loses no stored data. Bad tokens are
// refused (WebSocket: 401 before the upgrade, header and ?token=; HTTP: 401).
#include <gtest/gtest.h>

#include "support/server_test.h"

namespace tern::test {
namespace {

std::string nested(int depth) {
  std::string s = R"({"type":"send","client_msg_id":"deep","conversation_id":"c","body":"aGk=","x":)";
  for (int i = 0; i < depth; ++i) s += "[";
  for (int i = 0; i < depth; ++i) s += "]";
  return s + "}";
}

class TerndBadInput : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_server({"--send-rate", "100000", "--send-burst", "100000"}));
    alice = api().must_register("alice");
    alice2 = api().must_link(alice);
    bob = api().must_register("bob");
    carol = api().must_register("carol");
    conv = api().must_direct(alice.token, "bob");
    foreign = api().must_direct(bob.token, "carol");  // alice is not a member
    ASSERT_FALSE(conv.empty());
    ASSERT_FALSE(foreign.empty());
    victim = std::make_unique<Device>(alice);
    watcher = std::make_unique<Device>(alice2);
    bystander = std::make_unique<Device>(bob);
    for (Device* d : {victim.get(), watcher.get(), bystander.get()}) ASSERT_TRUE(d->connect_synced(port()));
  }

  // The server still serves: health, the bystander's connection carries a new message to
  // alice's other device, and the log is intact (dense, every earlier good send present).
  void expect_healthy(const std::string& after) {
    SCOPED_TRACE("after " + after);
    EXPECT_EQ(api().healthz().status, 200);
    ASSERT_TRUE(bystander->is_open()) << "a bystander connection was closed";
    const std::string id = "ok-" + std::to_string(++good_);
    const Seq s = bystander->must_send(conv, id, id);
    ASSERT_GT(s, 0u);
    good_seqs_.push_back(s);
    auto m = watcher->read_until([&](const json::object& f) { return type_of(f) == "message" && seq_of(f) == s; });
    EXPECT_TRUE(m) << "alice's other device did not get " << id;
    Seq head = 0;
    auto log = api().backfill_all(alice.token, conv, 0, &head);
    std::vector<Seq> seqs;
    for (const auto& x : log) seqs.push_back(seq_of(x));
    EXPECT_TRUE(dense_range(seqs, 1, head));
    EXPECT_EQ(head, s) << "a bad frame must not have stored anything";
  }

  // Sends one bad text frame on the victim connection and expects an error frame with `code`
  // (and `ref` when given), the victim staying connected.
  void expect_error_frame(const std::string& name, const std::string& frame, const std::string& code,
                          const std::string& ref = {}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(victim->send_text(frame)) << "could not write the frame";
    std::vector<json::object> seen;
    auto e = victim->read_until("error", ms(5000), &seen);
    ASSERT_TRUE(e) << name << ": no error frame" << (victim->closed() ? " (connection closed)" : "") << ":\n"
                   << dump_frames(seen);
    EXPECT_EQ(jstr(*e, "code"), code) << name << ": " << dump(*e);
    EXPECT_FALSE(jstr(*e, "message").empty()) << dump(*e);
    if (!ref.empty()) {
      EXPECT_EQ(jstr(*e, "ref"), ref) << name << ": " << dump(*e);
    }
    EXPECT_TRUE(victim->is_open()) << name << ": the offending connection was closed for a recoverable error";
    expect_healthy(name);
  }

  json::object send_frame(const std::string& id) {
    return json::object{{"type", "send"}, {"client_msg_id", id}, {"conversation_id", conv}, {"body", b64("hi")}};
  }

  Account alice, alice2, bob, carol;
  std::string conv, foreign;
  std::unique_ptr<Device> victim, watcher, bystander;
  json::object f_;
  int good_ = 0;
  std::vector<Seq> good_seqs_;
};

TEST_F(TerndBadInput, MalformedJson) {
  expect_error_frame("not json", "hello there", "malformed");
  expect_error_frame("truncated", R"({"type":"send","client_msg_id":)", "malformed");
  expect_error_frame("array", "[1,2,3]", "malformed");
  expect_error_frame("string", R"("send")", "malformed");
  expect_error_frame("number", "42", "malformed");
  expect_error_frame("empty object", "{}", "malformed");
  expect_error_frame("trailing garbage", R"({"type":"typing"} junk)", "malformed");
}

TEST_F(TerndBadInput, WrongTypes) {
  expect_error_frame("type is a number", R"({"type":5})", "malformed");
  auto f = send_frame("wt-1");
  f["body"] = 5;
  expect_error_frame("body is a number", json::serialize(f), "malformed", "wt-1");
  f = send_frame("wt-2");
  f["conversation_id"] = 7;
  expect_error_frame("conversation_id is a number", json::serialize(f), "malformed", "wt-2");
  f = send_frame("wt-3");
  f.erase("body");
  expect_error_frame("send without body", json::serialize(f), "malformed", "wt-3");
  f = send_frame("wt-4");
  f["bodies"] = "not an object";
  f.erase("body");
  expect_error_frame("bodies is a string", json::serialize(f), "malformed", "wt-4");
  f = send_frame("wt-5");
  f["reply_to"] = "one";
  expect_error_frame("reply_to is a string", json::serialize(f), "malformed", "wt-5");
  expect_error_frame("send client_msg_id is a number",
                     R"({"type":"send","client_msg_id":1,"conversation_id":")" + conv + R"(","body":"aGk="})",
                     "malformed");
  expect_error_frame("ack seq is a string", R"({"type":"ack","conversation_id":")" + conv + R"(","seq":"7"})",
                     "malformed");
  expect_error_frame("ack seq negative", R"({"type":"ack","conversation_id":")" + conv + R"(","seq":-1})",
                     "malformed");
  expect_error_frame("read without seq", R"({"type":"read","conversation_id":")" + conv + R"("})", "malformed");
  expect_error_frame("typing active is a string",
                     R"({"type":"typing","conversation_id":")" + conv + R"(","active":"yes"})", "malformed");
  expect_error_frame("presence users not array", R"({"type":"presence_subscribe","users":"bob"})", "malformed");
}

TEST_F(TerndBadInput, InvalidValues) {
  f_ = send_frame("");
  expect_error_frame("empty client_msg_id", json::serialize(f_), "invalid_argument");
  f_ = send_frame(std::string(65, 'c'));
  expect_error_frame("65-char client_msg_id", json::serialize(f_), "invalid_argument");
  f_ = send_frame("iv-1");
  f_["conversation_id"] = std::string(129, 'c');
  expect_error_frame("129-char conversation_id", json::serialize(f_), "invalid_argument", "iv-1");
  f_ = send_frame("iv-2");
  f_.erase("body");
  f_["bodies"] = json::object{{"not-a-device-key", b64("x")}};
  expect_error_frame("bad bodies key", json::serialize(f_), "invalid_argument", "iv-2");
  expect_error_frame("bad user in presence", R"({"type":"presence_subscribe","users":["Not Valid"]})",
                     "invalid_argument");
}

TEST_F(TerndBadInput, UnknownTypeAndUnknownFields) {
  expect_error_frame("unknown type", R"({"type":"frobnicate","conversation_id":"x"})", "unknown_type");
  expect_error_frame("empty type", R"({"type":""})", "unknown_type");
  // Unknown fields are ignored.
  auto f = send_frame("extra-fields");
  f["zzz"] = json::object{{"nested", true}};
  f["another"] = 3;
  ASSERT_TRUE(victim->send_json(f));
  auto a = victim->wait_answer("extra-fields");
  ASSERT_TRUE(a);
  EXPECT_EQ(type_of(*a), "sent") << dump(*a);
}

TEST_F(TerndBadInput, InvalidBase64) {
  for (const char* bad : {"!!!notbase64", "aGk", "aGk=aGk=", "a", "aG=k", "aGk==="}) {
    auto f = send_frame(std::string("b64-") + bad);
    f["body"] = bad;
    expect_error_frame(std::string("body '") + bad + "'", json::serialize(f), "malformed", std::string("b64-") + bad);
  }
  auto f = send_frame("b64-bodies");
  f.erase("body");
  f["bodies"] = json::object{{"bob:1", "%%%"}, {"alice:2", b64("ok")}};
  expect_error_frame("bodies entry", json::serialize(f), "malformed", "b64-bodies");
}

TEST_F(TerndBadInput, DeepNesting) {
  expect_error_frame("nesting 100", nested(100), "malformed");
  expect_error_frame("nesting 50000", nested(50000), "malformed");
}

TEST_F(TerndBadInput, UnknownConversationAndNonMember) {
  auto f = send_frame("nc-1");
  f["conversation_id"] = "no-such-conversation";
  // One answer for "unknown" and "not a member" (issue 8): an id tells a non-member nothing.
  expect_error_frame("unknown conversation", json::serialize(f), "forbidden", "nc-1");
  f = send_frame("nm-1");
  f["conversation_id"] = foreign;
  expect_error_frame("non-member send", json::serialize(f), "forbidden", "nm-1");
  EXPECT_EQ(api().head(bob.token, foreign), 0u) << "the refused send must not be stored";

  // Typing into a conversation one is not a member of never reaches its members.
  Device dc(carol);
  ASSERT_TRUE(dc.connect_synced(port()));
  victim->typing(foreign, true);
  for (Device* d : {bystander.get(), &dc})
    for (const auto& x : d->drain(ms(500)))
      EXPECT_FALSE(type_of(x) == "typing" && jstr(x, "user") == "alice") << "typing leaked: " << dump(x);
  // Nor do acks/reads for it produce receipts or break anything.
  victim->ack(foreign, 1);
  victim->read(foreign, 1);
  victim->drain(ms(300));
  EXPECT_TRUE(victim->is_open());
  expect_healthy("non-member ack/read/typing");

  auto bf = api().messages(alice.token, foreign, 0, 10);
  EXPECT_EQ(bf.status, 403) << bf.body;
  EXPECT_EQ(bf.error_code(), "forbidden") << bf.body;
  auto unknown = api().messages(alice.token, "no-such-conversation", 0, 10);
  EXPECT_EQ(unknown.status, bf.status) << unknown.body;
  EXPECT_EQ(unknown.body, bf.body) << "an unknown conversation must answer like a foreign one";
}

TEST_F(TerndBadInput, OversizeFrameAndBinaryFrame) {
  // Over the default 256 KiB frame limit: an error or a close of this connection only.
  auto f = send_frame("huge");
  f["pad"] = std::string(300 * 1024, 'p');
  victim->send_text(json::serialize(f));
  std::vector<json::object> seen;
  auto e = victim->read_until([](const json::object& x) { return type_of(x) == "error" || type_of(x) == "sent"; },
                              ms(5000), &seen);
  if (e) {
    EXPECT_EQ(type_of(*e), "error") << dump(*e);
    EXPECT_EQ(jstr(*e, "code"), "too_large") << dump(*e);
  } else {
    EXPECT_TRUE(victim->closed()) << "neither error nor close:\n" << dump_frames(seen);
  }
  expect_healthy("oversize frame");

  Device v2(alice);
  ASSERT_TRUE(v2.connect_synced(port()));
  v2.send_binary(R"({"type":"typing","conversation_id":"x","active":true})");
  seen.clear();
  auto be = v2.read_until("error", ms(3000), &seen);
  EXPECT_TRUE(be || v2.closed()) << "binary frame got neither an error nor a close:\n" << dump_frames(seen);
  expect_healthy("binary frame");
}

TEST_F(TerndBadInput, BadTokenOnWebSocketIsRefusedBeforeUpgrade) {
  WsClient ws;
  EXPECT_EQ(ws.connect_ws(port(), "junk-token"), 401);
  WsOptions q;
  q.token_in_query = true;
  EXPECT_EQ(ws.connect_ws(port(), "junk-token", q), 401);
  EXPECT_EQ(ws.connect_ws(port(), ""), 401);
  // A real token with a byte changed.
  std::string t = alice.token;
  t[t.size() / 2] = t[t.size() / 2] == 'A' ? 'B' : 'A';
  EXPECT_EQ(ws.connect_ws(port(), t), 401);
  EXPECT_EQ(ws.connect_ws(port(), t, q), 401);
  RawConn raw;
  EXPECT_EQ(raw.ws_upgrade(port(), ""), 401) << raw.received();
  expect_healthy("bad ws tokens");
}

TEST_F(TerndBadInput, BadTokenOnHttpIs401) {
  for (const std::string& tok : {std::string("junk"), std::string("")}) {
    auto r = http_request(port(), "GET", "/v1/conversations", std::nullopt, tok);
    EXPECT_EQ(r.status, 401) << "token '" << tok << "': " << r.body;
    EXPECT_EQ(r.error_code(), "unauthorized") << r.body;
    auto d = http_request(port(), "POST", "/v1/devices", "{}", tok);
    EXPECT_EQ(d.status, 401) << d.body;
    auto c = http_request(port(), "POST", "/v1/conversations", R"({"type":"direct","members":["bob"]})", tok);
    EXPECT_EQ(c.status, 401) << c.body;
    auto m = http_request(port(), "GET", "/v1/conversations/" + conv + "/messages", std::nullopt, tok);
    EXPECT_EQ(m.status, 401) << m.body;
    EXPECT_EQ(m.error_code(), "unauthorized") << m.body;
  }
  RawConn raw;
  ASSERT_TRUE(raw.connect(port()));
  raw.write_all("GET /v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6eA==\r\nConnection: close\r\n\r\n");
  raw.wait_eof(ms(5000));
  EXPECT_NE(raw.received().find(" 401 "), std::string::npos) << raw.received();
  expect_healthy("bad http tokens");
}

TEST_F(TerndBadInput, HttpBadBodies) {
  auto check = [&](const std::string& name, const HttpResult& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << name << ": " << r.body;
    EXPECT_EQ(r.error_code(), code) << name << ": " << r.body;
    EXPECT_TRUE(r.obj().contains("message")) << name << ": " << r.body;
  };
  check("register not json", http_request(port(), "POST", "/v1/users", "not json"), 400, "malformed");
  check("register array", http_request(port(), "POST", "/v1/users", "[]"), 400, "malformed");
  check("register deep", http_request(port(), "POST", "/v1/users", nested(5000)), 400, "malformed");
  check("register oversize", http_request(port(), "POST", "/v1/users", R"({"user":")" + std::string(200 * 1024, 'a') + "\"}"),
        413, "too_large");
  const std::string& t = alice.token;
  check("conversation type", http_request(port(), "POST", "/v1/conversations", R"({"type":"weird","members":["bob"]})", t),
        400, "invalid_argument");
  check("conversation members string",
        http_request(port(), "POST", "/v1/conversations", R"({"type":"direct","members":"bob"})", t), 400, "malformed");
  check("direct with two others",
        http_request(port(), "POST", "/v1/conversations", R"({"type":"direct","members":["bob","carol"]})", t), 400,
        "invalid_argument");
  check("conversation not json", http_request(port(), "POST", "/v1/conversations", "{", t), 400, "malformed");
  check("members empty", http_request(port(), "POST", "/v1/conversations/" + conv + "/members", "{}", t), 400,
        "malformed");
  check("unknown path", http_request(port(), "GET", "/v1/nope", std::nullopt, t), 404, "not_found");

  auto bad_after = http_request(port(), "GET", "/v1/conversations/" + conv + "/messages?after_seq=abc", std::nullopt, t);
  EXPECT_EQ(bad_after.status, 400) << bad_after.body;
  EXPECT_TRUE(bad_after.error_code() == "malformed" || bad_after.error_code() == "invalid_argument") << bad_after.body;
  auto bad_limit = http_request(port(), "GET", "/v1/conversations/" + conv + "/messages?limit=-5", std::nullopt, t);
  EXPECT_EQ(bad_limit.status, 400) << bad_limit.body;

  // A request that is not HTTP at all: an error answer or a closed socket, nothing else.
  RawConn raw;
  ASSERT_TRUE(raw.connect(port()));
  raw.write_all("\x01\x02GARBAGE \xff\xfe\r\n\r\n");
  EXPECT_TRUE(raw.wait_eof(ms(10000)) || raw.received().find(" 400 ") != std::string::npos) << raw.received();
  expect_healthy("http bad bodies");
}

}  // namespace
}  // namespace tern::test
