#include "base/ids.h"

#include <charconv>

namespace tern {

bool valid_user_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool valid_client_msg_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

bool valid_conversation_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id)
    if (c <= 0x20 || c > 0x7e || c == '/') return false;
  return true;
}

std::optional<DeviceRef> parse_device_key(std::string_view key) {
  const auto colon = key.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const auto user = key.substr(0, colon);
  const auto num = key.substr(colon + 1);
  if (!valid_user_id(user) || num.empty() || num.size() > 9) return std::nullopt;
  uint32_t device = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), device);
  if (ec != std::errc() || p != num.data() + num.size() || device == 0) return std::nullopt;
  return DeviceRef{std::string(user), device};
}

bool valid_media_id(std::string_view id) {
  if (id.size() != 64) return false;
  for (char c : id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace tern
