// The names of the per-user records Tern keeps in the store's user records (store.h):
//   block/<user>        the owner blocks <user>                      value: ts (ms)
//   presence            who sees the owner's presence and last seen  value: contacts | everyone | nobody
//   accept/<conv>       the owner accepted direct conversation <conv>: created it or sent in it
//   push/<device>       the push registration of device <device>     value: {"provider","token"} JSON
//   suspended           the account is suspended (admin)             value: ts (ms)
//   deleted             the account is closed (admin)                value: ts (ms)
// Header-only constants; thread-safe.
#pragma once
#include <cstdint>
#include <string>

namespace tern::services::records {

inline constexpr const char* kBlockPrefix = "block/";
inline constexpr const char* kPresence = "presence";
inline constexpr const char* kAcceptPrefix = "accept/";
inline constexpr const char* kPushPrefix = "push/";
inline constexpr const char* kSuspended = "suspended";
inline constexpr const char* kDeleted = "deleted";

inline std::string block(const std::string& user) { return kBlockPrefix + user; }
inline std::string accept(const std::string& conversation_id) { return kAcceptPrefix + conversation_id; }
inline std::string push(uint32_t device) { return kPushPrefix + std::to_string(device); }

}  // namespace tern::services::records
