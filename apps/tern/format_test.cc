// Offline tests of tern's formatting and terminal helpers (part of tern_cli_test).
#include <gtest/gtest.h>

#include "client/attachments.h"
#include "format.h"
#include "terminal.h"

namespace tern::cli {
namespace {

TEST(Format, SystemMessagesAsSentences) {
  EXPECT_EQ(system_sentence(R"({"action":"add","by":"uma","users":["carol"]})"), "uma added carol");
  EXPECT_EQ(system_sentence(R"({"action":"remove","by":"uma","users":["carol","dave"]})"), "uma removed carol and dave");
  EXPECT_EQ(system_sentence(R"({"action":"remove","by":"carol","users":["carol"]})"), "carol left");
  EXPECT_EQ(system_sentence(R"({"action":"create","by":"carol","name":"climbing","users":["carol","alice","bob"]})"),
            "carol created the group climbing with alice and bob");
  EXPECT_EQ(system_sentence(R"({"action":"rename","by":"x"})"), "membership changed (rename)");
  EXPECT_EQ(system_sentence("not json"), "membership changed");
  EXPECT_EQ(join_names({"a", "b", "c"}), "a, b and c");
  EXPECT_EQ(system_sentence(R"({"action":"add","by":"u","users":["\u001b[2J"]})"), "u added ?[2J");
}

TEST(Format, TimersAttachmentsAndExpiredMessages) {
  EXPECT_EQ(system_sentence(R"({"action":"timer","by":"uma","seconds":3600})"),
            "uma turned on disappearing messages: 1 h");
  EXPECT_EQ(system_sentence(R"({"action":"timer","by":"uma","seconds":604800})"),
            "uma turned on disappearing messages: 7 d");
  EXPECT_EQ(system_sentence(R"({"action":"timer","by":"uma","seconds":0})"), "uma turned off disappearing messages");
  EXPECT_EQ(duration_text(90), "90 s");
  client::Message m;
  m.conversation_id = "d-1";
  m.seq = 4;
  m.body = "plain";
  EXPECT_EQ(message_text(m, 1000), "plain");
  m.expires_at = 1000;
  EXPECT_EQ(message_text(m, 999), "plain");
  EXPECT_EQ(message_text(m, 1000), "(expired)");
  m.expires_at.reset();
  client::Attachment a{std::string(64, 'a'), std::string(32, 'k'), 1234, "image/jpeg", "../../etc/pic.jpg"};
  m.body = client::encode_attachment_body("look", {a});
  EXPECT_EQ(message_text(m, 0),
            "look [attachment ../../etc/pic.jpg, 1234 bytes, image/jpeg; save: tern download d-1 4]");
}

TEST(Terminal, UntrustedTextIsMadePrintable) {
  EXPECT_EQ(printable("hi\x1b[2Jthere"), "hi?[2Jthere");
  EXPECT_EQ(printable("tab\tnl\n"), "tab nl?");
  EXPECT_EQ(printable("ok ✓"), "ok ✓");
  EXPECT_EQ(printable("\xc2\x9b" "x"), "?x");       // C1 CSI
  EXPECT_EQ(printable("\xff"), "\xEF\xBF\xBD");      // invalid UTF-8
  EXPECT_EQ(clip("héllo", 2), "hé");
  EXPECT_EQ(width("✓✓ read"), 7u);
  std::string s = "añ✓";
  pop_code_point(s);
  EXPECT_EQ(s, "añ");
  pop_code_point(s);
  EXPECT_EQ(s, "a");
  EXPECT_TRUE(valid_utf8("✓"));
  EXPECT_FALSE(valid_utf8("\xe2\x9c"));
}

}  // namespace
}  // namespace tern::cli
