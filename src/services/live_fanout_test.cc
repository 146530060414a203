// LiveFanout: deliveries reach every follower on the loop, and subscribes/unsubscribes made
// by a delivery (a session closing or following) are applied after the walk, not during it.
#include "services/live_fanout.h"

#include <gtest/gtest.h>

#include <functional>

namespace tern::services {
namespace {

struct RecordingEndpoint : bus::Endpoint {
  int notified = 0;
  std::function<void()> on_notify;
  void notify(std::shared_ptr<const bus::Notification>) override {
    ++notified;
    if (on_notify) on_notify();
  }
  void replaced() override {}
};

std::shared_ptr<const bus::Notification> message(const std::string& conversation) {
  auto n = std::make_shared<bus::Notification>();
  n->kind = bus::Notification::Kind::kMessage;
  n->conversation_id = conversation;
  n->seq = 1;
  return n;
}

// Runs loop 0 on this thread until `f` (posted to it) has run; once per Loops (release() is final).
void on_loop(Loops& loops, std::function<void()> f) {
  loops.post(0, [&loops, f] {
    f();
    loops.release();
  });
  loops.run_here(0);
}

TEST(LiveFanout, ChangesMadeByADeliveryWaitForTheEndOfTheWalk) {
  Loops loops(1);
  LiveFanout fanout(loops, std::chrono::milliseconds(0));  // no window: flush inline
  auto a = std::make_shared<RecordingEndpoint>();
  auto b = std::make_shared<RecordingEndpoint>();
  auto c = std::make_shared<RecordingEndpoint>();
  auto late = std::make_shared<RecordingEndpoint>();
  // a closes while being notified (unsubscribes itself and b), and makes `late` follow.
  a->on_notify = [&] {
    fanout.unsubscribe(0, "ch-1", a.get());
    fanout.unsubscribe(0, "ch-1", b.get());
    fanout.subscribe(0, "ch-1", late);
  };
  int first_late = -1;
  size_t after = 0;
  on_loop(loops, [&] {
    fanout.subscribe(0, "ch-1", a);
    fanout.subscribe(0, "ch-1", b);
    fanout.subscribe(0, "ch-1", c);
    fanout.publish(message("ch-1"));
    first_late = late->notified;
    after = fanout.subscribers(0, "ch-1");
    a->on_notify = nullptr;
    fanout.publish(message("ch-1"));
  });
  // Everyone subscribed when the first walk began got it; `late` did not (it reads the log
  // when it follows); afterwards a and b are gone and late follows.
  EXPECT_EQ(first_late, 0);
  EXPECT_EQ(after, 2u);  // c and late
  EXPECT_EQ(a->notified, 1);
  EXPECT_EQ(b->notified, 1);
  EXPECT_EQ(c->notified, 2);
  EXPECT_EQ(late->notified, 1);
}

TEST(LiveFanout, UnsubscribingTheLastFollowerDuringAWalkDropsTheConversation) {
  Loops loops(1);
  LiveFanout fanout(loops, std::chrono::milliseconds(0));
  auto only = std::make_shared<RecordingEndpoint>();
  only->on_notify = [&] { fanout.unsubscribe(0, "g-1", only.get()); };
  size_t after = 1;
  on_loop(loops, [&] {
    fanout.subscribe(0, "g-1", only);
    fanout.publish(message("g-1"));
    fanout.publish(message("g-1"));  // nobody follows any more: not delivered
    after = fanout.subscribers(0, "g-1");
  });
  EXPECT_EQ(only->notified, 1);
  EXPECT_EQ(after, 0u);
}

}  // namespace
}  // namespace tern::services
