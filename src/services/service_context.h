// The services one connection or request needs, bundled. Plain struct of references, built
// once by TernService; everything it points to outlives every session.
#pragma once
#include <atomic>

#include "base/loops.h"
#include "bus/bus.h"
#include "services/admission.h"
#include "services/accounts.h"
#include "services/directory.h"
#include "services/group_committer.h"
#include "services/live_fanout.h"
#include "services/key_directory.h"
#include "services/presence.h"
#include "services/sequencer.h"
#include "services/service_options.h"
#include "services/store_reads.h"
#include "store/store.h"

namespace tern::services {

class Media;
class SafetyApi;

struct ServiceContext {
  const ServiceOptions& options;
  Loops& loops;
  Admission& admission;
  store::Store& store;
  StoreReads& reads;  // where a store read that may block runs (store_reads.h)
  GroupCommitter& committer;
  Directory& directory;
  bus::Bus& bus;
  Sequencer& sequencer;
  Presence& presence;
  Accounts& accounts;
  std::atomic<bool>& draining;
  LiveFanout& fanout;
  KeyDirectory* keys = nullptr;  // null in service tests that need no key directory
  Media* media = nullptr;  // issue 11; null when the server has no blob store
  SafetyApi* safety = nullptr;  // issue 12 routes; set by TernService after construction
};

}  // namespace tern::services
