#include "services/media.h"

#include <algorithm>
#include <charconv>
#include <future>
#include <optional>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "base/thread_name.h"
#include "proto/frames.h"
#include "services/token.h"

namespace tern::services {
namespace json = boost::json;
namespace {

Counter& uploads_done = MetricsRegistry::global().counter("tern_media_uploads_total", "media blobs uploaded");
Counter& downloads_done = MetricsRegistry::global().counter("tern_media_downloads_total", "media downloads answered");
Counter& blobs_collected = MetricsRegistry::global().counter("tern_media_blobs_collected_total", "blobs garbage-collected");
Counter& messages_erased = MetricsRegistry::global().counter("tern_messages_erased_total",
                                                             "expired messages erased from disk");

constexpr size_t kSweepPage = 1024;       // index rows per step
constexpr size_t kSweepRounds = 16;       // steps per sweep: bounds one sweep's work
constexpr size_t kRefsChecked = 256;      // references looked at per access check
constexpr size_t kUserMediaLimit = 1000000;
constexpr size_t kWorkQueue = 64;         // finalizations waiting → overloaded
constexpr size_t kOrphanPage = 256;       // blob files looked at per sweep

gateway::HttpResponse error_response(const Error& e) {
  return gateway::HttpResponse{http_status(e.code), proto::encode_http_error(e)};
}
gateway::HttpResponse json_response(int status, const json::value& v) {
  return gateway::HttpResponse{status, json::serialize(v)};
}
gateway::HttpResponse not_found() {
  return error_response(make_error(ErrorCode::kNotFound, "no such media"));
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// "bytes a-b/N" (an upload's Content-Range).
bool parse_content_range(std::string_view v, uint64_t& first, uint64_t& last, uint64_t& total) {
  constexpr std::string_view kUnit = "bytes ";
  if (v.substr(0, kUnit.size()) != kUnit) return false;
  v.remove_prefix(kUnit.size());
  const size_t dash = v.find('-'), slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) return false;
  auto a = parse_u64(v.substr(0, dash)), b = parse_u64(v.substr(dash + 1, slash - dash - 1)),
       n = parse_u64(v.substr(slash + 1));
  if (!a || !b || !n || *a > *b || *b >= *n) return false;
  first = *a;
  last = *b;
  total = *n;
  return true;
}

// A download's Range (RFC 9110 §14.1.2), one range only: "bytes=a-b", "bytes=a-",
// "bytes=-n". Several ranges, another unit or a malformed value → the whole blob (a server
// may ignore Range). nullopt range with unsatisfiable=true → 416.
struct RangeAsk {
  bool whole = true;
  bool unsatisfiable = false;
  uint64_t first = 0, last = 0;
};
RangeAsk parse_range(std::string_view v, uint64_t size) {
  RangeAsk r;
  constexpr std::string_view kUnit = "bytes=";
  if (v.substr(0, kUnit.size()) != kUnit || v.find(',') != std::string_view::npos) return r;
  v.remove_prefix(kUnit.size());
  const size_t dash = v.find('-');
  if (dash == std::string_view::npos) return r;
  const std::string_view a = v.substr(0, dash), b = v.substr(dash + 1);
  if (a.empty()) {  // suffix: the last n bytes
    auto n = parse_u64(b);
    if (!n) return r;
    r.whole = false;
    if (*n == 0 || size == 0) {
      r.unsatisfiable = true;
      return r;
    }
    r.first = size - std::min(*n, size);
    r.last = size - 1;
    return r;
  }
  auto first = parse_u64(a);
  if (!first) return r;
  std::optional<uint64_t> last;
  if (!b.empty()) {
    last = parse_u64(b);
    if (!last || *last < *first) return r;
  }
  r.whole = false;
  if (*first >= size) {
    r.unsatisfiable = true;
    return r;
  }
  r.first = *first;
  r.last = std::min(last.value_or(size - 1), size - 1);
  return r;
}

class ReaderSource final : public gateway::BodySource {
 public:
  ReaderSource(std::unique_ptr<store::BlobReader> reader, uint64_t offset)
      : reader_(std::move(reader)), offset_(offset) {}
  Result<size_t> read(char* out, size_t n) override {
    auto got = reader_->read(offset_, out, n);
    if (got) offset_ += *got;
    return got;
  }

