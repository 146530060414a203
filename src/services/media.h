// Media: attachments (issue 11). Uploads (streamed, resumable), downloads with Range, the
// access rule, per-user quota and upload rate, and the periodic sweep that erases expired
// messages from disk and collects blobs nothing refers to any more.
//
// The server never sees plaintext: a blob is whatever the client uploaded (its encrypted
// attachment); the key travels inside the message body. What the server knows is clear
// metadata: who uploaded a blob (owner rows) and which messages name it (the send frame's
// `media`, indexed with the message), which is all the access rule needs:
//   a user may fetch a blob iff it uploaded it, or it may see a message naming it: a member
//   of that conversation at that seq (joined_seq <= seq <= left_seq, or still a member),
//   and the message has not expired. Everyone else gets 404, as for an unknown id.
//
// Routes (docs/protocol.md §3.11):
//   POST /v1/media                 body streamed (Content-Length ≤ max_media_bytes) → 201 {"media_id","size"}
//   POST /v1/media/uploads         {"size":N} → 201 {"upload_id","offset":0,"size","expires_at"}
//   PUT  /v1/media/uploads/{uid}   Content-Range: bytes a-b/N, streamed → 200 {"upload_id","offset","size"},
//                                  or 201 {"media_id","size"} with the last byte
//   GET  /v1/media/uploads/{uid}   → 200 {"upload_id","offset","size"}
//   GET  /v1/media/{id}            Range: bytes=a-b → 200 / 206 / 416 / 404
//
// Bounds: blob size (max_media_bytes); per-user quota over uploaded, uncollected blobs plus
// uploads in progress; uploads per user (token bucket); resumable uploads open per user and
// in total; an idle resumable upload expires after upload_expiry_ms (its bytes deleted).
//
// A resumable upload's state is the blob store's partial (store/blob_store.h), not this
// node's memory: with several nodes on one shared media directory, any node takes its next
// chunk or its status, and it survives a restart. The partials count against the limits and
// the quota of every node; the quota's cache of stored bytes (usage_) is per node and, in
// Redis mode, read again from the store once media_usage_ttl_ms old.
//
// Threads: the sinks run on the HTTP session's loop (file writes of at most
// 64 KiB each, to the page cache); a finished upload is made durable (fsync, rename, one
// store commit) on Media's worker thread, never on a loop; the sweep runs on Media's sweep
// thread every sweep_interval_ms. Everything else may be called from any thread (internal
// state under one mutex). Ownership: TernService owns it; it borrows the store, blob
// store, committer, directory and accounts, which outlive it.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bus/bus.h"
#include "gateway/service_interface.h"
#include "services/accounts.h"
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/media_leases.h"
#include "services/rate_limiter.h"
#include "services/service_options.h"
#include "store/blob_store.h"
#include "store/store.h"

namespace tern::services {

struct SweepStats {
  size_t expired_messages = 0;  // erased from disk this sweep
  size_t blobs_removed = 0;
  size_t uploads_expired = 0;
};

class Media {
 public:
  // `clock`: the bus, for the shared clock (Bus::clock_us) that messages' expiries and media
  // rows' times are on, so that every node sweeps and refuses them at one moment.
  Media(const ServiceOptions& options, store::Store& store, store::BlobStore& blobs, GroupCommitter& committer,
        Directory& directory, Accounts& accounts, std::atomic<bool>& draining, const bus::Bus& clock);
  ~Media();

  // Starts the worker and sweep threads; stop() ends them (idempotent).
  void start();
  void stop();

  // The gateway's streaming decision for the media upload routes; monostate for the rest.
  // It authenticates the bearer token and may read the user's quota: store reads, so in
  // Redis mode TernService runs it on a reader thread (it is thread-safe).
  gateway::BodyDecision open_body(const gateway::HttpRequest& head);
  // Is `head` an upload (POST /v1/media, or PUT of a resumable upload's chunk)? No store read.
  static bool is_upload(const gateway::HttpRequest& head);
  // Answers the buffered media routes; false if `req` is not one of them.
  bool handle(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply& reply);

  // The send path: every id must name a blob `device.user` may fetch (see above). The lease
  // keeps the sweep off these blobs until the send's commit finished: hold it until then.
  Result<MediaLeases::Lease> check_send(const DeviceRef& device, const std::vector<std::string>& ids);

  // One sweep (also run by the sweep thread): expired messages erased from disk and their
  // index rows dropped; blobs whose last reference went, or never sent within the grace
  // period, removed; idle resumable uploads dropped. Bounded per call. `now`: the shared clock
  // (Bus::clock_ms); idle uploads go by file times against this node's clock.
  SweepStats sweep(int64_t now);

 private:
  class StreamSink;
  friend class StreamSink;

  bool can_access(const std::string& user, const std::string& id, int64_t now);
  // Quota: checks that `bytes` more fit beside the user's blobs and uploads in progress
  // (false: over the quota, or the usage unreadable) and, with `hold`, holds them until
  // release gives them back or settle turns them into stored bytes; forget_stored drops
  // the bytes of a collected blob.
  bool reserve(const std::string& user, uint64_t bytes, bool hold = true);
  void release(const std::string& user, uint64_t bytes);
  void settle(const std::string& user, uint64_t held, uint64_t stored);
  void forget_stored(const std::string& user, uint64_t bytes);
  // Makes the blob durable and records it, on the worker thread; answers reply.
  void finalize(std::string user, std::unique_ptr<store::BlobWriter> writer, uint64_t reserved, gateway::HttpReply reply);
  bool post_work(std::function<void()> fn);
  Result<void> commit_and_wait(store::Batch batch);
  void download(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req, gateway::HttpReply& reply);
  void create_upload(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply& reply);
  gateway::BodyDecision resume_upload(const DeviceRef& me, const std::string& uid, const gateway::HttpRequest& head);

  const ServiceOptions& options_;
  store::Store& store_;
  store::BlobStore& blobs_;
  GroupCommitter& committer_;
  Directory& directory_;
  Accounts& accounts_;
  std::atomic<bool>& draining_;
  const bus::Bus& clock_;
  KeyedRateLimiter upload_limiter_;

  std::mutex mu_;  // never held across a store call (fibers call in: services/store_reads.h)
  // A user's quota usage, when loaded: `stored` is read from the store (its blobs) and then
  // kept up by this node's uploads and collections, until media_usage_ttl_ms passed (0:
  // never; Redis mode, where other nodes store and collect too: --redis-media-usage-ttl-ms);
  // `held` is this node's uploads streaming now, never re-read.
  struct Usage {
    uint64_t stored = 0;
    uint64_t held = 0;
    int64_t loaded_ms = 0;  // monotonic
  };
  std::unordered_map<std::string, Usage> usage_;
  std::string orphan_cursor_;  // where the orphan-blob pass resumes
  // Candidates the last sweep skipped because a send held a lease on them, looked at again
  // by the next (at most kMaxSkipped: one beyond them is looked at again only when a message
  // naming it expires).
  static constexpr size_t kMaxSkipped = 4096;
  std::set<std::string> skipped_;

  // Worker (finalization) and sweep threads.
  std::mutex work_mu_;
  std::condition_variable work_cv_;
  std::deque<std::function<void()>> work_;
  bool stopping_ = false;
  std::thread worker_;
  std::thread sweeper_;

  // Sends in flight vs. the sweep (media_leases.h); across nodes through the store's marks,
  // given back on the worker. Declared last: destroyed first, before the worker's queue.
  MediaLeases leases_;
};

}  // namespace tern::services
