// DeviceSession: the service side of one device's WebSocket connection. It turns client
// frames into service calls, and keeps the device's delivery state: per conversation, the
// last seq written to this connection.
//
// Delivery, replay and "no live message overtakes the replay":
//  1. On open the session attaches to the bus first, so every message committed from then on
//     is notified to it; then it reads the device's inbox index and marks each conversation
//     with news as "behind".
//  2. The pump reads a behind conversation's log from the store (from the device's position,
//     a page at a time, only while the write queue is below half full) and writes it. Live
//     notifications that arrive meanwhile only mark their conversation behind.
//  3. When nothing is behind, `synced` goes out and the session is live: a notification whose
//     seq is exactly the next one is written at once (no store read); anything else (a gap,
//     or a conversation the pump is still reading) marks the conversation behind again.
// So per conversation the connection sees seqs strictly increasing, each at most once, and
// nothing live before `synced`.
//
// Fan-out on read (channels, large groups; see services/live_fanout.h): such conversations
// have no inbox entries. On open the session finds them among the user's conversations (the
// flag is in each index row), follows each in LiveFanout, then compares the head with its
// position and marks it behind if the head is ahead: follow first, then read the head, so a
// message committed in between is either seen by the head read or delivered live. The same
// happens when a membership changes: a kMembership notice (channel join/leave) or a system
// message that moved a group across the threshold.
//
// Admission: a send is refused with `overloaded` (ref = its client_msg_id) when this
// connection already has max_inflight_sends_per_connection sends in flight, or its loop
// max_inflight_sends_per_loop; so overload is refused at the entry instead of queueing.
//
// Thread affinity: every method except notify()/replaced() runs on the connection's loop
// (the gateway calls FrameHandler methods there; notify hops there, inline when the
// publisher already runs on it). Owned jointly by the gateway (as FrameHandler) and the bus
// (weakly, as Endpoint).
#pragma once
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "bus/bus.h"
#include "gateway/service_interface.h"
#include "services/rate_limiter.h"
#include "services/sequencer_core.h"

namespace tern::services {

class ServiceContext;

class DeviceSession final : public gateway::FrameHandler,
                            public bus::Endpoint,
                            public std::enable_shared_from_this<DeviceSession> {
 public:
  DeviceSession(ServiceContext& ctx, std::shared_ptr<gateway::Connection> connection, DeviceRef device);

  // Attaches to the bus and starts the replay. Call once, on the connection's loop.
  void start();

  // gateway::FrameHandler
  void on_text(std::string_view frame) override;
  void on_writable() override;
  void on_close() override;

  // bus::Endpoint (any thread)
  void notify(std::shared_ptr<const bus::Notification> n) override;
  void replaced() override;

 private:
  struct Position {
    Seq sent = 0;     // last seq written to (or skipped for) this connection
    Seq floor = 0;    // joined_seq - 1: nothing at or below is ever sent
    Seq limit = 0;    // last seq this device may see (removal seq), or max
  };

  // Runs fn on this connection's loop (inline if already there).
  void on_loop(std::function<void()> fn);
  void on_notification(const std::shared_ptr<const bus::Notification>& n);
  void on_sent(const std::string& cmid, const Result<SentInfo>& r);
  // Fan-out on read: starts or stops following the conversation live; a newly followed one
  // is compared with its head (and pumped if behind).
  void follow(const std::string& conversation_id, bool follow);
  void recheck_following(const std::string& conversation_id);
  Position* position(const std::string& conversation_id);
  void refresh_membership(const std::string& conversation_id, Position& pos);
  // Logs, closes the connection with 1011 and stops the replay (never `synced` after it).
  void store_failed(std::string_view step, const Error& error);
  void pump();
  bool pump_conversation(const std::string& conversation_id, size_t room);
  void finish_replay();
  void send_receipt_state();
  void pump_receipts(size_t high);
  bool write(std::shared_ptr<const std::string> frame);
  void write_error(const Error& error, std::string_view ref = {});

  ServiceContext& ctx_;
  std::shared_ptr<gateway::Connection> conn_;
  const DeviceRef device_;
  const size_t loop_;         // the loop this connection lives on (Loops::kNone in bare tests)
  size_t in_flight_ = 0;      // sends handed to the sequencer and not yet answered
  bool live_ = false;
  bool closed_ = false;
  bool store_failed_ = false;  // a read failed: the connection is closing, nothing more is sent
  bool pumping_ = false;
  TokenBucket bucket_;        // sends
  TokenBucket frame_bucket_;  // every frame: bounds the work one connection can queue
  std::unordered_map<std::string, Position> positions_;
  std::set<std::string> behind_;  // conversations the pump must read from the store
  std::vector<std::string> following_;  // read-side conversations followed in LiveFanout
  // Conversations whose receipt state is still to send, from receipt_next_ on. A vector, not
  // a deque: an empty deque already holds ~600 bytes, and every idle connection has one.
  std::vector<std::string> receipt_backlog_;
  size_t receipt_next_ = 0;
};

}  // namespace tern::services
