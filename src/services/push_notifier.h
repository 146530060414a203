// Push for offline devices (issue 12). When a message is stored for a device that is not
// connected (Bus::publish found no endpoint), the sequencer calls offline(device); a worker
// thread of this class then calls the operator's push gateway (--push-webhook, plain HTTP:
// keep it on loopback or a private network) with
//   POST <path>  {"notifications":[{"user":"bob","device":2,"provider":"fcm","token":"…"}]}
// naming the devices to wake and their registered tokens (POST /v1/devices/self/push), and
// no message content, sender or conversation.
//
//   never blocking the message path: offline() takes a mutex, inserts into a set and returns;
//     the store reads (tokens) and the network happen on the worker thread.
//   coalesced per device: a device already waiting is not queued again, however many
//     messages arrive (tern_push_coalesced_total);
//   batched: up to push_batch devices per call;
//   retried with backoff: a call that fails (connect error, timeout, non-2xx) is retried with
//     the same devices after 100 ms, 200 ms, … (at most 5 s), push_attempts times in all, then
//     dropped (tern_push_abandoned_total counts the devices);
//   bounded: at most push_queue devices wait; **overflow policy: the new device is dropped**
//     (tern_push_overflow_total) — the devices already waiting keep their place, and a dropped
//     device still gets its messages when it connects; a later message re-queues it once
//     there is room. Devices without a registered token are skipped (tern_push_no_token_total).
//
// Thread-safe: offline() from any thread. Owns its worker thread; stop() ends it (a call in
// flight is bounded by its 3 s timeout). Owned by TernService.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/ids.h"
#include "base/result.h"
#include "store/store.h"

namespace tern::services {

struct PushOptions {
  std::string host;  // from http://HOST:PORT/PATH
  uint16_t port = 80;
  std::string path = "/";
  size_t queue = 10000;
  size_t batch = 100;
  int attempts = 6;
};

// Parses "http://HOST[:PORT][/PATH]".
Result<PushOptions> parse_push_webhook(const std::string& url);

class PushNotifier {
 public:
  PushNotifier(store::Store& store, PushOptions options);
  ~PushNotifier();
  void stop();

  // A message was stored for `device`, which is offline.
  void offline(const DeviceRef& device);
  size_t queued();

 private:
  void run();
  // One webhook call; true on a 2xx answer.
  bool post(const std::string& body);

  store::Store& store_;
  const PushOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<DeviceRef> waiting_;  // membership: coalescing
  std::deque<DeviceRef> order_;  // FIFO of waiting_
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace tern::services
