// History for a newly linked device (history_transfer.h, docs/crypto.md) against a real ternd:
// alice:1 chats with bob and in a group of three, alice links alice:2 with a link code, and
// alice:2's local history gets the last N messages of each conversation, decrypted, over the
// pairwise session alice:1 → alice:2 in alice's self conversation; the server holds only
// ciphertext.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "base/base64.h"
#include "client/api.h"
#include "client/blocking.h"
#include "client/client.h"
#include "client/history_transfer.h"
#include "client/sqlite_store.h"
#include "client/io_thread.h"
#include "client/testing/ternd_fixture.h"

namespace tern::client {
namespace {
using namespace std::chrono_literals;

using testing::eventually;

struct Seen {
  std::atomic<ConnectionState> state{ConnectionState::kDisconnected};
  std::atomic<size_t> history_entries{0};
  std::atomic<size_t> history_events{0};
  std::atomic<size_t> readable_messages{0};  // handed over with a body
  Events events() {
    Events e;
    e.on_state = [this](ConnectionState s, const Error*) { state = s; };
    e.on_history_received = [this](size_t n) {
      history_entries += n;
      ++history_events;
    };
    e.on_message = [this](const Message& m) {
      if (!m.body.empty()) ++readable_messages;
    };
    return e;
  }
};

class HistoryIntegration : public testing::TerndFixture {
 protected:
  static constexpr size_t kN = 5;  // Options::history_messages in these tests

  void TearDown() override {
    alice1_.reset();
    b_.reset();
    c_.reset();
    TerndFixture::TearDown();
  }
  // A device linked with a one-time code shown on `c` (docs/protocol.md §3.4–3.5).
  Credentials link(const Credentials& c) {
    auto code = wait_for<LinkCode>([&](auto cb) { api_for(c).create_link_code(std::move(cb)); });
    EXPECT_TRUE(code.ok());
    if (!code.ok()) return {};
    Api anon(io_.context(), url_);
    auto linked = wait_for<Credentials>([&](auto cb) { anon.link_device(c.user, code->code, std::move(cb)); });
    EXPECT_TRUE(linked.ok());
    return linked.ok() ? *linked : Credentials{};
  }
  // An end-to-end client of `c` with its store under the test dir, started and synced.
  std::unique_ptr<Client> device(const Credentials& c, Seen& seen) {
    Options o;
    o.server = server_->url();
    o.credentials = c;
    o.store_path = dir_ + "/" + c.user + "-" + std::to_string(c.device) + ".sqlite";
    o.reconnect = {50, 500, 0};
    o.send_retry = {50, 500, 0};
    o.history_messages = kN;
    auto client = Client::create(o, seen.events());
    EXPECT_TRUE(client.ok()) << (client.ok() ? "" : client.error().message);
    if (!client.ok()) return nullptr;
    (*client)->start();
    EXPECT_TRUE(eventually([&] { return seen.state == ConnectionState::kSynced; }));
    return std::move(*client);
  }
  void say(Client& c, const std::string& conv, const std::string& text) {
    auto sent = wait_for<SendResult>([&](auto cb) { (void)c.send(conv, text, {}, std::move(cb)); });
    ASSERT_TRUE(sent.ok()) << sent.error().message;
  }
  Seq self_head(const Credentials& c) {
    auto self = wait_for<std::string>([&](auto cb) { api_for(c).create_self(std::move(cb)); });
    if (!self.ok()) return 0;
    auto info = wait_for<ConversationInfo>([&](auto cb) { api_for(c).conversation_info(*self, std::move(cb)); });
    return info.ok() ? info->head : 0;
  }
  // The readable messages (not system ones) of a device's history of conv: messages from
  // before a device was linked reach it by replay with an empty body (unreadable).
  static std::vector<Message> readable(Client& c, const std::string& conv) {
    auto all = c.local_history(conv, 0, 1000);
    EXPECT_TRUE(all.ok());
    std::vector<Message> out;
    if (all.ok())
      for (auto& m : *all)
        if (!m.body.empty() && !m.system_json) out.push_back(std::move(m));
    return out;
  }
  // The last kN entries of `from`'s history of conv are `to`'s readable history of it.
  void expect_last_n(Client& from, Client& to, const std::string& conv) {
    std::optional<std::vector<Message>> all = readable(from, conv), got = readable(to, conv);
    ASSERT_GT(all->size(), kN) << "the test needs more than N messages";
    ASSERT_EQ(got->size(), kN) << conv;
    for (size_t i = 0; i < kN; ++i) {
      const Message& want = (*all)[all->size() - kN + i];
      EXPECT_EQ((*got)[i].seq, want.seq);
      EXPECT_EQ((*got)[i].body, want.body);
      EXPECT_EQ((*got)[i].sender, want.sender);
      EXPECT_EQ((*got)[i].sender_device, want.sender_device);
      EXPECT_EQ((*got)[i].ts, want.ts);
    }
  }
  // Alice, bob and carol: a direct conversation alice–bob and a group of the three, each with
  // more than kN messages from both sides, all in alice:1's history.
  void converse(Client& a1, Client& b, Client& c) {
    for (int i = 0; i < 4; ++i) {
      say(a1, direct_, "canary direct alice " + std::to_string(i));
      say(b, direct_, "canary direct bob " + std::to_string(i));
      say(a1, group_, "canary group alice " + std::to_string(i));
      say(c, group_, "canary group carol " + std::to_string(i));
    }
    ASSERT_TRUE(eventually([&] {
      auto d = a1.local_history(direct_, 0, 1000);
      auto g = a1.local_history(group_, 0, 1000);
      return d.ok() && g.ok() && d->size() == 8 && g->size() == 9;  // the group's create message too
    }));
  }
  // alice, bob and carol, their conversations (converse()); alice1_, b_, c_ keep running.
  void chat_before_the_link() {
    a1_ = register_user("alice");
    bob_ = register_user("bob");
    const Credentials carol = register_user("carol");
    auto d = wait_for<std::string>([&](auto cb) { api_for(a1_).create_direct("bob", std::move(cb)); });
    auto g = wait_for<std::string>([&](auto cb) { api_for(a1_).create_group("three", {"bob", "carol"}, std::move(cb)); });
    ASSERT_TRUE(d.ok() && g.ok());
    direct_ = *d;
    group_ = *g;
    alice1_ = device(a1_, sa1_);
    b_ = device(bob_, sb_);
    c_ = device(carol, sc_);
    ASSERT_TRUE(alice1_ && b_ && c_);
    converse(*alice1_, *b_, *c_);
  }

