// Counters of one tern-bench worker (cumulative; steps and progress lines take differences)
// and errors by code. Plain values; owned by the worker's event-loop thread.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <boost/json/value.hpp>

namespace tern::bench {

struct Counters {
  uint64_t scheduled = 0;      // sends due by the open-loop schedule
  uint64_t written = 0;        // first transmissions of a send
  uint64_t retransmitted = 0;  // sends repeated (same client_msg_id) after a reconnect
  uint64_t acked = 0;          // `sent` received
  uint64_t send_failed = 0;    // refused by the server (error frame) or locally
  uint64_t delivered = 0;      // first deliveries of our messages while live (latency sampled)
  uint64_t replayed = 0;       // first deliveries of our messages before `synced`
  uint64_t redelivered = 0;    // repeats of a (conversation, seq) already delivered
  uint64_t other_messages = 0; // system messages and bodies that are not ours
  uint64_t receipts = 0;
  uint64_t receipts_to_non_senders = 0;  // receipts for a conversation this device never sent in
  uint64_t ephemeral = 0;      // typing and presence frames
  uint64_t acks_sent = 0;
  uint64_t connects = 0;       // connections opened (handshake done)
  uint64_t connect_failures = 0;
  uint64_t disconnects = 0;    // open connections lost without being asked to close
  uint64_t synced = 0;
  uint64_t typing_sent = 0;    // group --typing: typing frames written

  Counters operator-(const Counters& o) const;
  Counters& operator+=(const Counters& o);
  boost::json::value to_json() const;
  static Counters from_json(const boost::json::value& v);
};

using ErrorCounts = std::map<std::string, uint64_t>;
boost::json::value errors_to_json(const ErrorCounts& e);
void merge_errors(ErrorCounts& into, const boost::json::value& v);

}  // namespace tern::bench
