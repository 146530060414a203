// TernService: the services composed behind the gateway's ServiceInterface. Owns the group
// committer, the caches, the sequencer, presence, accounts and the HTTP API; borrows the
// store and the bus, which the server's composition root chose (RocksDB/local today).
//
// Lifecycle: construct → start() → (serve) → begin_drain() → stop(). Thread-safe after start.
#pragma once
#include <atomic>
#include <memory>

#include "base/loops.h"
#include "bus/bus.h"
#include "services/admission.h"
#include "gateway/service_interface.h"
#include "services/accounts.h"
#include "services/directory.h"
#include "services/store_reads.h"
#include "services/group_committer.h"
#include "services/http_api.h"
#include "services/live_fanout.h"
#include "services/key_directory.h"
#include "services/media.h"
#include "services/presence.h"
#include "services/blocks.h"
#include "services/presence_privacy.h"
#include "services/safety_api.h"
#include "services/admin_api.h"
#include "services/push_notifier.h"
#include "services/sequencer.h"
#include "services/service_context.h"
#include "services/service_options.h"
#include "store/blob_store.h"
#include "store/store.h"

namespace tern::services {

class TernService final : public gateway::ServiceInterface {
 public:
  // metrics_token: empty = any device token may read /metrics.
  // Conversations are owned by the loops (one sequencer shard each); connections must be
  // opened on one of these loops.
  // blobs: where media lives (issue 11); null disables the media routes.
  TernService(Loops& loops, store::Store& store, bus::Bus& bus, ServiceOptions options,
              const std::string& metrics_token, store::BlobStore* blobs = nullptr);
  ~TernService() override;

  void start();
  // New sends and registrations are refused with `draining`; /healthz answers 503.
  void begin_drain();
  // Commits everything queued and stops the writer thread.
  void stop();

  void handle_http(gateway::HttpRequest request, gateway::HttpReply reply) override;
  gateway::BodyDecision open_body(const gateway::HttpRequest& head) override;
  // Through StoreReads: in Redis mode an upload's decision (its token check and quota read)
  // runs on a reader thread; other requests are answered inline (buffered, no read).
  void decide_body(const gateway::HttpRequest& head, BodyDone done) override;
  // Through StoreReads: in Redis mode the token check (two reads) runs on a reader thread.
  void authenticate(const std::string& token, AuthDone done) override;
  std::shared_ptr<gateway::FrameHandler> open(std::shared_ptr<gateway::Connection> connection, DeviceRef device) override;

  // Issue 12: the admin endpoint's service (admin_api.h), for a Listener of its own.
  gateway::ServiceInterface& enable_admin(const std::string& admin_token,
                                          std::function<void(boost::json::object&)> queues = nullptr);

 private:
  const ServiceOptions options_;
  store::Store& store_;
  bus::Bus& bus_;
  std::atomic<bool> draining_{false};
  Admission admission_;
  std::unique_ptr<GroupCommitter> committer_;
  std::unique_ptr<Directory> directory_;
  std::unique_ptr<StoreReads> reads_;  // joined before the directory and store it reads
  std::unique_ptr<Accounts> accounts_;
  std::unique_ptr<Sequencer> sequencer_;
  std::unique_ptr<Presence> presence_;
  std::unique_ptr<LiveFanout> fanout_;
  std::unique_ptr<KeyDirectory> keys_;
  std::unique_ptr<Media> media_;
  std::unique_ptr<ServiceContext> ctx_;
  std::unique_ptr<HttpApi> http_;
  // Issue 12.
  std::unique_ptr<Blocks> blocks_;
  std::unique_ptr<PresencePrivacy> privacy_;
  std::unique_ptr<SafetyApi> safety_;
  std::unique_ptr<AdminApi> admin_;
  std::unique_ptr<PushNotifier> push_;  // only with --push-webhook
};

}  // namespace tern::services
