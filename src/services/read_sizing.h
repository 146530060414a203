// How many messages a read of a conversation's log asks for, so that it holds about a given
// number of bytes: at the size of the frames the last read returned, and, before any was
// read (the size unknown), at most a small first count. Shared by the replay pages of a
// connecting device (device_session.cc: as much as fits its write queue) and the history
// pages of GET /v1/conversations/{id}/messages (http_api.cc: chunks of about 1 MB), so that
// neither reads megabytes of large messages in one go. Pure functions; any thread.
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

#include "store/store.h"

namespace tern::services {

// The mean size of the frames read (0 when none were).
inline size_t mean_frame_bytes(const std::vector<store::StoredMessage>& messages) {
  if (messages.empty()) return 0;
  size_t bytes = 0;
  for (const auto& m : messages) bytes += m.frame.size();
  return bytes / messages.size();
}

// Messages for about `budget` bytes at `frame_bytes` each (counted as at least 1 KiB: small
// messages need few store seeks); `frame_bytes` 0 (not known yet): at most `first`. Between 1
// and `most`.
inline size_t messages_for(size_t budget, size_t frame_bytes, size_t first, size_t most) {
  most = std::max<size_t>(1, frame_bytes ? most : std::min(first, most));
  return std::clamp<size_t>(budget / std::max<size_t>(1024, frame_bytes), 1, most);
}

}  // namespace tern::services
