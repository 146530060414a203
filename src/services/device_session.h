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
//     notifications that arrive meanwhile only mark their conversation behind. A
//     notification of a conversation the session has no position in yet (new since the
//     connect) is held while that position is read, then handled as if it came then.
//  3. When nothing is behind, `synced` goes out and the session is live: a notification whose
//     seq is exactly the next one is written at once (no store read); anything else (a gap,
//     or a conversation the pump is still reading) marks the conversation behind again.
// So per conversation the connection sees seqs strictly increasing, each at most once, and
// nothing live before `synced`.
//
// Fan-out on read (channels, large groups; see services/live_fanout.h): such conversations
// have no inbox entries. On open the session finds them among the user's conversations (the
// flag is in each index row), follows each in LiveFanout and marks it behind: follow first,
// then read its log from the position, so a message committed in between is either seen by
// that read or delivered live. The same happens when a membership changes: a kMembership
// notice (channel join/leave) or a system message that moved a group across the threshold.
// After a system message the membership is reread before anything more of that
// conversation goes out live (the conversation is behind until then).
//
// Store reads (session_reads.h) go through StoreReads: inline on the embedded store, on a
// reader thread in Redis mode so that the loop never waits on the network. At most one read
// per session is in flight; what it brings back is applied on the loop, in the order above
// (a connect's reads first, then membership rechecks, pages, `synced`, receipts). A live
// notification for the conversation whose page is being read meanwhile makes the pump read
// it again, so nothing committed after the read is skipped.
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
#include "services/session_reads.h"

namespace tern::services {

struct ServiceContext;

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
  // Events may have gone to an older connection of this device on another node since the
  // connect read the inbox: the inbox is read again, and what it names past this
  // connection's positions is read from the store (docs/scaling.md "One connection per
  // device, across nodes").
  void missed() override;

  // Acks that may wait behind an ack's membership read (Redis mode, below); beyond: overloaded.
  static constexpr size_t kMaxWaitingAcks = 256;
  // Messages the session's first replay page asks for at most, before it knows their size.
  static constexpr size_t kFirstPage = 32;

 private:
  using Position = session_reads::Window;  // sent: last seq written to (or skipped for) this
                                           // connection; floor: joined_seq - 1, nothing at or
                                           // below is ever sent; limit: last seq it may see

  // Runs fn on this connection's loop (inline if already there).
  void on_loop(std::function<void()> fn);
  void on_notification(const std::shared_ptr<const bus::Notification>& n);
  void on_sent(const std::string& cmid, const Result<SentInfo>& r);
  // Runs `read` through StoreReads (the session's one read in flight), then `apply` on the
  // loop unless the connection closed meanwhile (an error: the reader threads' queue was
  // full); then the pump goes on.
  template <typename T>
  void read(std::function<Result<T>()> read, void (DeviceSession::*apply)(Result<T>&));
  void on_opened(Result<session_reads::Opening>& r);
  // Fan-out on read: starts or stops following the conversation live; a newly followed one
  // is marked behind (the pump compares its log with the position).
  void follow(const std::string& conversation_id, bool follow);
  void mark_behind(const std::string& conversation_id);
  void request_recheck(const std::string& conversation_id);
  void read_missed();
  void on_missed(Result<std::vector<std::pair<std::string, Seq>>>& inbox);
  void read_recheck();
  void on_recheck(Result<session_reads::Recheck>& r);
  Position* position(const std::string& conversation_id);  // null if none yet (no read)
  Position* make_position(const std::string& conversation_id, const store::Member& m, Seq cursor);
  void refresh_membership(Position& pos, const session_reads::Membership& m);
  // Logs, closes the connection with 1011 and stops the replay (never `synced` after it).
  void store_failed(std::string_view step, const Error& error);
  void deliver(const bus::Notification& n, Position& pos);
  void pump();
  size_t high_water() const;
  void place();
  void on_placed(Result<session_reads::PositionRows>& r);
  void replay_unplaced(const std::string& conversation_id);
  void read_page(const std::string& conversation_id, size_t high);
  void on_page(Result<session_reads::Page>& r);
  enum class PageEnd { kCaughtUp, kMore, kNoRoom };
  PageEnd write_page(Position& pos, const std::vector<store::StoredMessage>& messages, size_t page);
  void finish_replay();
  void read_receipt_list();
  void on_receipt_list(Result<std::vector<store::UserConversation>>& convs);
  struct ConversationReceipts {
    std::string conversation_id;
    std::vector<store::ReceiptState> receipts;
  };
  // The receipt state of up to kReceiptBatch conversations of the backlog per store read
  // (Store::receipts_of: one round trip on Redis).
  static constexpr size_t kReceiptBatch = 16;
  void read_receipts();
  void on_receipts(Result<std::vector<ConversationReceipts>>& r);
  // Acks and read markers. In Redis mode an ack of a conversation this session does not
  // follow, whose snapshot is not cached or that is a channel (whose subscribers are not in
  // the snapshot), first has the user's membership read on a reader thread; then it goes to
  // the sequencer, vouched for when the user is an active channel subscriber (so the owning
  // loop reads nothing either), or answered here with the sequencer's own errors. Acks that
  // arrive meanwhile wait behind it in order (at most kMaxWaitingAcks, beyond: overloaded).
  struct PendingAck {
    std::string conversation_id;
    Seq seq = 0;
    bool read = false;
  };
  struct AckCheck {
    session_reads::Membership membership;
    bool channel = false;
  };
  void ack(PendingAck a);
  // Moves the id into the sequencer's call; `channel_row`: see Sequencer::acknowledge.
  void submit_ack(PendingAck a, bool following, std::optional<store::Member> channel_row = std::nullopt);
  void on_ack_checked(const PendingAck& a, Result<AckCheck>& r);
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
  bool opened_ = false;        // the connect's reads were applied: the replay may run
  bool missed_ = false;        // missed(): the inbox is to be read again (the pump)
  bool reading_ = false;       // a store read is in flight (at most one)
  bool stalled_ = false;       // the last page stopped for want of room: on_writable() resumes
  bool reread_ = false;        // reading_page_ was marked behind during its read
  bool list_receipts_ = false;  // after `synced`: the receipt backlog is still to read
  std::string reading_page_;   // the conversation whose page is in flight
  size_t page_size_ = 0;       // messages asked for by the page in flight
  // The mean stored size of the frames of the last page read (0: none read yet). A page asks
  // for as many messages as fit the write queue's room at that size (read_page).
  size_t frame_bytes_ = 0;
  TokenBucket bucket_;        // sends
  TokenBucket frame_bucket_;  // every frame: bounds the work one connection can queue
  std::unordered_map<std::string, Position> positions_;
  std::set<std::string> behind_;  // conversations the pump must read from the store
  std::vector<std::string> rechecks_;  // conversations whose membership changed, to reread
  // Notifications of conversations without a position yet, held while it is read.
  static constexpr size_t kMaxUnplaced = 256;
  std::vector<std::shared_ptr<const bus::Notification>> unplaced_;
  std::vector<std::string> following_;  // read-side conversations followed in LiveFanout
  // Conversations whose receipt state is still to send, from receipt_next_ on. A vector, not
  // a deque: an empty deque already holds ~600 bytes, and every idle connection has one.
  std::vector<std::string> receipt_backlog_;
  size_t receipt_next_ = 0;
  bool ack_checking_ = false;        // an ack's membership read is in flight (Redis mode)
  std::vector<PendingAck> acks_;     // acks waiting behind it, in arrival order
};

}  // namespace tern::services
