#include "base/thread_name.h"

#include <pthread.h>

#include <string>

namespace tern {

void set_thread_name(std::string_view name) {
  // pthread_setname_np refuses (ERANGE) a name over 15 bytes: cut it instead.
  const std::string cut(name.substr(0, 15));
  (void)pthread_setname_np(pthread_self(), cut.c_str());
}

}  // namespace tern
