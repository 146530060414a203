#include "services/tern_service.h"

#include <spdlog/spdlog.h>

#include <sodium.h>

#include "services/device_session.h"
#include "services/http_replies.h"
#include "services/token.h"

namespace tern::services {

TernService::TernService(Loops& loops, store::Store& store, bus::Bus& bus, ServiceOptions options,
                         const std::string& metrics_token, store::BlobStore* blobs)
    : options_(std::move(options)), store_(store), bus_(bus), admission_(loops.size()) {
  if (sodium_init() < 0) std::abort();  // no CSPRNG: tokens cannot be made safely
  committer_ = std::make_unique<GroupCommitter>(store_, options_.durable, options_.commit_queue_limit,
                                                options_.max_commit_batch, &loops);
  committer_->set_min_gap(std::chrono::microseconds(options_.commit_gap_us));
  directory_ = std::make_unique<Directory>(store_, options_.directory_cache);
  reads_ = std::make_unique<StoreReads>(loops, options_.read_threads, options_.read_fibers);
  // Redis: HTTP handlers run on reader threads, so their commits' completions (which may
  // read the store) get a thread of their own rather than holding up the writer.
  committer_->set_completion_thread(reads_->offloaded());
  accounts_ = std::make_unique<Accounts>(store_, *committer_, *directory_, options_);
  sequencer_ = std::make_unique<Sequencer>(loops, store_, *reads_, *committer_, *directory_, bus_, options_);
  presence_ = std::make_unique<Presence>(loops.context(0), store_, *committer_, *directory_, bus_, options_);
  sequencer_->set_presence(presence_.get());
  fanout_ = std::make_unique<LiveFanout>(loops, std::chrono::milliseconds(options_.fanout_batch_ms));
  sequencer_->set_fanout(fanout_.get());
  keys_ = std::make_unique<KeyDirectory>(store_, *committer_, *directory_, bus_, options_);
  sequencer_->set_registration_lookup(
      [keys = keys_.get()](const DeviceRef& d) { return keys->registration_id(d); },
      [keys = keys_.get()](const std::vector<DeviceRef>& ds) { return keys->prefetch_registrations(ds); },
      [keys = keys_.get()](const std::vector<DeviceRef>& ds, std::vector<uint32_t>* ids) {
        return keys->registrations_cached(ds, ids);
      });
  if (blobs) {
    media_ = std::make_unique<Media>(options_, store_, *blobs, *committer_, *directory_, *accounts_, draining_, bus_);
    sequencer_->set_media(media_.get());
  }
  // Membership changed on another node (a multi-node bus): its snapshot here is stale.
  bus_.set_change_sink([this](const std::string& id) {
    directory_->forget_conversation(id);
    presence_->membership_changed_elsewhere(id);  // who shares a conversation with whom
  });
  // A device linked, a block list or presence setting changed, or a device's keys replaced, on
  // another node: what this node caches of the user (and of the device) is stale (a change made
  // here is announced to the others).
  bus_.set_user_changed_sink([this](const std::string& user, uint32_t device) {
    if (device != 0) keys_->forget_registration(DeviceRef{user, device});
    directory_->forget_devices(user);
    blocks_->forget(user);
    privacy_->forget(user);
    presence_->revalidate_later(user);
  });
  // Those events may have been missed (pub/sub is not trusted): everything cached is dropped.
  bus_.set_resync_sink([this] {
    spdlog::warn("event=caches_dropped reason=bus_events_missed");
    directory_->forget_all();
    blocks_->forget_all();
    privacy_->forget_all();
    keys_->forget_registrations();
  });
  // Presence changes the bus found by itself (a node that died held a user's last device).
  bus_.set_presence_change_sink([presence = presence_.get()](const std::string& user, bool online, uint64_t order) {
    if (online) presence->device_attached(user, 1, order);
    else presence->device_detached(user, 0, order);
  });
  accounts_->set_devices_changed([this](const std::string& user) { bus_.announce_user_changed(user); });
  // A message committed on another node moves this node's cached head (bus.h set_head_sink).
  bus_.set_head_sink([sequencer = sequencer_.get()](const std::string& id, Seq seq,
                                                    std::shared_ptr<const std::string> frame) {
    sequencer->observe_head(id, seq, std::move(frame));
  });
  // Sends whose conversation this node sequences, handed over by other nodes.
  bus_.set_request_sink([sequencer = sequencer_.get()](std::string payload, bus::Bus::Respond respond) {
    sequencer->serve_forwarded(std::move(payload), std::move(respond));
  });
  // Read-side posts sequenced on other nodes (a multi-node bus) reach this node's followers.
  bus_.set_conversation_sink([fanout = fanout_.get()](std::shared_ptr<const bus::Notification> n) {
    fanout->publish(std::move(n));
  });
  ctx_ = std::make_unique<ServiceContext>(ServiceContext{options_, loops, admission_, store_, *reads_, *committer_, *directory_,
                                                         bus_, *sequencer_, *presence_, *accounts_, draining_,
                                                         *fanout_, keys_.get(), media_.get()});
  http_ = std::make_unique<HttpApi>(*ctx_, metrics_token.empty() ? std::string() : hash_token(metrics_token));
  blocks_ = std::make_unique<Blocks>(store_, *committer_, options_.safety_cache_users);
  privacy_ = std::make_unique<PresencePrivacy>(store_, *blocks_, options_.safety_cache_users);
  safety_ = std::make_unique<SafetyApi>(*ctx_, *blocks_, *privacy_);
  ctx_->safety = safety_.get();
  sequencer_->set_safety(blocks_.get(), privacy_.get());
  presence_->set_privacy(privacy_.get(), blocks_.get());
  if (!options_.push_webhook.empty()) {
    // The URL was checked when the options were parsed; a bad one here leaves push off.
    if (auto push = parse_push_webhook(options_.push_webhook)) {
      push->queue = options_.push_queue;
      push->batch = options_.push_batch;
      push->attempts = options_.push_attempts;
      push_ = std::make_unique<PushNotifier>(store_, *push);
      sequencer_->set_push(push_.get());
    }
  }
}

TernService::~TernService() { stop(); }

gateway::ServiceInterface& TernService::enable_admin(const std::string& admin_token,
                                                     std::function<void(boost::json::object&)> queues) {
  auto all = [this, queues = std::move(queues)](boost::json::object& q) {
    q["push"] = push_ ? push_->queued() : 0;
    if (queues) queues(q);
  };
  admin_ = std::make_unique<AdminApi>(*ctx_, admin_token, std::move(all));
  return *admin_;
}

void TernService::start() {
  committer_->start();
  if (media_) media_->start();
}

void TernService::begin_drain() { draining_.store(true); }

void TernService::stop() {
  if (media_) media_->stop();  // its sweep commits through the committer: first
  if (push_) push_->stop();
  if (presence_) presence_->stop();
  if (reads_) reads_->stop();  // before the committer: a read's completion may submit
  if (committer_) committer_->stop();
}

void TernService::handle_http(gateway::HttpRequest request, gateway::HttpReply reply) {
  if (!reads_->offloaded()) return http_->handle(std::move(request), std::move(reply));
  // Redis: a request's handler reads the store (its token first), so it runs in a fiber on
  // this loop (services/store_reads.h; the handlers are thread-safe). Its answer goes back
  // through the loop's mailbox, whichever thread gives it.
  const size_t loop = ctx_->loops.here();
  auto answer = reads_->via_loop(loop, std::move(reply));
  auto shared = std::make_shared<gateway::HttpRequest>(std::move(request));
  if (!reads_->run_detached(loop, [this, shared, answer] { http_->handle(std::move(*shared), answer); }))
    answer(error_response(make_error(ErrorCode::kUnavailable, "too many store reads waiting; retry")));
}

gateway::BodyDecision TernService::open_body(const gateway::HttpRequest& head) {
  if (!media_) return std::monostate{};
  return media_->open_body(head);
}

void TernService::decide_body(const gateway::HttpRequest& head, BodyDone done) {
  if (!media_ || !reads_->offloaded() || !Media::is_upload(head)) return done(open_body(head));
  const size_t loop = ctx_->loops.here();
  auto answer = reads_->via_loop(loop, std::move(done));
  auto shared = std::make_shared<gateway::HttpRequest>(head);
  if (!reads_->run_detached(loop, [media = media_.get(), shared, answer] { answer(media->open_body(*shared)); }))
    answer(error_response(make_error(ErrorCode::kUnavailable, "too many store reads waiting; retry")));
}

void TernService::authenticate(const std::string& token, AuthDone done) {
  const size_t loop = ctx_->loops.here();
  auto check = [accounts = accounts_.get(), token]() { return accounts->authenticate(token); };
  // Not called from a loop (nowhere to bring the answer back to): checked here.
  if (loop == Loops::kNone) return done(check());
  reads_->run<DeviceRef>(loop, std::move(check), std::move(done));
}

std::shared_ptr<gateway::FrameHandler> TernService::open(std::shared_ptr<gateway::Connection> connection,
                                                         DeviceRef device) {
  auto session = std::make_shared<DeviceSession>(*ctx_, std::move(connection), std::move(device));
  session->start();
  return session;
}

}  // namespace tern::services
