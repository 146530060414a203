#include "services/media_leases.h"

namespace tern::services {

MediaLeases::MediaLeases() : state_(std::make_shared<State>()) {}

Result<MediaLeases::Lease> MediaLeases::acquire(const std::vector<std::string>& ids) {
  {
    std::lock_guard lock(state_->mu);
    for (const auto& id : ids)
      if (state_->collecting.count(id))
        return make_error(ErrorCode::kNotFound, "no such media (or not visible to the sender): " + id);
    for (const auto& id : ids) ++state_->leased[id];
  }
  // The deleter holds the state and the ids; the pointer itself is only a token.
  auto release = [state = state_, ids](void*) {
    std::lock_guard lock(state->mu);
    for (const auto& id : ids) {
      auto it = state->leased.find(id);
      if (it != state->leased.end() && --it->second == 0) state->leased.erase(it);
    }
  };
  return Lease(static_cast<void*>(state_.get()), std::move(release));
}

bool MediaLeases::begin_collect(const std::string& id) {
  std::lock_guard lock(state_->mu);
  if (state_->leased.count(id)) return false;
  state_->collecting.insert(id);
  return true;
}

void MediaLeases::end_collect(const std::string& id) {
  std::lock_guard lock(state_->mu);
  state_->collecting.erase(id);
}

size_t MediaLeases::leased(const std::string& id) const {
  std::lock_guard lock(state_->mu);
  auto it = state_->leased.find(id);
  return it == state_->leased.end() ? 0 : it->second;
}

}  // namespace tern::services