  std::string direct_, group_;
  Credentials a1_, bob_;
  Seen sa1_, sb_, sc_;  // declared before the clients: outlive them
  std::unique_ptr<Client> alice1_, b_, c_;
};

TEST_F(HistoryIntegration, ANewlyLinkedDeviceGetsTheLastNMessagesOfEachConversation) {
  ASSERT_NO_FATAL_FAILURE(chat_before_the_link());
  const Credentials a1 = a1_, bob = bob_;
  Client* alice1 = alice1_.get();
  Seen& sa1 = sa1_;

  const Credentials a2 = link(a1);
  ASSERT_EQ(a2.device, 2u);
  Seen sa2;
  auto alice2 = device(a2, sa2);
  ASSERT_TRUE(alice2);
  ASSERT_TRUE(eventually([&] { return sa2.history_entries == 2 * kN; })) << sa2.history_entries;
  expect_last_n(*alice1, *alice2, direct_);
  expect_last_n(*alice1, *alice2, group_);
  EXPECT_EQ(sa2.readable_messages, 0u) << "history is not handed over as new messages";
  EXPECT_EQ(sa1.history_events, 0u) << "the old device gets nothing back";

  // The SDK's page API on alice:2 shows the last N decrypted, the older ones undecryptable.
  auto page = wait_for<HistoryPage>([&](auto cb) { api_for(a2).history(direct_, 0, 100, std::move(cb)); });
  ASSERT_TRUE(page.ok());
  auto opened = wait_for<HistoryPage>([&](auto cb) { alice2->open_page(*page, std::move(cb)); });
  ASSERT_TRUE(opened.ok());
  ASSERT_EQ(opened->messages.size(), 8u);
  for (size_t i = 0; i < opened->messages.size(); ++i) {
    const Message& m = opened->messages[i];
    EXPECT_EQ(m.seq, i + 1);
    if (i < 8 - kN) {
      EXPECT_TRUE(m.undecryptable || m.body.empty()) << m.seq;
    } else {
      EXPECT_FALSE(m.undecryptable) << m.seq;
      EXPECT_NE(m.body.find("canary direct"), std::string::npos) << m.seq;
    }
  }

  // The server holds ciphertext only: no canary in the self conversation's backfill (either
  // device's view), and the self conversation is not listed.
  auto self = wait_for<std::string>([&](auto cb) { api_for(a1).create_self(std::move(cb)); });
  ASSERT_TRUE(self.ok());
  EXPECT_EQ(self->rfind("s-", 0), 0u);
  auto again = wait_for<std::string>([&](auto cb) { api_for(a2).create_self(std::move(cb)); });
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *self) << "the same id for every device of the user";
  for (const Credentials& who : {a1, a2}) {
    auto backfill = wait_for<HistoryPage>([&](auto cb) { api_for(who).history(*self, 0, 100, std::move(cb)); });
    ASSERT_TRUE(backfill.ok()) << backfill.error().message;
    ASSERT_GE(backfill->messages.size(), 2u) << "the request and at least one answer";
    for (const auto& m : backfill->messages) EXPECT_EQ(m.body.find("canary"), std::string::npos);
  }
  auto bobs = wait_for<HistoryPage>([&](auto cb) { api_for(bob).history(*self, 0, 100, std::move(cb)); });
  EXPECT_FALSE(bobs.ok()) << "no one else reads alice's self conversation";
  auto listed = wait_for<std::vector<ConversationInfo>>([&](auto cb) { api_for(a1).conversations(std::move(cb)); });
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 2u);
  for (const auto& ci : *listed) EXPECT_NE(ci.conversation_id, *self);
}

