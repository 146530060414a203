// Two RedisStores with dense appends on one Redis deployment (two ternd nodes), the first
// having appended seq 1 to conversations "c1" and "c2": where the tests of an append that is
// behind start (redis_store_test.cc, redis_store_cluster_test.cc). Test code only.
#pragma once
#include <memory>
#include <utility>

#include "store/redis/redis_store.h"

namespace tern::store::redis::testing {

struct TwoNodes {
  std::unique_ptr<RedisStore> a, b;
};

inline Result<TwoNodes> two_nodes_after_first_appends(RedisStoreOptions o) {
  o.dense_appends = true;
  auto a = RedisStore::open(o);
  if (!a) return a.error();
  auto b = RedisStore::open(o);
  if (!b) return b.error();
  Batch first;
  first.add(AppendMessage{"c1", 1, "a1"});
  first.add(AppendMessage{"c2", 1, "a2"});
  if (auto r = (*a)->commit(first, true); !r) return r.error();
  return TwoNodes{std::move(*a), std::move(*b)};
}

// Commits bob/1's "m3" into c2 at `seq` with a record that expired a second before `now`,
// then the same id at seq + 1 with one that expires at `later`: an expired record (not yet
// purged) is no repeat, so both must commit. The first failure, if any.
inline Result<void> resend_after_expiry(RedisStore& node, Seq seq, int64_t now, int64_t later) {
  const DeviceRef bob{"bob", 1};
  Batch old;
  old.add(AppendMessage{"c2", seq, "m3"});
  old.add(PutIdempotency{bob, "m3", IdempotencyRecord{"c2", seq, 7, now - 1000}});
  if (auto r = node.commit(old, true); !r) return r;
  Batch fresh;
  fresh.add(AppendMessage{"c2", seq + 1, "m3 again"});
  fresh.add(PutIdempotency{bob, "m3", IdempotencyRecord{"c2", seq + 1, 8, later}});
  return node.commit(fresh, true);
}

}  // namespace tern::store::redis::testing
