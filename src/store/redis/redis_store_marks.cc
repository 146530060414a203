// The store's marks that the nodes on one Redis share beyond the data (store.h's "shared"
// sections): token buckets of the rate limits, media marks, link codes and the report
// counter. Each is one script on its own key; those that expire go by Redis's clock, so the
// nodes' clocks do not matter.
#include <cstdio>
#include <string>
#include <string_view>

#include <hiredis/hiredis.h>

#include "store/redis/redis_cluster_commit.h"
#include "store/redis/redis_scripts.h"
#include "store/redis/redis_store.h"

namespace tern::store::redis {

namespace {
// Every script here answers an integer: it, or the error Redis gave (`what` names the script).
Result<long long> integer_of(Result<Reply> r, const char* what) {
  if (!r) return r.error();
  if ((*r)->type == REDIS_REPLY_ERROR) return redis_reply_error(std::string_view((*r)->str, (*r)->len));
  if ((*r)->type != REDIS_REPLY_INTEGER)
    return make_error(ErrorCode::kInternal, std::string("redis: ") + what + ": unexpected reply");
  return (*r)->integer;
}
}  // namespace

Result<std::optional<bool>> RedisStore::take_tokens(const std::string& key, double rate_per_sec, double burst,
                                                    double n) {
  if (!(rate_per_sec > 0) || !(burst > 0) || !(n >= 0)) return make_error(ErrorCode::kInvalidArgument, "redis: bad token bucket");
  const std::string k = "{rl:" + key + "}";
  auto num = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return std::string(buf);
  };
  const std::string rate = num(rate_per_sec), cap = num(burst), take = num(n);
  auto r = integer_of(eval(scripts::kTakeTokens, tokens_sha_, {k}, {rate, cap, take}), "token bucket");
  if (!r) return r.error();
  return std::optional<bool>(*r == 1);
}

Result<long long> RedisStore::media_mark_script(const std::string& id, std::string_view op, const std::string& holder,
                                                int64_t ttl_ms) {
  const std::string base = "{m:" + id + "}";
  return integer_of(
      eval(scripts::kMediaMark, media_mark_sha_, {base + ":l", base + ":c"}, {op, holder, std::to_string(ttl_ms)}),
      "media mark");
}

Result<std::optional<bool>> RedisStore::mark_media(const std::string& id, MediaMark kind, const std::string& holder,
                                                   int64_t ttl_ms) {
  if (ttl_ms < 1 || holder.empty()) return make_error(ErrorCode::kInvalidArgument, "redis: bad media mark");
  auto r = media_mark_script(id, kind == MediaMark::kLease ? "L" : "C", holder, ttl_ms);
  if (!r) return r.error();
  return std::optional<bool>(*r == 1);
}

Result<void> RedisStore::unmark_media(const std::string& id, MediaMark kind, const std::string& holder) {
  auto r = media_mark_script(id, kind == MediaMark::kLease ? "l" : "c", holder, 1);
  if (!r) return r.error();
  return {};
}

Result<std::optional<uint64_t>> RedisStore::next_report_id() {
  auto r = integer_of(eval(scripts::kNextReportId, report_id_sha_, {"{reports}n", "{reports}"}, {}), "report id");
  if (!r) return r.error();
  if (*r < 1) return make_error(ErrorCode::kInternal, "redis: report id: unexpected reply");
  return std::optional<uint64_t>(static_cast<uint64_t>(*r));
}

Result<std::optional<int64_t>> RedisStore::add_link_code(const std::string& user, const std::string& code_hash,
                                                         int64_t ttl_ms, size_t max_per_user) {
  if (ttl_ms < 1 || code_hash.empty() || max_per_user < 1)
    return make_error(ErrorCode::kInvalidArgument, "redis: bad link code");
  auto r = integer_of(eval(scripts::kLinkCode, link_code_sha_, {"{u:" + user + "}:lc"},
                           {"A", code_hash, std::to_string(ttl_ms), std::to_string(max_per_user)}),
                      "link code");
  if (!r) return r.error();
  return std::optional<int64_t>(*r);
}

Result<std::optional<bool>> RedisStore::take_link_code(const std::string& user, const std::string& code_hash) {
  if (code_hash.empty()) return make_error(ErrorCode::kInvalidArgument, "redis: bad link code");
  auto r = integer_of(eval(scripts::kLinkCode, link_code_sha_, {"{u:" + user + "}:lc"}, {"T", code_hash}), "link code");
  if (!r) return r.error();
  return std::optional<bool>(*r == 1);
}

}  // namespace tern::store::redis
