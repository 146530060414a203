// The sequencer: the one place that changes a conversation. Conversations are sharded over
// strands by a hash of their id; a shard's strand owns, for its conversations, the head seq,
// the receipts state and the in-flight idempotency keys, so seqs are assigned without a
// global lock and without races: dense, never repeated. Each change (send, membership,
// ack/read) becomes a store Batch handed to the GroupCommitter; the commit's completion
// answers the caller and fans the message out (fan-out-on-write: the inbox index of every
// recipient device is marked in the same batch; online devices are notified on the bus).
//
// Thread-safety: public methods may be called from any thread; they post to the shard.
// Callbacks run on the shard strand or the writer thread; callers post to their own strand.
// Owned by TernService; borrows store, committer, directory and bus.
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include "bus/bus.h"
#include "proto/frames.h"
#include "proto/http_shapes.h"
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/service_options.h"

namespace tern::services {

class Presence;

struct SentInfo {
  std::string client_msg_id;
  std::string conversation_id;
  Seq seq = 0;
  int64_t ts = 0;
};

struct ConversationInfo {
  std::string conversation_id;
  bool created = false;
};

class Sequencer {
 public:
  using SendDone = std::function<void(Result<SentInfo>)>;
  using CreateDone = std::function<void(Result<ConversationInfo>)>;
  using MembersDone = std::function<void(Result<std::vector<std::string>>)>;
  using AckDone = std::function<void(Result<void>)>;

  Sequencer(boost::asio::io_context& io, store::Store& store, GroupCommitter& committer, Directory& directory,
            bus::Bus& bus, const ServiceOptions& options, size_t shards);

  void send(DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done);
  void create_conversation(DeviceRef creator, proto::CreateConversationRequest request, CreateDone done);
  void change_members(DeviceRef actor, std::string conversation_id, proto::MembersRequest request, MembersDone done);
  // Cumulative ack (read=false) or read marker (read=true) of a device.
  void acknowledge(DeviceRef device, std::string conversation_id, Seq seq, bool read, AckDone done);

  // The highest ack of the device for the conversation that is not yet in the store (0 if
  // none): a device that acks, disconnects and reconnects at once must not replay what it acked.
  Seq pending_ack(const DeviceRef& device, const std::string& conversation_id);

  // Head of a conversation as the store has it (committed messages only).
  Result<Seq> committed_head(const std::string& conversation_id);

  static std::string direct_conversation_id(const std::string& a, const std::string& b);

  // Told of every membership change (issue 8: the presence contact index). Set once at start.
  void set_presence(Presence* presence) { presence_ = presence; }

 private:
  struct PendingSend {
    SentInfo info;
    std::vector<SendDone> waiters;  // retries of the same client_msg_id while in flight
  };
  struct ConvState {
    Seq head = 0;
    bool receipts_loaded = false;
    // Who sent the most recent messages (at most kRecentSenders): a receipt goes to the
    // senders of the messages it covers, not to every member (that would be members² frames
    // per message in a large group). Senders of older messages see the receipt state when
    // they next connect.
    std::deque<std::pair<Seq, std::string>> recent_senders;
    std::unordered_map<std::string, store::ReceiptState> receipts;  // by user
  };
  struct Shard {
    explicit Shard(boost::asio::io_context& io) : strand(boost::asio::make_strand(io)) {}
    boost::asio::strand<boost::asio::io_context::executor_type> strand;
    std::unordered_map<std::string, ConvState> conversations;
    std::unordered_map<std::string, PendingSend> pending;  // device key + '\n' + client_msg_id
  };

  Shard& shard_of(const std::string& conversation_id);
  Result<ConvState*> state(Shard& shard, const std::string& conversation_id);

  void do_send(Shard& shard, DeviceRef device, proto::SendFrame frame, int64_t started_us, SendDone done);
  void do_change_members(Shard& shard, DeviceRef actor, const std::string& conversation_id,
                         const proto::MembersRequest& request, MembersDone done);
  void do_create(Shard& shard, DeviceRef creator, proto::CreateConversationRequest request, std::string id,
                 CreateDone done);
  void do_acknowledge(Shard& shard, DeviceRef device, const std::string& conversation_id, Seq seq, bool read,
                      AckDone done);

  // Every device that receives a message of `c` with `seq`, except `skip` (the sender's).
  Result<std::vector<DeviceRef>> recipients(const store::Conversation& c, Seq seq, const DeviceRef* skip);
  // Appends a system message to the batch; returns its frame.
  std::shared_ptr<const std::string> system_message(store::Batch& batch, const store::Conversation& c, Seq seq,
                                                    const DeviceRef& actor, const std::string& system_json,
                                                    std::vector<DeviceRef>& to);
  void publish_message(const std::vector<DeviceRef>& to, const std::string& conversation_id, Seq seq,
                       std::shared_ptr<const std::string> frame, bool per_device, int64_t started_us);

  boost::asio::io_context& io_;
  store::Store& store_;
  GroupCommitter& committer_;
  Directory& directory_;
  bus::Bus& bus_;
  const ServiceOptions& options_;
  Presence* presence_ = nullptr;
  std::vector<std::unique_ptr<Shard>> shards_;
  // Acks accepted but not yet committed: device key + '\n' + conversation → seq. Bounded by
  // the acks in flight (an entry leaves when its commit completes).
  std::mutex acks_mu_;
  std::unordered_map<std::string, Seq> pending_acks_;
};

}  // namespace tern::services
