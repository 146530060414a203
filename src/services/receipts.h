// Receipts: cumulative acks and read markers, on the conversation's owning loop. An ack moves
// the device's cursor; when it covers the head, the device's inbox entry is deleted; when it
// advances the user's delivered (or read) mark, the new mark is stored and a `receipt` frame
// goes, after the commit, to the devices of the senders of the messages it newly covers
// (never to every member: that is members² frames per message in a large group).
//
// No reads: the owning loop keeps the receipt marks in memory (loaded once per
// conversation) and writes cursor, inbox and receipt blind. A device's cursor only moves
// forward in practice (acks of one connection arrive in order, a reconnect starts past the
// last ack, pending ones included); a client that acks backwards only replays more itself.
// The one read left: the senders of messages older than those the loop remembers come from
// the log (bounded), with offloaded reads (Redis) on a reader thread before the ack runs
// again with them, the conversation's later work waiting (SequencerCore::read_then).
//
// In a read-side (large) group, receipts are coalesced per sender: they wait up to
// --receipt-batch-ms on the owning loop, and a sender gets only each reader's highest mark
// per window (they are durable state: a sender that reconnects gets the latest anyway).
//
// Thread-safety: acknowledge() only on the owning loop; pending_ack() from any thread (a
// small mutex-guarded map: acks accepted and not yet committed, so a device that acks,
// disconnects and reconnects at once does not replay what it acked). Owned by Sequencer.
#pragma once
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "services/channel_views.h"
#include "services/sequencer_core.h"

namespace tern::services {

class Receipts {
 public:
  using AckDone = std::function<void(Result<void>)>;

  Receipts(SequencerCore& core, ChannelViews& views) : core_(core), views_(views) {}

  // The senders of the messages in (first, last] of a conversation's log, read for an ack
  // (on a reader thread with offloaded reads). None when the read failed: the receipt goes
  // to the senders known without it, as it always did. `reads`: how many this ack made.
  struct LogSenders {
    Seq first = 0, last = 0;
    std::vector<std::pair<Seq, std::string>> senders;
    int reads = 0;
  };

  // `following`: see Sequencer::acknowledge. `older`: what an earlier pass of this ack read
  // of the log off the loop (it then runs again from the start). `channel_row`: see
  // Sequencer::acknowledge.
  void acknowledge(Shard& shard, const DeviceRef& device, const std::string& conversation_id, Seq seq, bool read,
                   AckDone done, bool following = false, const LogSenders* older = nullptr,
                   std::optional<store::Member> channel_row = std::nullopt);
  Seq pending_ack(const DeviceRef& device, const std::string& conversation_id);

 private:
  void acknowledge_channel(Shard& shard, ConvState& cs, const DeviceRef& device, const std::string& conversation_id, Seq seq,
                           bool read, std::string ack_key, AckDone done);
  void hold_receipt(Shard& shard, const std::string& target, const std::string& conversation_id,
                    const std::string& reader, bool read, Seq seq);
  void flush_receipts(Shard& shard);
  // Drops the pending ack once the store has it (unless a later one replaced it).
  void settle_ack(const std::string& ack_key, Seq seq);
  // Users (other than `reader`) who sent messages in (from, to]: recent ones from memory,
  // older ones from the log (bounded): from `older` when it covers them, else read here.
  std::vector<std::string> senders(ConvState& cs, const std::string& conversation_id, const std::string& reader,
                                   Seq from, Seq to, const LogSenders* older);
  // The log's senders in (range.first, range.second]; any thread (the store only).
  LogSenders read_log(const std::string& conversation_id, std::pair<Seq, Seq> range);
  // The part (first, last] of the log that senders() reads for (from, to]; first == last: none.
  static std::pair<Seq, Seq> log_range(const ConvState& cs, Seq from, Seq to);
  // Whether `older` answers for (first, last].
  static bool covers(const LogSenders* older, std::pair<Seq, Seq> range) {
    return older && older->first <= range.first && range.second <= older->last;
  }

  // Log reads of one ack off the loop at most: a range read again only when other nodes'
  // messages moved what the loop remembers meanwhile (the second read goes on to the ack's
  // seq, so a third is needed only after a move of more than kRecentSenders during one read).
  // After these, senders() uses what was read (with the embedded store it reads inline).
  static constexpr int kLogReads = 3;

  SequencerCore& core_;
  ChannelViews& views_;  // a channel read marker counts toward views
  std::mutex acks_mu_;
  std::unordered_map<std::string, Seq> pending_acks_;  // device key + '\n' + conversation → seq
};

}  // namespace tern::services
