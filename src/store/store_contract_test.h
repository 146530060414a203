// The store contract as a GoogleTest suite, written against the Store interface only so that
// every backend runs the same tests. Test-only; single-threaded.
//
// A backend's test file provides a StoreHarness (a fresh, empty storage per test, which it
// can reopen) and instantiates the suite:
//
//   using tern::store::contract::StoreContractTest;
//   INSTANTIATE_TEST_SUITE_P(RocksDb, StoreContractTest,
//       ::testing::Values(StoreHarnessFactory{"rocksdb", [] { return std::make_unique<MyHarness>(); }}),
//       [](const auto& info) { return std::to_string(info.index); });
//
// The numeric suffix is what CMake's gtest_discover_tests replaces with the printed
// parameter (PrintTo below), so ctest lists RocksDb/StoreContractTest.<Test>/rocksdb; with
// a non-numeric suffix it appends "# GetParam() = …" to the ctest name instead.
//
// and compiles store_contract_test.cc into its test binary (TERN_STORE_CONTRACT_TEST_SOURCES).
#pragma once
#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include <gtest/gtest.h>

#include "store/store.h"

namespace tern::store::contract {

// One test's storage. Created empty; destroyed (and cleaned up) after the test.
class StoreHarness {
 public:
  virtual ~StoreHarness() = default;
  // Opens the storage (again): after the previous Store was destroyed, a new one must see
  // everything that was committed through it.
  virtual Result<std::unique_ptr<Store>> open() = 0;
};

struct StoreHarnessFactory {
  std::string name;  // the backend, as GetParam() prints it: [A-Za-z0-9_]
  std::function<std::unique_ptr<StoreHarness>()> make;
  // GoogleTest prints the parameter with this (test lists, failures, ctest names) instead
  // of its bytes.
  friend void PrintTo(const StoreHarnessFactory& f, std::ostream* os) { *os << f.name; }
};

// Unwraps a Result, failing the test (and returning a default value) on error.
template <typename T>
T must(Result<T> r) {
  if (!r.ok()) {
    ADD_FAILURE() << "store error: " << r.error().message;
    return T{};
  }
  return std::move(r).value();
}

class StoreContractTest : public ::testing::TestWithParam<StoreHarnessFactory> {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Closes the store and opens it again on the same storage.
  void reopen();
  // Commits a batch of one op; fails the test on error.
  void commit1(Op op, bool sync = false);
  void commit(Batch batch, bool sync = false);

  Store& store() { return *store_; }

  std::unique_ptr<StoreHarness> harness_;
  std::unique_ptr<Store> store_;
};

}  // namespace tern::store::contract
