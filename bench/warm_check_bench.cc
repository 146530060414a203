// What a warm conversation's check costs on its loop in Redis mode (SequencerCore::warm): the
// members' device lists (Directory::devices_cached) and their devices' registration ids
// (KeyDirectory::registrations_cached), found in the caches; without keeping them (before
// WarmHold::checked_devices), kept flat in a WarmHold as warm() does, and kept in the hold's
// maps by user and device key (what a warm-up read keeps; measured, not used by warm()).
// Numbers in docs/benchmarks.md. Run: build/release/bench/warm_check_bench
#include <string>
#include <unordered_map>
#include <vector>

#include <benchmark/benchmark.h>

#include "bus/local/local_bus.h"
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/key_directory.h"
#include "services/service_options.h"
#include "services/warm_hold.h"
#include "store/memory/memory_store.h"

namespace tern::services {
namespace {

// A fan-out-on-write group of `members` users with two devices each, every list and
// registration id cached.
struct Group {
  explicit Group(int members) : committer(store, true, 1000, 64), keys(store, committer, directory, bus, options) {
    c.id = "g";
    c.type = store::ConvType::kGroup;
    for (int i = 0; i < members; ++i) {
      const std::string user = "user-" + std::to_string(i);
      c.members.push_back(store::Member{user, 1, 0, false});
      directory.put_devices(user, {1, 2});
      devices.push_back(DeviceRef{user, 1});
      devices.push_back(DeviceRef{user, 2});
    }
    if (!keys.prefetch_registrations(devices)) std::abort();  // no keys: 0 for each, cached
  }
  store::MemoryStore store;
  ServiceOptions options;
  bus::LocalBus bus;
  GroupCommitter committer;
  Directory directory{store};
  KeyDirectory keys;
  store::Conversation c;
  std::vector<DeviceRef> devices;
};

enum Form { kCheckOnly = 0, kFlatHold = 1, kMapHold = 2 };

void BM_WarmCheck(benchmark::State& state) {
  Group g(static_cast<int>(state.range(0)));
  const auto form = static_cast<Form>(state.range(1));
  for (auto _ : state) {
    bool ok = true;
    if (form == kCheckOnly) {
      std::vector<DeviceRef> all;
      ok = g.directory.devices_cached(g.c, &all) && g.keys.registrations_cached(all);
    } else {
      auto hold = std::make_shared<WarmHold>();
      ok = g.directory.devices_cached(g.c, &hold->checked_devices) &&
           g.keys.registrations_cached(hold->checked_devices, &hold->checked_registrations);
      if (form == kMapHold) {
        for (size_t i = 0; i < hold->checked_devices.size(); ++i) {
          const DeviceRef& d = hold->checked_devices[i];
          hold->devices[d.user].push_back(d.device);
          hold->registrations.emplace(d.key(), hold->checked_registrations[i]);
        }
      }
      benchmark::DoNotOptimize(hold);
    }
    if (!ok) state.SkipWithError("not cached");
  }
  state.SetLabel(form == kCheckOnly ? "check only" : form == kFlatHold ? "flat hold (warm())" : "map hold");
}
// {members, form}: a pair's direct conversation, a small group, the fan-out-on-write limit.
BENCHMARK(BM_WarmCheck)->ArgsProduct({{2, 50, 500}, {kCheckOnly, kFlatHold, kMapHold}});

}  // namespace
}  // namespace tern::services

BENCHMARK_MAIN();
