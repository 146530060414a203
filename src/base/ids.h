// Identifiers of wire-v1 and their validation. Pure functions and values; thread-safe.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern {

using Seq = uint64_t;  // per-conversation sequence number, dense from 1

// One endpoint: a device of a user. Written "user:device" in `bodies` keys.
struct DeviceRef {
  std::string user;
  uint32_t device = 0;

  std::string key() const { return user + ":" + std::to_string(device); }
  friend bool operator==(const DeviceRef&, const DeviceRef&) = default;
  friend auto operator<=>(const DeviceRef&, const DeviceRef&) = default;
};

bool valid_user_id(std::string_view id);           // [a-z0-9_.-]{1,64}
bool valid_client_msg_id(std::string_view id);     // 1..64 printable ASCII
bool valid_conversation_id(std::string_view id);   // 1..128 printable ASCII, no '/'
bool valid_media_id(std::string_view id);          // 64 lowercase hex: SHA-256 of the blob
std::optional<DeviceRef> parse_device_key(std::string_view key);  // "alice:2"

}  // namespace tern
