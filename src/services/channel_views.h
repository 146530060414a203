// ChannelViews: how many subscribers read each of a channel's recent posts (the `views` of
// GET /v1/conversations/{id}, protocol.md 3.8). Counted in memory, by the channel's owning
// loop on the node that sequences the channel: a post starts its count there when it is
// committed (track_post), and a subscriber's read marker counts toward each recent post it
// newly covers, once per reader (count_read). Approximate by design: a restart of that node,
// or the channel moving to another one, starts the counts again.
//
// Across nodes (docs/scaling.md "Channels across nodes"): a read marker handled by a node that
// does not sequence the channel is held on its owning loop for up to kBatchMs, with the other
// markers of that window, and sent in one request per channel to the node that does
// (channel_forwarding.h, Op::kReads); a channel's info through such a node asks that node for
// the counts (Op::kViews, Sequencer::channel_info). Sent once, never retried: a batch lost
// with its node, or refused by an older one, loses its views.
//
// Thread-safety: every method on the channel's owning loop (the held markers are per loop).
// Owned by Sequencer; borrows the core.
#pragma once
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "services/sequencer_core.h"

namespace tern::services {

class ChannelViews {
 public:
  static constexpr size_t kViewedPosts = 20;     // posts whose views are counted
  static constexpr size_t kReaders = 1'000'000;  // readers remembered per channel
  // Read markers held per loop for other nodes; beyond it a marker is dropped (counted in
  // tern_channel_reads_dropped_total), as its batch would be if lost.
  static constexpr size_t kHeldReads = 100'000;
  static constexpr int kBatchMs = 100;
  using Views = std::vector<std::pair<Seq, uint64_t>>;        // (post seq, readers), oldest first
  using Reads = std::vector<std::pair<std::string, Seq>>;     // (user, read marker)

  explicit ChannelViews(SequencerCore& core) : core_(core), held_(core.loops.size()) {}

  // A subscriber's read marker: counted here if this node sequences the channel, else held
  // for the one that does.
  void read(Shard& shard, ConvState& cs, const std::string& channel_id, const std::string& user, Seq seq);

  // The counts of the channel's recent posts, as this node has them.
  static Views views(const ConvState& cs);
  // Read markers another node held for this one.
  static void count_reads(ConvState& cs, const Reads& reads);
  static void count_read(ConvState& cs, const std::string& user, Seq seq);
  // A new post: starts counting its views.
  static void track_post(ConvState& cs, Seq seq);

 private:
  struct Held {
    std::unordered_map<std::string, std::unordered_map<std::string, Seq>> reads;  // channel → user → marker
    size_t count = 0;  // markers in `reads`
    bool armed = false;
  };
  // The window ended: each channel's markers to its sequencing node (or counted here, if this
  // node sequences it now).
  void flush(Shard& shard);

  SequencerCore& core_;
  std::vector<Held> held_;  // one per loop, indexed by Shard::loop
};

}  // namespace tern::services
