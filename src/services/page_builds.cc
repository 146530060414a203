#include "services/page_builds.h"

namespace tern::services {

bool PageBuilds::run(size_t loop, Build build) {
  if (loop >= loops_.size()) {
    build();
    return true;
  }
  Loop& l = loops_[loop];
  if (l.waiting.size() >= kMaxWaiting) return false;
  l.waiting.push_back(std::move(build));
  if (l.building) return true;  // the fiber building now takes it after the ones before it
  // This fiber builds every page that waits, in order, until none is left: a loop, not a
  // chain of calls, so a long queue does not grow its stack.
  l.building = true;
  while (!l.waiting.empty()) {
    Build next = std::move(l.waiting.front());
    l.waiting.pop_front();
    next();
  }
  l.building = false;
  return true;
}

}  // namespace tern::services
