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

}  // namespace tern::store::redis::testing
