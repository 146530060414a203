#include "services/media_leases.h"

#include <spdlog/spdlog.h>

#include "services/token.h"

namespace tern::services {

using store::Store;

MediaLeases::MediaLeases(Store* shared, Post post)
    : state_(std::make_shared<State>()), shared_(shared), holder_prefix_(random_hex(8)) {
  state_->unmark_here = !post;
  state_->post = std::move(post);
}

MediaLeases::~MediaLeases() {
  std::lock_guard lock(state_->mu);
  state_->post = nullptr;
}

std::string MediaLeases::next_holder() {
  return holder_prefix_ + "." + std::to_string(next_.fetch_add(1, std::memory_order_relaxed));
}

namespace {
Error not_found(const std::string& id) {
  return make_error(ErrorCode::kNotFound, "no such media (or not visible to the sender): " + id);
}
}  // namespace

Result<MediaLeases::Lease> MediaLeases::acquire(const std::vector<std::string>& ids) {
  {
    std::lock_guard lock(state_->mu);
    for (const auto& id : ids)
      if (state_->collecting.count(id)) return not_found(id);
    for (const auto& id : ids) ++state_->leased[id];
  }
  // Then in the store, one blob after another (each its own slot on a Cluster).
  std::string holder;
  size_t taken = 0;
  if (shared_) {
    holder = next_holder();
    for (const auto& id : ids) {
      auto r = shared_->mark_media(id, Store::MediaMark::kLease, holder, kSharedTtlMs);
      if (r && !r->has_value()) break;  // the store keeps no marks: this node's decide
      if (!r || !**r) {
        release(*state_, shared_, ids, holder, taken);
        if (!r) return r.error();
        return not_found(id);
      }
      ++taken;
    }
  }
  // The deleter holds the state and the ids; the pointer itself is only a token.
  auto drop = [state = state_, shared = shared_, ids, holder, taken](void*) {
    release(*state, shared, ids, holder, taken);
  };
  return Lease(static_cast<void*>(state_.get()), std::move(drop));
}

void MediaLeases::release(State& state, Store* shared, const std::vector<std::string>& ids,
                          const std::string& holder, size_t shared_taken) {
  std::function<void()> unmark;
  {
    std::lock_guard lock(state.mu);
    for (const auto& id : ids) {
      auto it = state.leased.find(id);
      if (it != state.leased.end() && --it->second == 0) state.leased.erase(it);
    }
    if (shared_taken == 0) return;
    std::vector<std::string> marked(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(shared_taken));
    unmark = [shared, marked = std::move(marked), holder] {
      for (const auto& id : marked)
        if (auto r = shared->unmark_media(id, Store::MediaMark::kLease, holder); !r)
          spdlog::warn("event=media_unlease_failed error=\"{}\"", r.error().message);  // it expires
    };
    // This may be an event loop: posted. If the post is refused or gone (stopping), the
    // marks expire on their own.
    if (!state.unmark_here) {
      if (state.post) (void)state.post(std::move(unmark));
      return;
    }
  }
  unmark();  // no post was given (tests): here, outside the lock
}

bool MediaLeases::begin_collect(const std::string& id) {
  {
    std::lock_guard lock(state_->mu);
    if (state_->leased.count(id)) return false;
    state_->collecting.insert(id);
  }
  if (!shared_) return true;
  auto r = shared_->mark_media(id, Store::MediaMark::kCollect, holder_prefix_, kSharedTtlMs);
  if (r && (!r->has_value() || **r)) return true;
  std::lock_guard lock(state_->mu);
  state_->collecting.erase(id);
  return false;
}

void MediaLeases::end_collect(const std::string& id) {
  if (shared_)
    if (auto r = shared_->unmark_media(id, Store::MediaMark::kCollect, holder_prefix_); !r)
      spdlog::warn("event=media_uncollect_failed error=\"{}\"", r.error().message);  // it expires
  std::lock_guard lock(state_->mu);
  state_->collecting.erase(id);
}

size_t MediaLeases::leased(const std::string& id) const {
  std::lock_guard lock(state_->mu);
  auto it = state_->leased.find(id);
  return it == state_->leased.end() ? 0 : it->second;
}

}  // namespace tern::services
