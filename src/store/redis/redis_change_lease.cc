#include "store/redis/redis_change_lease.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include <hiredis/hiredis.h>

#include "store/redis/redis_cluster_commit.h"
#include "store/redis/redis_scripts.h"

namespace tern::store::redis {
namespace {

std::string key(std::string_view id, std::string_view suffix) {
  return "{c:" + std::string(id) + "}:" + std::string(suffix);
}

std::string_view text(const redisReply* r) { return std::string_view(r->str, r->len); }

}  // namespace

Result<std::vector<std::string>> ChangeLeases::take(std::string_view id, std::string_view expected,
                                                    const std::vector<std::string_view>& redo) {
  if (token_.empty()) {
    std::random_device rd;
    char buf[24];
    std::snprintf(buf, sizeof buf, "l%08x%08x", rd(), rd());
    token_ = buf;
  }
  const std::string lease = key(id, "lk"), meta = key(id, "m"), record = key(id, "rd");
  const std::string life = std::to_string(life_.count());
  std::vector<std::string_view> argv{"EVAL", scripts::kLeaseChange, "3", lease, meta, record, token_, expected, life};
  argv.insert(argv.end(), redo.begin(), redo.end());
  auto r = cluster_.run1(key_slot(lease), argv);
  if (!r) return r.error();
  const redisReply* x = r->get();
  if (x->type == REDIS_REPLY_ERROR) return redis_reply_error(text(x));
  if (x->type != REDIS_REPLY_ARRAY || x->elements == 0 || x->element[0]->type != REDIS_REPLY_INTEGER)
    return make_error(ErrorCode::kInternal, "redis: change lease: unexpected reply");
  switch (x->element[0]->integer) {
    case 0:
      return make_error(ErrorCode::kExists, "the conversation changed meanwhile");
    case 1:
      held_.push_back(Held{std::string(id), token_});
      return std::vector<std::string>{};
    case 2:
      return make_error(ErrorCode::kExists, "another node is changing the conversation");
    default:
      break;
  }
  // {3, the record's token, its ops...}: a change that stopped before its phase 1.
  if (x->element[0]->integer != 3 || x->elements < 2) return make_error(ErrorCode::kInternal, "redis: change lease: unexpected reply");
  std::vector<std::string> ops;
  for (size_t i = 1; i < x->elements; ++i) {
    if (x->element[i]->type != REDIS_REPLY_STRING) return make_error(ErrorCode::kInternal, "redis: change lease: bad record");
    if (i > 1) ops.emplace_back(text(x->element[i]));
  }
  held_.push_back(Held{std::string(id), std::string(text(x->element[1]))});
  return ops;
}

std::string_view ChangeLeases::token_for(std::string_view id) const {
  auto it = std::find_if(held_.begin(), held_.end(), [&](const Held& h) { return h.id == id; });
  return it != held_.end() ? std::string_view(token_) : std::string_view();
}

std::string_view ChangeLeases::redo_token_for(std::string_view id) const {
  auto it = std::find_if(held_.begin(), held_.end(), [&](const Held& h) { return h.id == id; });
  return it != held_.end() ? std::string_view(it->redo_token) : std::string_view();
}

void ChangeLeases::release(bool drop_others) {
  for (const Held& h : held_) {
    const std::string lease = key(h.id, "lk"), record = key(h.id, "rd");
    (void)cluster_.run1(key_slot(lease), {"EVAL", scripts::kLeaseRelease, "2", lease, record, token_});
    if (drop_others && h.redo_token != token_)
      (void)cluster_.run1(key_slot(lease), {"EVAL", scripts::kLeaseRelease, "2", lease, record, h.redo_token});
  }
  held_.clear();
}

}  // namespace tern::store::redis