 private:
  std::unique_ptr<store::BlobReader> reader_;
  uint64_t offset_;
};

}  // namespace

// Streams one request body into a writer: a whole-blob POST's (the writer dies with the sink
// unless finished: nothing is left behind), or a resumable upload's chunk (`partial`: the
// blob store's writer of the upload, which keeps the bytes and lets go of the upload when the
// sink goes, finished or not).
class Media::StreamSink final : public gateway::BodySink {
 public:
  StreamSink(Media& media, std::string user, std::unique_ptr<store::BlobWriter> writer, uint64_t expected)
      : media_(media), user_(std::move(user)), writer_(std::move(writer)), expected_(expected) {}
  StreamSink(Media& media, std::string user, std::string upload_id, std::unique_ptr<store::PartialWriter> partial,
             uint64_t expected)
      : media_(media), user_(std::move(user)), upload_id_(std::move(upload_id)), partial_(std::move(partial)),
        expected_(expected) {}

  ~StreamSink() override {
    if (!upload_id_.empty() || finished_) return;
    media_.release(user_, expected_);  // the temporary goes with writer_
  }

  Result<void> write(std::string_view chunk) override {
    store::BlobWriter& w = partial_ ? *partial_ : *writer_;
    received_ += chunk.size();
    if (received_ > expected_) return make_error(ErrorCode::kTooLarge, "body longer than announced");
    return w.write(chunk);
  }

  void finish(gateway::HttpReply reply) override {
    finished_ = true;
    if (upload_id_.empty()) return media_.finalize(user_, std::move(writer_), expected_, std::move(reply));
    const uint64_t offset = partial_->size(), size = partial_->announced();
    // A resumable upload's bytes were never reserved (they count while the partial exists).
    if (offset == size) return media_.finalize(user_, std::move(partial_), 0, std::move(reply));
    reply(json_response(200, json::object{{"upload_id", upload_id_}, {"offset", offset}, {"size", size}}));
  }

 private:
  Media& media_;
  const std::string user_;
  const std::string upload_id_;
  std::unique_ptr<store::BlobWriter> writer_;
  std::unique_ptr<store::PartialWriter> partial_;
  const uint64_t expected_;
  uint64_t received_ = 0;
  bool finished_ = false;
};

Media::Media(const ServiceOptions& options, store::Store& store, store::BlobStore& blobs, GroupCommitter& committer,
             Directory& directory, Accounts& accounts, std::atomic<bool>& draining, const bus::Bus& clock)
    : options_(options),
      store_(store),
      blobs_(blobs),
      committer_(committer),
      directory_(directory),
      accounts_(accounts),
      draining_(draining),
      clock_(clock),
      upload_limiter_(options.media_upload_rate_per_min / 60.0, options.media_upload_burst, options.rate_limiter_keys,
                      {&store, "upload"}),
      leases_(&store, [this](std::function<void()> fn) { return post_work(std::move(fn)); }) {}

Media::~Media() { stop(); }

void Media::start() {
  // No writer survives a restart: every temporary left by the previous run is garbage.
  if (auto n = blobs_.remove_stale_temporaries(now_ms() + 1); n && *n)
    spdlog::info("event=media_temporaries_removed count={}", *n);
  worker_ = std::thread([this] {
    set_thread_name("tern-media");
    std::unique_lock lock(work_mu_);
    for (;;) {
      work_cv_.wait(lock, [this] { return stopping_ || !work_.empty(); });
      if (work_.empty()) return;  // stopping, and nothing left
      auto fn = std::move(work_.front());
      work_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  });
  sweeper_ = std::thread([this] {
    set_thread_name("tern-media-sweep");
    std::unique_lock lock(work_mu_);
    while (!work_cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(options_.sweep_interval_ms, 10)),
                              [this] { return stopping_; })) {
      lock.unlock();
      const int64_t started = mono_us();
      const SweepStats s = sweep(clock_.clock_ms());
      if (s.expired_messages || s.blobs_removed || s.uploads_expired)
        spdlog::info("event=media_sweep expired_messages={} blobs_removed={} uploads_expired={} ms={:.1f}",
                     s.expired_messages, s.blobs_removed, s.uploads_expired, (mono_us() - started) / 1000.0);
      lock.lock();
    }
  });
}

