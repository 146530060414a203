// The in-memory fake runs the same contract suite as the real backends.
#include "store/memory/memory_store.h"

#include "store/store_contract_test.h"

namespace tern::store {
namespace {

class MemoryHarness final : public contract::StoreHarness {
 public:
  Result<std::unique_ptr<Store>> open() override { return std::unique_ptr<Store>(new MemoryStore(state_)); }

 private:
  std::shared_ptr<MemoryStore::State> state_ = MemoryStore().state();
};

using contract::StoreContractTest;
INSTANTIATE_TEST_SUITE_P(Memory, StoreContractTest,
                         ::testing::Values(contract::StoreHarnessFactory{
                             "memory", [] { return std::make_unique<MemoryHarness>(); }}),
                         [](const auto& info) { return info.param.name; });

TEST(MemoryStore, InjectedFailureWritesNothing) {
  MemoryStore s;
  s.fail_commits(true);
  Batch b;
  b.add(AppendMessage{"c", 1, "m"});
  EXPECT_EQ(s.commit(b, true).error().code, ErrorCode::kInternal);
  EXPECT_EQ(*s.head("c"), 0u);
  s.fail_commits(false);
  EXPECT_TRUE(s.commit(b, true).ok());
  EXPECT_EQ(*s.head("c"), 1u);
  EXPECT_EQ(s.commits(), 1u);
}

}  // namespace
}  // namespace tern::store
