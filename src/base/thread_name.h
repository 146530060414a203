// Names the calling thread ("tern-loop0", "tern-commit", ...) so that `top -H`, `ps -L`, perf
// and /proc/<pid>/task/*/comm show each thread's role (deploy/bench-nodes.sh's PROFILE=1
// sums context switches and CPU per role). The kernel keeps 15 bytes; longer names are cut.
// Thread-safety: names only the calling thread; call it first thing in a thread's body.
#pragma once
#include <string_view>

namespace tern {

void set_thread_name(std::string_view name);

}  // namespace tern
