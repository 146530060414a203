// Settings of the service layer, filled from ternd's options. Plain value, read-only after
// start; shared by every service.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "proto/limits.h"

namespace tern::services {

struct ServiceOptions {
  proto::Limits limits;
  bool durable = true;                  // fsync each group-committed batch (--durability sync)
  double send_rate_per_sec = 50;        // token bucket refill per device connection
  double send_burst = 100;              // token bucket size
  double frame_rate_per_sec = 1000;     // every client frame (acks, typing, ...) per connection
  double frame_burst = 2000;
  int64_t idempotency_ttl_ms = 7LL * 24 * 3600 * 1000;
  size_t commit_queue_limit = 65536;    // pending entries in the group committer → overloaded
  size_t max_inflight_sends_per_connection = 64;   // sends awaiting their answer → overloaded
  size_t max_inflight_sends_per_loop = 4096;       // the same, summed over a loop's connections
  size_t conversation_cache = 100000;  // conversations whose state a loop keeps in memory (LRU)
  size_t max_commit_batch = 4096;       // entries per RocksDB write batch
  int64_t commit_gap_us = 0;            // GroupCommitter::set_min_gap (Redis: --redis-commit-gap-us)
  size_t read_threads = 0;              // StoreReads: 0 inline (embedded store); Redis: --redis-read-threads
  size_t read_fibers = 0;               // StoreReads: per loop; Redis: --redis-read-fibers
  size_t replay_page = 256;             // messages read per replay step
  size_t live_buffer_convs = 4096;      // conversations tracked as "dirty" during replay
  size_t max_presence_subscriptions = 1024;  // per connection
  size_t max_presence_subscriptions_per_user = 4096;  // over all of a user's connections
  size_t presence_index_entries = 1000000;   // contact index (conversations + counterparts), LRU
  int64_t typing_interval_ms = 1000;         // at most one typing relay per member and conversation
  size_t typing_max_members = 100;           // bigger conversations: typing coalesced per conversation
  double create_rate_per_sec = 1;            // conversations a user may create (token bucket; 0 = off)
  double create_burst = 20;
  size_t max_conversations_per_user = 10000;  // active memberships, checked when creating
  double register_rate_per_min = 10;         // registrations per source address (0 = off)
  double register_burst = 20;
  size_t directory_cache = 100000;           // entries in each directory cache (LRU)
  size_t rate_limiter_keys = 100000;         // buckets kept per keyed rate limiter (LRU)
  size_t receipt_sync_conversations = 1000;  // conversations whose receipts a reconnect re-sends
  size_t link_codes_per_user = 5;
  size_t fanout_read_threshold = 500;   // groups with at least this many members fan out on read
  size_t max_subscribers = 200000;      // per channel, the owner and admins included
  double channel_post_rate = 10;        // posts per second into one channel (all admins together)
  double channel_post_burst = 20;
  // How long a channel change refused because the channel changed meanwhile (or is held by
  // the store) is made again (Sequencer::change_channel). On Redis the server sets it past a
  // change lease's life. One another node handed here is made again at most for the second,
  // below the bus's request timeout (2 s), then handed back refused.
  int64_t channel_change_retry_ms = 2000;
  int64_t channel_change_served_retry_ms = 1500;
  int64_t receipt_batch_ms = 100;       // read-side groups: receipts to a sender coalesced per window (0 = off)
  int64_t fanout_batch_ms = 10;         // read-side live delivery: one hand-over per loop per window (0..100)
  // The key directory (end-to-end encryption).
  size_t max_prekeys_per_upload = 100;        // one-time prekeys in one PUT /v1/keys
  size_t max_prekeys_per_device = 1000;       // one-time prekeys stored per device
  size_t prekeys_low_threshold = 10;          // fewer left → a prekeys_low event (0 = never)
  int64_t signed_prekey_grace_ms = 30LL * 24 * 3600 * 1000;  // a replaced signed prekey is kept this long
  double key_fetch_rate_per_sec = 5;          // bundle fetches per requesting user (0 = unlimited)
  double key_fetch_burst = 100;
  // Media and disappearing messages (issue 11).
  uint64_t max_media_bytes = 100ULL << 20;       // one blob (--max-media-bytes)
  uint64_t media_quota_bytes = 1ULL << 30;       // per user: uploaded, uncollected blobs + uploads in progress
  double media_upload_rate_per_min = 60;         // uploads per user (token bucket; 0 = off)
  double media_upload_burst = 20;
  int64_t media_grace_ms = 24LL * 3600 * 1000;   // an upload never sent is collected after this
  int64_t upload_expiry_ms = 3600LL * 1000;      // an idle resumable upload is dropped after this
  size_t max_open_uploads_per_user = 4;          // resumable uploads in progress
  size_t max_open_uploads = 1024;
  int64_t media_usage_ttl_ms = 0;                // a user's cached quota usage is read again after this (0: never; Redis: --redis-media-usage-ttl-ms)
  int64_t sweep_interval_ms = 60 * 1000;         // expired messages erased, blobs collected, this often
  // Issue 12: safety, privacy, push.
  double invite_rate_per_min = 60;          // users a user may add to groups (token bucket; 0 = off)
  double invite_burst = 200;
  double report_rate_per_hour = 20;         // abuse reports per user
  double report_burst = 5;
  size_t max_report_bytes = 64 * 1024;      // a report's attachment, decoded
  size_t safety_cache_users = 100000;       // users whose blocks / presence policy are cached (LRU)
  std::string push_webhook;                 // http://HOST:PORT/PATH; empty = no push (push_notifier.h)
  size_t push_queue = 10000;                // devices waiting for a push; beyond it new ones are dropped
  size_t push_batch = 100;                  // devices per webhook call
  int push_attempts = 6;                    // per call, with exponential backoff, before it is dropped
};

}  // namespace tern::services
