// The SDK's keyring saves per batch (keyring.h "Saves are batched", client.cc flush_acks /
// open_page), against a real ternd: how many saves a replay, a history page and sends cost,
// and what a crash between the decrypts and the save leaves.
#include <chrono>
#include <filesystem>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "client/api.h"
#include "client/blocking.h"
#include "client/client.h"
#include "client/io_thread.h"
#include "client/server_url.h"
#include "client/testing/ternd_fixture.h"

namespace tern::client {
namespace {
using namespace std::chrono_literals;

using testing::eventually;

struct Inbox {
  std::mutex mu;
  std::multiset<std::string> bodies;
  size_t undecryptable = 0;
  std::atomic<ConnectionState> state{ConnectionState::kDisconnected};
  Events events() {
    Events e;
    e.on_message = [this](const Message& m) {
      std::lock_guard l(mu);
      if (!m.system_json) bodies.insert(m.body);
    };
    e.on_undecryptable = [this](const Undecryptable&) {
      std::lock_guard l(mu);
      ++undecryptable;
    };
    e.on_state = [this](ConnectionState s, const Error*) { state = s; };
    return e;
  }
  size_t count() {
    std::lock_guard l(mu);
    return bodies.size();
  }
};

std::string text(int i) { return "batch message " + std::to_string(i); }

class KeyringSaves : public testing::TerndFixture {
 protected:
  // An end-to-end client: store <dir>/<name>.sqlite, keys in <dir>/<keys> (default <name>.keys).
  Options options(const Credentials& c, const std::string& name, const std::string& keys = {}) {
    Options o;
    o.server = server_->url();
    o.credentials = c;
    o.store_path = dir_ + "/" + name + ".sqlite";
    o.keyring_dir = dir_ + "/" + (keys.empty() ? name : keys) + ".keys";
    o.reconnect = {50, 500, 0};
    o.send_retry = {50, 500, 0};
    return o;
  }
  std::unique_ptr<Client> create(const Options& o, Inbox& inbox, bool start = true) {
    auto c = Client::create(o, inbox.events());
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    if (!c.ok()) return nullptr;
    EXPECT_TRUE((*c)->encrypts());
    if (!start) return std::move(*c);
    (*c)->start();
    EXPECT_TRUE(eventually([&] { return inbox.state == ConnectionState::kSynced; }));
    return std::move(*c);
  }
  // Runs the device once (its keys are published), then stops it.
  void publish(const Options& o) {
    Inbox i;
    ASSERT_TRUE(create(o, i));
  }
  Credentials second_device(const Credentials& c) {
    auto d = wait_for<Credentials>([&](auto cb) { api_for(c).add_device(std::move(cb)); });
    EXPECT_TRUE(d.ok());
    return d.ok() ? *d : Credentials{};
  }
  // `n` messages from `from` in `conv`, each awaited (its `sent`).
  void send_all(Client& from, const std::string& conv, int first, int n) {
    for (int i = first; i < first + n; ++i) {
      auto sent = wait_for<SendResult>([&](auto cb) { (void)from.send(conv, text(i), {}, std::move(cb)); });
      ASSERT_TRUE(sent.ok()) << sent.error().message;
    }
  }
};

// 50 sends: one save each (before the frame leaves). A replay of 50 received before one ack
// flush: one save. A history page of 50 decrypted by another device: one save, and none when
// the same page is opened again (everything comes from the device's history).
TEST_F(KeyringSaves, FiftyDeliveriesAreOneSaveAndFiftySendsFifty) {
  const Credentials alice = register_user("alice"), bob = register_user("bob");
  const Credentials bob2 = second_device(bob);
  Options bo = options(bob, "bob"), b2o = options(bob2, "bob2");
  bo.ack_delay_ms = 10'000;  // the whole replay arrives before the ack flush
  bo.history_messages = 0;   // bob2's history request is not answered: no send, no save
  publish(bo);
  publish(b2o);
  auto conv = wait_for<std::string>([&](auto cb) { api_for(alice).create_direct("bob", std::move(cb)); });
  ASSERT_TRUE(conv.ok());
  Inbox ai;
  auto a = create(options(alice, "alice"), ai);
  ASSERT_TRUE(a);
  send_all(*a, *conv, 0, 50);
  EXPECT_EQ(a->stats().keyring_saves, 50u) << "one save per send";

  Inbox bi;
  auto b = create(bo, bi);
  ASSERT_TRUE(b);
  ASSERT_TRUE(eventually([&] { return bi.count() == 50; }));
  EXPECT_EQ(b->stats().keyring_saves, 0u) << "nothing saved before the ack flush";
  EXPECT_EQ(b->stats().acks_sent, 0u);
  ASSERT_TRUE(eventually([&] { return b->stats().acks_sent >= 1; }, 40s));
  EXPECT_EQ(b->stats().keyring_saves, 1u) << "50 deliveries, one save before the ack";
  {
    std::lock_guard l(bi.mu);
    EXPECT_EQ(bi.undecryptable, 0u);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(bi.bodies.count(text(i)), 1u) << i;
  }

  // bob's second device, not connected: the page of 50 is decrypted with one save.
  Inbox b2i;
  auto b2 = create(b2o, b2i, /*start=*/false);
  ASSERT_TRUE(b2);
  auto page = wait_for<HistoryPage>([&](auto cb) { api_for(bob2).history(*conv, 0, 50, std::move(cb)); });
  ASSERT_TRUE(page.ok()) << page.error().message;
  ASSERT_EQ(page->messages.size(), 50u);
  auto opened = wait_for<HistoryPage>([&](auto cb) { b2->open_page(*page, std::move(cb)); });
  ASSERT_TRUE(opened.ok());
  ASSERT_EQ(opened->messages.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(opened->messages[i].body, text(i));
  EXPECT_EQ(b2->stats().keyring_saves, 1u) << "a page: one save";
  auto again = wait_for<HistoryPage>([&](auto cb) { b2->open_page(*page, std::move(cb)); });
  ASSERT_TRUE(again.ok());
  for (int i = 0; i < 50; ++i) EXPECT_EQ(again->messages[i].body, text(i));
  EXPECT_EQ(b2->stats().keyring_saves, 1u) << "nothing changed: no save";
}

// A crash between the decrypts and the save: the disk holds the keys as they were before (the
// save never happened) and, at worst, no history of them. Nothing was acked, so the server
// replays them, and the old keys decrypt them again. Once acked (after the save), a restart
// replays nothing and the next message decrypts.
TEST_F(KeyringSaves, ACrashBeforeTheSaveIsRepairedByTheReplay) {
  const Credentials alice = register_user("alice"), bob = register_user("bob");
  Options bo = options(bob, "bob");
  publish(bo);
  const std::string state = bo.keyring_dir + "/keyring.state", before = dir_ + "/keyring.state.before";
  std::filesystem::copy_file(state, before);
  auto conv = wait_for<std::string>([&](auto cb) { api_for(alice).create_direct("bob", std::move(cb)); });
  ASSERT_TRUE(conv.ok());
  Inbox ai;
  auto a = create(options(alice, "alice"), ai);
  ASSERT_TRUE(a);
  send_all(*a, *conv, 0, 5);
  {
    Options slow = bo;
    slow.ack_delay_ms = 60'000;
    Inbox bi;
    auto b = create(slow, bi);
    ASSERT_TRUE(b);
    ASSERT_TRUE(eventually([&] { return bi.count() == 5; }));
    EXPECT_EQ(b->stats().keyring_saves, 0u);
    EXPECT_EQ(b->stats().acks_sent, 0u) << "decrypted, not saved: not acked";
  }
  // The crash: the keys as they were before the deliveries, and a store without their history.
  std::filesystem::copy_file(before, state, std::filesystem::copy_options::overwrite_existing);
  Options crashed = options(bob, "bob-after-crash", "bob");
  {
    Inbox bi;
    auto b = create(crashed, bi);
    ASSERT_TRUE(b);
    ASSERT_TRUE(eventually([&] { return bi.count() == 5; })) << "the replay, decrypted by the old keys";
    ASSERT_TRUE(eventually([&] { return b->stats().acks_sent >= 1; }));
    EXPECT_GE(b->stats().keyring_saves, 1u);
    std::lock_guard l(bi.mu);
    EXPECT_EQ(bi.undecryptable, 0u);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(bi.bodies.count(text(i)), 1u) << i;
  }
  // Acked after the save: a restart gets nothing again, has the history, and reads what follows.
  Inbox bi;
  auto b = create(crashed, bi);
  ASSERT_TRUE(b);
  send_all(*a, *conv, 5, 1);
  ASSERT_TRUE(eventually([&] { return bi.count() == 1; }));
  {
    std::lock_guard l(bi.mu);
    EXPECT_EQ(bi.bodies.count(text(5)), 1u);
    EXPECT_EQ(bi.undecryptable, 0u);
  }
  auto local = b->local_history(*conv, 0, 10);
  ASSERT_TRUE(local.ok());
  ASSERT_EQ(local->size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ((*local)[i].body, text(i));
}

}  // namespace
}  // namespace tern::client
