#include "store/redis/testing/half_made_change.h"

#include <hiredis/hiredis.h>

#include <string_view>
#include <thread>

#include "store/redis/redis_change_lease.h"
#include "store/rocksdb/encoding.h"

namespace tern::store::redis::testing {

std::vector<std::string> join_ops(const Conversation& from, const Conversation& to, const std::string& user,
                                  Seq joined) {
  std::string expected, meta;
  rocks::encode_conversation(expected, from);
  rocks::encode_conversation(meta, to);
  std::vector<std::string> ops{"e", from.id, expected, "C", to.id, meta, std::to_string(to.members.size())};
  for (const Member& m : to.members) {
    ops.push_back(m.user);
    ops.push_back(rocks::encode_user_row(UserConversation{to.id, m.joined_seq, m.left_seq, to.fanout_on_read}));
  }
  for (const std::string& x : {std::string("h"), "{u:" + user + "}:ix", to.id,
                               rocks::encode_user_row(UserConversation{to.id, joined, 0, true})})
    ops.push_back(x);
  return ops;
}

Result<void> stop_a_join_half_way(RedisCluster& cluster, const Conversation& from, const Conversation& to,
                                  const std::string& user, std::chrono::milliseconds life, Seq joined) {
  ChangeLeases dead(cluster, life);
  const auto ops = join_ops(from, to, user, joined);
  std::string expected;
  rocks::encode_conversation(expected, from);
  auto taken = dead.take(from.id, expected, std::vector<std::string_view>(ops.begin(), ops.end()));
  if (!taken) return taken.error();
  if (!taken->empty()) return make_error(ErrorCode::kInternal, "another change was left half way before");
  const std::string index = "{u:" + user + "}:ix";
  auto row = cluster.run1(key_slot(index), {"HSET", index, from.id, ops.back()});  // its phase 0
  if (!row) return row.error();
  const std::string lease = "{c:" + from.id + "}:lk";
  for (const auto deadline = std::chrono::steady_clock::now() + life + std::chrono::seconds(5);
       std::chrono::steady_clock::now() < deadline;) {
    auto r = cluster.run1(key_slot(lease), {"EXISTS", lease});
    if (!r) return r.error();
    if ((*r)->type == REDIS_REPLY_INTEGER && (*r)->integer == 0) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return make_error(ErrorCode::kInternal, "the dead change's lease did not expire");
}

Result<void> stop_a_join_half_way(RedisCluster& cluster, const std::string& channel_id, const std::string& user,
                                  std::chrono::milliseconds life, Seq joined) {
  const std::string key = "{c:" + channel_id + "}:m";
  auto r = cluster.run1(key_slot(key), {"GET", key});
  if (!r) return r.error();
  if ((*r)->type != REDIS_REPLY_STRING) return make_error(ErrorCode::kNotFound, "no stored record of " + channel_id);
  auto from = rocks::decode_conversation(std::string_view((*r)->str, (*r)->len));
  if (!from) return make_error(ErrorCode::kInternal, "the stored record of " + channel_id + " does not decode");
  Conversation to = *from;
  ++to.subscribers;
  return stop_a_join_half_way(cluster, *from, to, user, life, joined);
}

}  // namespace tern::store::redis::testing
