// NodeRing: which ternd node sequences a conversation's sends (docs/scaling.md "One
// sequencing node per conversation"). Every node keeps the set of live nodes (heartbeats in
// Redis, read by RedisBus) and picks a conversation's owner by rendezvous hashing: the live
// node with the highest hash of (node, conversation). All nodes that see the same live set
// pick the same owner, and a node that joins or leaves moves only its own share.
//
// A routing hint, never a correctness rule: while two nodes disagree (a heartbeat not yet
// seen, a node just died) both may sequence one conversation, and the store's dense-append
// check still keeps seqs dense (they only re-sequence). A node that did not answer a
// forwarded send in time is suspected: left out of the ring here for `suspect_for`, doubled
// each time it fails again within one period of being let back (a node that is alive but
// hung would otherwise cost each forwarding node one request timeout per `suspect_for`), up
// to kMaxSuspectFactor times; an answer from it starts over.
//
// Thread-safety: every method from any thread (one mutex; the owner lookup copies nothing).
#pragma once
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tern::bus {

// A node is live while its bus subscriber connection is open on the channel's Redis, named
// this prefix + its node id (RedisBus), so that CLIENT LIST shows it.
inline constexpr std::string_view kNodeConnectionPrefix = "tern-bus:";
// A node that is stopping (SIGTERM) opens one more subscriber connection, named this prefix +
// its node id, before it stops serving (RedisBus::leave): the others stop routing sends to it
// at their next look while it still answers what they sent before. A node of an older
// version does not know the prefix and routes to it until its bus connection closes.
inline constexpr std::string_view kLeavingConnectionPrefix = "tern-leaving:";

// The live node ids in the output of CLIENT LIST (one client a line, space-separated
// key=value fields): the id of every client whose `name` is kNodeConnectionPrefix + a
// non-empty id; sorted, each once (a reconnecting node may show twice for a moment). A last
// line without its newline counts only if its name field is followed by another field: a cut
// name could read as another node's id. One pass over the input; any thread (no state).
std::vector<std::string> live_nodes_from_client_list(std::string_view client_list);
// The same for the nodes that announced they are stopping (kLeavingConnectionPrefix).
std::vector<std::string> leaving_nodes_from_client_list(std::string_view client_list);

class NodeRing {
 public:
  using Clock = std::chrono::steady_clock;
  NodeRing(std::string self, std::chrono::milliseconds suspect_for) : self_(std::move(self)), suspect_for_(suspect_for) {}

  // The live nodes as Redis last listed them (this node among them or not).
  void set_live(std::vector<std::string> nodes);
  // `node` did not answer in time: not an owner here until its suspicion period has passed
  // (`suspect_for`, or double the last period if it was suspected within one period before).
  void suspect(const std::string& node, Clock::time_point now = Clock::now());
  // `node` answered: its next suspicion is `suspect_for` again.
  void answered(const std::string& node);
  static constexpr int kMaxSuspectFactor = 16;

  // The owner of the conversation if it is another node; empty if it is this node, or if no
  // live set is known yet (a single node, or Redis not reached yet): then this node sequences.
  std::string owner(std::string_view conversation_id, Clock::time_point now = Clock::now()) const;

  // The nodes suspected now, sorted, each with the time left until it is let back (admin).
  std::vector<std::pair<std::string, Clock::duration>> suspected(Clock::time_point now = Clock::now()) const;

  // FNV-1a 64 of (node, '\n', conversation), fixed across builds so mixed versions agree.
  static uint64_t weight(std::string_view node, std::string_view conversation_id);

 private:
  const std::string self_;
  const std::chrono::milliseconds suspect_for_;
  mutable std::mutex mu_;
  std::vector<std::string> live_;
  struct Suspicion {
    Clock::time_point until;
    Clock::duration period;
  };
  std::unordered_map<std::string, Suspicion> suspected_;  // node → until when, for how long
};

}  // namespace tern::bus