TEST_F(HistoryIntegration, AnOfflineDeviceAnswersWhenItComesBackAndTheNewOneGetsItByReplay) {
  ASSERT_NO_FATAL_FAILURE(chat_before_the_link());
  const Credentials a1 = a1_;
  alice1_->stop();
  alice1_.reset();

  // alice:2 is linked and asks while alice:1 is offline; then alice:2 goes offline too.
  const Credentials a2 = link(a1);
  {
    Seen sa2;
    auto alice2 = device(a2, sa2);
    ASSERT_TRUE(alice2);
    ASSERT_TRUE(eventually([&] { return alice2->outbox_size() == 0 && self_head(a2) == 1; }));
    alice2->stop();
    EXPECT_EQ(sa2.history_entries, 0u);
  }
  // alice:1 comes back, finds the request in its replay and answers it.
  {
    Seen back;
    auto alice1b = device(a1, back);
    ASSERT_TRUE(alice1b);
    ASSERT_TRUE(eventually([&] { return self_head(a1) >= 2 && alice1b->outbox_size() == 0; }));
    alice1b->stop();
  }
  // alice:2 comes back and gets the answer by replay.
  Seen sa2;
  auto alice2 = device(a2, sa2);
  ASSERT_TRUE(alice2);
  ASSERT_TRUE(eventually([&] { return sa2.history_entries == 2 * kN; })) << sa2.history_entries;
  Seen again;
  auto alice1 = device(a1, again);  // for the comparison (its history is in its store)
  ASSERT_TRUE(alice1);
  expect_last_n(*alice1, *alice2, direct_);
  expect_last_n(*alice1, *alice2, group_);

  // The answer written again with its client_msg_id (as after a crash before its `sent`; the
  // request was seq 1), carrying an entry alice:2 does not have: the server keeps the first
  // send, so nothing new reaches alice:2.
  auto self = wait_for<std::string>([&](auto cb) { api_for(a1).create_self(std::move(cb)); });
  ASSERT_TRUE(self.ok());
  const Seq head = self_head(a1);
  alice1->stop();
  alice1.reset();
  {
    auto store = SqliteStore::open(dir_ + "/alice-1.sqlite");
    ASSERT_TRUE(store.ok());
    const std::string again_payload = encode_history({Message{direct_, 999, "bob", 1, 1, "not again", {}, {}, {}}}).at(0);
    ASSERT_TRUE((*store)->add(OutboxEntry{"h-2-1-0", *self, base64_encode(again_payload), {}, {}, 1, {}}).ok());
  }
  Seen resent;
  alice1 = device(a1, resent);
  ASSERT_TRUE(alice1);
  ASSERT_TRUE(eventually([&] { return alice1->outbox_size() == 0; }));
  EXPECT_EQ(self_head(a1), head) << "deduplicated by client_msg_id";
  EXPECT_EQ(sa2.history_events, 1u);
  auto gone = alice2->local_history(direct_, 998, 10);
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->empty());

  // Restarted, alice:2 neither asks again nor gets anything twice.
  alice2->stop();
  alice2.reset();
  Seen sa2b;
  alice2 = device(a2, sa2b);
  ASSERT_TRUE(alice2);
  EXPECT_EQ(sa2b.history_events, 0u);
  EXPECT_EQ(readable(*alice2, direct_).size(), kN);
}

}  // namespace
}  // namespace tern::client
