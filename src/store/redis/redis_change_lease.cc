#include "store/redis/redis_change_lease.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include <hiredis/hiredis.h>

#include "store/redis/redis_cluster_commit.h"
#include "store/redis/redis_scripts.h"

namespace tern::store::redis {
namespace {

std::string lease_key(std::string_view id) { return "{c:" + std::string(id) + "}:lk"; }

}  // namespace

Result<void> ChangeLeases::take(std::string_view id, std::string_view expected) {
  if (token_.empty()) {
    std::random_device rd;
    char buf[24];
    std::snprintf(buf, sizeof buf, "l%08x%08x", rd(), rd());
    token_ = buf;
  }
  const std::string lease = lease_key(id);
  const std::string meta = "{c:" + std::string(id) + "}:m";
  const std::string life = std::to_string(life_.count());
  auto r = cluster_.run1(key_slot(lease), {"EVAL", scripts::kLeaseChange, "2", lease, meta, token_, expected, life});
  if (!r) return r.error();
  if ((*r)->type == REDIS_REPLY_ERROR) return redis_reply_error(std::string_view((*r)->str, (*r)->len));
  if ((*r)->type != REDIS_REPLY_INTEGER) return make_error(ErrorCode::kInternal, "redis: change lease: unexpected reply");
  if ((*r)->integer == 0) return make_error(ErrorCode::kExists, "the conversation changed meanwhile");
  if ((*r)->integer == 2) return make_error(ErrorCode::kExists, "another node is changing the conversation");
  ids_.emplace_back(id);
  return {};
}

std::string_view ChangeLeases::token_for(std::string_view id) const {
  return std::find(ids_.begin(), ids_.end(), id) != ids_.end() ? std::string_view(token_) : std::string_view();
}

void ChangeLeases::release() {
  for (const std::string& id : ids_) {
    const std::string lease = lease_key(id);
    (void)cluster_.run1(key_slot(lease), {"EVAL", scripts::kLeaseRelease, "1", lease, token_});
  }
  ids_.clear();
}

}  // namespace tern::store::redis
