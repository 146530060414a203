#include "store/redis/testing/redis_info.h"

#include <cstdlib>
#include <thread>

#include <hiredis/hiredis.h>

#include "store/redis/redis_connection.h"

namespace tern::store::redis::testing {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Polls `done` every `every` until it holds or `within` passed; whether it held.
template <typename Done>
bool await(Done done, std::chrono::milliseconds within, std::chrono::milliseconds every = 20ms) {
  const auto deadline = Clock::now() + within;
  for (;;) {
    if (done()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(every);
  }
}

}  // namespace

std::string redis_info(uint16_t port, std::string_view section) {
  auto c = RedisConnection::connect(RedisAddress{"127.0.0.1", port}, 500ms, 5s);
  if (!c) return "";
  auto r = (*c)->command({"INFO", section});
  if (!r || (*r)->type != REDIS_REPLY_STRING) return "";
  return std::string((*r)->str, (*r)->len);
}

std::optional<double> info_field(std::string_view info, std::string_view field) {
  const std::string line = std::string(field) + ':';
  for (size_t at = info.find(line); at != std::string_view::npos; at = info.find(line, at + 1)) {
    if (at != 0 && info[at - 1] != '\n') continue;  // the tail of a longer name
    // The value runs to the line's end ("\r\n").
    const std::string value(info.substr(at + line.size(), info.find('\r', at) - at - line.size()));
    return std::strtod(value.c_str(), nullptr);
  }
  return std::nullopt;
}

int64_t command_calls(uint16_t port, std::string_view command) {
  const std::string info = redis_info(port, "commandstats");
  if (info.empty()) return -1;
  const std::string field = "cmdstat_" + std::string(command) + ":calls=";
  const size_t at = info.find(field);
  if (at == std::string::npos) return 0;
  return std::atoll(info.c_str() + at + field.size());
}

int aof_rewrites(uint16_t port) {
  const auto rewrites = info_field(redis_info(port, "persistence"), "aof_rewrites");
  return rewrites ? static_cast<int>(*rewrites) : -1;
}

int aof_rewrites_when_idle(uint16_t port, std::chrono::milliseconds within) {
  (void)await(
      [port] {
        const std::string info = redis_info(port, "persistence");
        return info.empty() || (info.find("aof_rewrite_in_progress:0") != std::string::npos &&
                                info.find("aof_rewrite_scheduled:0") != std::string::npos);
      },
      within);
  return aof_rewrites(port);
}

bool await_aof_rewrites_above(uint16_t port, int before, std::chrono::milliseconds within) {
  return await([&] { return aof_rewrites(port) > before; }, within, 50ms);
}

bool await_replica_linked(uint16_t port, std::chrono::milliseconds within) {
  return await(
      [port] { return redis_info(port, "replication").find("master_link_status:up") != std::string::npos; },
      within, 50ms);
}

}  // namespace tern::store::redis::testing
