// LiveFanout: live delivery for conversations that fan out on read (channels, and groups at
// or above --fanout-read-threshold members). Instead of one bus publish per recipient device
// (members × devices lookups and hops per message), each loop keeps an in-memory index
// conversation → the sessions on that loop that follow it, and a message crosses to each
// loop once: one task per loop per window, whatever the number of subscribers.
//
// Micro-batching: a loop collects what arrives within `window` (--fanout-batch-ms) and hands
// it to its sessions in one turn, so a burst of posts reaches each connection in one gathered
// write. The frame is the one stored (shared, never copied per recipient).
//
// Not durable and not needed for correctness: a session that misses a notification (it
// subscribed a moment late, or its queue was full) finds the gap at the next message or
// reconnect and reads the log (services/device_session.h). Sessions subscribe when they
// connect (their read-side conversations are flagged in the user index) and when their
// membership changes.
//
// Thread-safety: subscribe()/unsubscribe() only on loop `loop` (the session's own);
// publish() from any thread. Owned by TernService; sessions are held strongly until they
// unsubscribe (on close), so the index never points at a dead session.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "base/loops.h"
#include "bus/bus.h"

namespace tern::services {

class LiveFanout {
 public:
  LiveFanout(Loops& loops, std::chrono::milliseconds window);
  ~LiveFanout();

  void subscribe(size_t loop, const std::string& conversation_id, std::shared_ptr<bus::Endpoint> endpoint);
  void unsubscribe(size_t loop, const std::string& conversation_id, const bus::Endpoint* endpoint);
  // Delivers n (a kMessage of n->conversation_id) to every subscribed session on every loop,
  // within the window.
  void publish(std::shared_ptr<const bus::Notification> n);

  // Sessions subscribed to the conversation on loop `loop` (tests; only on that loop).
  size_t subscribers(size_t loop, const std::string& conversation_id) const;

 private:
  struct Followers {
    std::vector<std::shared_ptr<bus::Endpoint>> endpoints;
    std::unordered_map<const bus::Endpoint*, size_t> slot;  // endpoint → index (swap-remove)
  };
  struct PerLoop {
    explicit PerLoop(boost::asio::io_context& io) : timer(io) {}
    std::unordered_map<std::string, Followers> index;
    std::vector<std::shared_ptr<const bus::Notification>> pending;
    boost::asio::steady_timer timer;
    bool armed = false;
    // While flush() walks a follower vector, a delivery may close a session (which
    // unsubscribes) or a session may subscribe: those changes wait here, in order, and are
    // applied when the walk ends, so the walk needs no copy of the vector per message.
    bool flushing = false;
    struct Change {
      std::string conversation_id;
      std::shared_ptr<bus::Endpoint> subscribe;  // null: unsubscribe `endpoint`
      const bus::Endpoint* endpoint = nullptr;
    };
    std::vector<Change> deferred;
  };
  void apply_subscribe(PerLoop& l, const std::string& conversation_id, std::shared_ptr<bus::Endpoint> endpoint);
  void apply_unsubscribe(PerLoop& l, const std::string& conversation_id, const bus::Endpoint* endpoint);
  void enqueue(size_t loop, std::shared_ptr<const bus::Notification> n);
  void flush(size_t loop);

  Loops& loops_;
  const std::chrono::milliseconds window_;
  std::vector<std::unique_ptr<PerLoop>> loops_state_;
};

}  // namespace tern::services