void Media::stop() {
  {
    std::lock_guard lock(work_mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  if (sweeper_.joinable()) sweeper_.join();
}

bool Media::post_work(std::function<void()> fn) {
  {
    std::lock_guard lock(work_mu_);
    if (stopping_ || work_.size() >= kWorkQueue) return false;
    work_.push_back(std::move(fn));
  }
  work_cv_.notify_all();
  return true;
}

Result<void> Media::commit_and_wait(store::Batch batch) {
  auto done = std::make_shared<std::promise<Result<void>>>();
  auto f = done->get_future();
  committer_.submit(std::move(batch), [done](const Result<void>& r) { done->set_value(r); });
  return f.get();
}

// ---- quota ----

bool Media::reserve(const std::string& user, uint64_t bytes, bool hold) {
  // The user's resumable uploads in progress count with their announced sizes, read from the
  // blob store (where every node sharing the media directory sees them), never held here.
  auto open = blobs_.partials_of(user, options_.max_open_uploads);
  if (!open) return false;
  uint64_t need = bytes;
  for (const store::PartialInfo& p : *open) need += p.announced;
  // Decides with the user's usage (under mu_): fits, and then held if asked.
  auto decide = [&](Usage& u) {
    if (u.stored + u.held + need > options_.media_quota_bytes) return false;
    if (hold) u.held += bytes;
    return true;
  };
  const int64_t now = mono_us() / 1000;
  {
    std::lock_guard lock(mu_);
    auto it = usage_.find(user);
    // Stale after media_usage_ttl_ms: other nodes store and collect the user's blobs too.
    if (it != usage_.end() && (options_.media_usage_ttl_ms == 0 || now - it->second.loaded_ms < options_.media_usage_ttl_ms))
      return decide(it->second);
  }
  // The store read of a user's blobs runs without the lock (a fiber may wait for Redis
  // there, services/store_reads.h); what this node holds for uploads meanwhile stays.
  auto mine = store_.user_media(user, kUserMediaLimit);
  if (!mine) return false;
  uint64_t total = 0;
  for (const auto& [id, size] : *mine) total += size;
  std::lock_guard lock(mu_);
  if (usage_.size() >= options_.rate_limiter_keys && !usage_.count(user)) usage_.clear();  // a cache: reloaded on use
  Usage& u = usage_[user];
  u.stored = total;
  u.loaded_ms = now;  // when the read began: the copy is no newer than that
  return decide(u);
}

void Media::release(const std::string& user, uint64_t bytes) { settle(user, bytes, 0); }

void Media::settle(const std::string& user, uint64_t held, uint64_t stored) {
  std::lock_guard lock(mu_);
  auto it = usage_.find(user);
  if (it == usage_.end()) return;
  it->second.held -= std::min(it->second.held, held);
  it->second.stored += stored;
}

void Media::forget_stored(const std::string& user, uint64_t bytes) {
  std::lock_guard lock(mu_);
  if (auto it = usage_.find(user); it != usage_.end()) it->second.stored -= std::min(it->second.stored, bytes);
}

// ---- upload ----

namespace {
constexpr std::string_view kUploads = "/v1/media/uploads/";
bool is_chunk(const gateway::HttpRequest& head) { return head.method == "PUT" && head.path.rfind(kUploads, 0) == 0; }
}  // namespace

bool Media::is_upload(const gateway::HttpRequest& head) {
  return (head.path == "/v1/media" && head.method == "POST") || is_chunk(head);
}

gateway::BodyDecision Media::open_body(const gateway::HttpRequest& head) {
  if (!is_upload(head)) return std::monostate{};
  const bool chunk = is_chunk(head);
  auto me = accounts_.authenticate(head.bearer_token);
  if (!me) return error_response(me.error());
  if (draining_.load()) return error_response(make_error(ErrorCode::kDraining, "server is shutting down"));
  if (!head.content_length)
    return error_response(make_error(ErrorCode::kMalformed, "an upload needs a Content-Length"));
  if (chunk) return resume_upload(*me, head.path.substr(kUploads.size()), head);
  const uint64_t n = *head.content_length;
  if (n > options_.max_media_bytes)
    return error_response(make_error(ErrorCode::kTooLarge, "media over " + std::to_string(options_.max_media_bytes) + " bytes"));
  if (!upload_limiter_.take(me->user, mono_us()))
    return error_response(make_error(ErrorCode::kRateLimited, "too many uploads; retry later"));
  if (!reserve(me->user, n)) return error_response(make_error(ErrorCode::kLimitExceeded, "media quota exceeded"));
  auto writer = blobs_.create();
  if (!writer) {
    release(me->user, n);
    return error_response(writer.error());
  }
  return std::shared_ptr<gateway::BodySink>(std::make_shared<StreamSink>(*this, me->user, std::move(*writer), n));
}

gateway::BodyDecision Media::resume_upload(const DeviceRef& me, const std::string& uid, const gateway::HttpRequest& head) {
  // The upload may have been created, or continued, through another node sharing the media
  // directory: its state is the blob store's partial, held by this writer until the sink goes.
  auto w = blobs_.open_partial(uid, me.user);
  if (!w) return error_response(w.error());  // 404 no such upload, 400 a chunk in progress
  const uint64_t offset = (*w)->size(), size = (*w)->announced();
  uint64_t first = 0, last = 0, total = 0;
  if (!parse_content_range(head.content_range, first, last, total))
    return error_response(make_error(ErrorCode::kMalformed, "Content-Range must be 'bytes first-last/size'"));
  if (total != size || first != offset || last - first + 1 != *head.content_length) {
    Error e = make_error(ErrorCode::kInvalidArgument, "the chunk must start at the upload's offset and match its size");
    e.detail_json = R"({"offset":)" + std::to_string(offset) + "}";
    return error_response(e);
  }
  return std::shared_ptr<gateway::BodySink>(
      std::make_shared<StreamSink>(*this, me.user, uid, std::move(*w), *head.content_length));
}

void Media::create_upload(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply& reply) {
  if (draining_.load()) return reply(error_response(make_error(ErrorCode::kDraining, "server is shutting down")));
  boost::system::error_code ec;
  json::value v = json::parse(req.body, ec);
  const json::object* o = ec ? nullptr : v.if_object();
  const json::value* size = o ? o->if_contains("size") : nullptr;
  if (!size || !(size->is_int64() || size->is_uint64()))
    return reply(error_response(make_error(ErrorCode::kMalformed, "body must be {\"size\":<bytes>}")));
  const int64_t n = size->is_int64() ? size->as_int64() : static_cast<int64_t>(std::min<uint64_t>(size->as_uint64(), INT64_MAX));
  if (n <= 0) return reply(error_response(make_error(ErrorCode::kInvalidArgument, "size must be at least 1")));
  if (static_cast<uint64_t>(n) > options_.max_media_bytes)
    return reply(error_response(make_error(ErrorCode::kTooLarge, "media over " + std::to_string(options_.max_media_bytes) + " bytes")));
  if (!upload_limiter_.take(me.user, mono_us()))
    return reply(error_response(make_error(ErrorCode::kRateLimited, "too many uploads; retry later")));
  // The limits count the partials in the (possibly shared) media directory: every node's.
  auto mine = blobs_.partials_of(me.user, options_.max_open_uploads);
  if (!mine) return reply(error_response(mine.error()));
  auto all = blobs_.count_partials();
  if (!all) return reply(error_response(all.error()));
  if (mine->size() >= options_.max_open_uploads_per_user || *all >= options_.max_open_uploads)
    return reply(error_response(make_error(ErrorCode::kLimitExceeded, "too many uploads in progress")));
  // Checked, not held: once the partial exists, its announced size counts by itself.
  if (!reserve(me.user, static_cast<uint64_t>(n), false))
    return reply(error_response(make_error(ErrorCode::kLimitExceeded, "media quota exceeded")));
  const std::string id = random_hex(16);
  if (auto r = blobs_.create_partial(id, me.user, static_cast<uint64_t>(n)); !r) return reply(error_response(r.error()));
  const int64_t expires = now_ms() + options_.upload_expiry_ms;  // idle by file times: this node's clock
  reply(json_response(201, json::object{{"upload_id", id}, {"offset", 0}, {"size", n}, {"expires_at", expires}}));
}

void Media::finalize(std::string user, std::unique_ptr<store::BlobWriter> writer, uint64_t reserved,
                     gateway::HttpReply reply) {
  auto w = std::shared_ptr<store::BlobWriter>(std::move(writer));
  const bool queued = post_work([this, user, w, reserved, reply]() mutable {
    auto info = w->commit();  // fsync + rename: off the loops
    if (!info) w->abandon();
    w.reset();
    if (!info) {
      release(user, reserved);
      return reply(error_response(info.error()));
    }
    // The same content uploaded again by the same user is one blob, counted once.
    bool already = false;
    if (auto owners = store_.media_owners(info->id); owners)
      already = std::any_of(owners->begin(), owners->end(), [&](const store::MediaOwner& o) { return o.user == user; });
    store::Batch b;
    b.add(store::PutMedia{info->id, user, info->size, clock_.clock_ms()});
    auto r = commit_and_wait(std::move(b));
    // What was held for it is stored now (or given back); a resumable upload held nothing.
    settle(user, reserved, r && !already ? info->size : 0);
    if (!r) return reply(error_response(r.error()));
    uploads_done.inc();
    spdlog::debug("event=media_uploaded user={} size={}", user, info->size);
    reply(json_response(201, json::object{{"media_id", info->id}, {"size", info->size}}));
  });
  if (!queued) {
    w->abandon();
    release(user, reserved);
    reply(error_response(make_error(ErrorCode::kOverloaded, "too many uploads being stored; retry later")));
  }
}

// ---- access and download ----

bool Media::can_access(const std::string& user, const std::string& id, int64_t now) {
  auto owners = store_.media_owners(id);
  if (!owners || owners->empty()) return false;  // collected, or never uploaded
  for (const auto& o : *owners)
    if (o.user == user) return true;
  auto refs = store_.media_refs(id, kRefsChecked);
  if (!refs) return false;
  for (const auto& ref : *refs) {
    if (ref.expires_at && ref.expires_at <= now) continue;
    auto conv = directory_.conversation(ref.conversation_id);
    if (!conv || !*conv) continue;
    const store::Member* m = find_member(**conv, user);
    if (m && m->joined_seq <= ref.seq && (m->left_seq == 0 || ref.seq <= m->left_seq)) return true;
  }
  return false;
}

Result<MediaLeases::Lease> Media::check_send(const DeviceRef& device, const std::vector<std::string>& ids) {
  // Leased first, checked second: a blob the sweep starts collecting after the check cannot
  // lose its last owner row while this send is in flight.
  auto lease = leases_.acquire(ids);
  if (!lease) return lease.error();
  const int64_t now = clock_.clock_ms();
  for (const auto& id : ids)
    if (!can_access(device.user, id, now))
      return make_error(ErrorCode::kNotFound, "no such media (or not visible to the sender): " + id);
  return lease;
}

void Media::download(const DeviceRef& me, const std::string& id, const gateway::HttpRequest& req,
                     gateway::HttpReply& reply) {
  if (!valid_media_id(id) || !can_access(me.user, id, clock_.clock_ms())) return reply(not_found());
  auto reader = blobs_.open(id);
  if (!reader) return reply(reader.error().code == ErrorCode::kNotFound ? not_found() : error_response(reader.error()));
  const uint64_t size = (*reader)->size();
  const RangeAsk ask = req.range.empty() ? RangeAsk{} : parse_range(req.range, size);
  if (ask.unsatisfiable) {
    gateway::HttpResponse r = error_response(make_error(ErrorCode::kInvalidArgument, "range not satisfiable"));
    r.status = 416;
    r.headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
    return reply(std::move(r));
  }
  gateway::HttpResponse r;
  r.content_type = "application/octet-stream";
  r.headers.emplace_back("Accept-Ranges", "bytes");
  uint64_t first = 0, length = size;
  if (!ask.whole) {
    first = ask.first;
    length = ask.last - ask.first + 1;
    r.status = 206;
    r.headers.emplace_back("Content-Range", "bytes " + std::to_string(ask.first) + "-" + std::to_string(ask.last) +
                                                "/" + std::to_string(size));
  }
  r.source = std::make_shared<ReaderSource>(std::move(*reader), first);
  r.source_length = length;
  downloads_done.inc();
  reply(std::move(r));
}

bool Media::handle(const DeviceRef& me, const gateway::HttpRequest& req, gateway::HttpReply& reply) {
  constexpr std::string_view kMedia = "/v1/media/", kUploads = "/v1/media/uploads/";
  const std::string& path = req.path;
  if (path == "/v1/media" && req.method == "POST") {
    reply(error_response(make_error(ErrorCode::kInvalidArgument, "an upload needs a non-empty body")));
    return true;
  }
  if (path == "/v1/media/uploads" && req.method == "POST") {
    create_upload(me, req, reply);
    return true;
  }
  if (path.rfind(kUploads, 0) == 0) {
    const std::string uid = path.substr(kUploads.size());
    if (req.method == "GET") {
      auto st = blobs_.stat_partial(uid, me.user);
      if (!st) {
        reply(error_response(st.error()));
      } else if (!*st) {
        reply(error_response(make_error(ErrorCode::kNotFound, "no such upload")));
      } else {
        reply(json_response(200, json::object{{"upload_id", uid}, {"offset", (*st)->offset}, {"size", (*st)->announced}}));
      }
      return true;
    }
    if (req.method == "PUT") {  // an empty chunk: nothing to stream
      reply(error_response(make_error(ErrorCode::kInvalidArgument, "a chunk needs a non-empty body")));
      return true;
    }
    return false;
  }
  if (path.rfind(kMedia, 0) == 0 && req.method == "GET") {
    download(me, path.substr(kMedia.size()), req, reply);
    return true;
  }
  return false;
}

// ---- sweep ----

SweepStats Media::sweep(int64_t now) {
  SweepStats stats;
  std::set<std::string> candidates;
  {
    std::lock_guard lock(mu_);
    candidates.swap(skipped_);  // what the last sweep skipped under a lease is looked at again
  }

  // 1. Expired messages: erased from disk first, then their index rows (and media
  //    references) dropped, so a crash in between only repeats the erasure.
  for (size_t round = 0; round < kSweepRounds; ++round) {
    auto due = store_.expiring_messages(now, kSweepPage);
    if (!due) {
      spdlog::error("event=sweep_failed step=expiring error=\"{}\"", due.error().message);
      break;
    }
    if (due->empty()) break;
    if (auto r = store_.erase_expired(*due); !r) {
      spdlog::error("event=sweep_failed step=erase error=\"{}\"", r.error().message);
      break;
    }
    store::Batch b;
    for (auto& m : *due) {
      for (const auto& id : m.media) candidates.insert(id);
      b.add(store::MessageExpired{std::move(m.conversation_id), m.seq, m.expires_at, std::move(m.media)});
    }
    const size_t n = b.ops.size();
    if (auto r = commit_and_wait(std::move(b)); !r) {
      spdlog::error("event=sweep_failed step=expired_rows error=\"{}\"", r.error().message);
      break;
    }
    stats.expired_messages += n;
    messages_erased.inc(n);
    if (n < kSweepPage) break;
  }

  // 2. Uploads past the grace period get looked at once (their pending row goes).
  const int64_t cutoff = now - options_.media_grace_ms;
  if (auto pending = store_.pending_media(cutoff, kSweepPage); pending && !pending->empty()) {
    store::Batch b;
    for (const auto& p : *pending) {
      candidates.insert(p.id);
      b.add(store::DropPendingMedia{p.id, p.owner, p.created_ts});
    }
    if (auto r = commit_and_wait(std::move(b)); !r)
      spdlog::error("event=sweep_failed step=pending error=\"{}\"", r.error().message);
  }

  // 3. A candidate nothing refers to loses the owner rows older than the grace period; with
  //    no owner left, the blob goes.
  //    A blob that a send in flight names is skipped (next sweep); one being looked at here
  //    cannot be named by a new send until the look is over (media_leases.h).
  std::set<std::string> skipped;
  for (const auto& id : candidates) {
    if (!leases_.begin_collect(id)) {
      // A send names it (here or on another node), or the store cannot say: looked at again
      // next sweep, since nothing else makes it a candidate again if that send never commits.
      if (skipped.size() < kMaxSkipped) skipped.insert(id);
      continue;
    }
    struct EndCollect {
      MediaLeases& leases;
      const std::string& id;
      ~EndCollect() { leases.end_collect(id); }
    } end_collect{leases_, id};
    auto refs = store_.media_refs(id, 1);
    if (!refs || !refs->empty()) continue;
    auto owners = store_.media_owners(id);
    if (!owners) continue;
    store::Batch b;
    size_t kept = 0;
    for (const auto& o : *owners) {
      if (o.created_ts < cutoff) {
        b.add(store::DeleteMedia{id, o.user});
        forget_stored(o.user, o.size);
      } else {
        ++kept;
      }
    }
    if (!b.empty() && !commit_and_wait(std::move(b))) continue;
    if (kept == 0) {
      if (auto removed = blobs_.remove(id); removed && *removed) {
        ++stats.blobs_removed;
        blobs_collected.inc();
      }
    }
  }

  {
    std::lock_guard lock(mu_);
    skipped_.merge(skipped);
  }

  // 4. Blob files without an owner row (the process died between publishing a blob and
  //    recording it), a page per sweep.
  {
    std::string cursor;
    {
      std::lock_guard lock(mu_);
      cursor = orphan_cursor_;
    }
    auto page = blobs_.list(cursor, kOrphanPage);
    if (page) {
      for (const auto& b : *page) {
        if (b.mtime_ms >= cutoff) continue;
        auto owners = store_.media_owners(b.id);
        if (owners && owners->empty()) {
          if (auto removed = blobs_.remove(b.id); removed && *removed) {
            ++stats.blobs_removed;
            blobs_collected.inc();
          }
        }
      }
      std::lock_guard lock(mu_);
      orphan_cursor_ = page->size() < kOrphanPage ? std::string() : page->back().id;
    }
  }

  // 5. Idle resumable uploads expire with their bytes (any node's: the partials are shared).
  //    Their idleness is a file time, the file system's clock, compared with this node's own.
  if (auto n = blobs_.remove_idle_partials(now_ms() - options_.upload_expiry_ms); n)
    stats.uploads_expired = *n;
  else
    spdlog::error("event=sweep_failed step=uploads error=\"{}\"", n.error().message);
  return stats;
}

}  // namespace tern::services
