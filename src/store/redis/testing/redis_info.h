// Test support: what a redis-server on 127.0.0.1 (plain or a Cluster node) says of itself in
// INFO, and bounded waits on it: its replication link, its AOF rewrites. Each call makes its
// own short connection; no state, any thread.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern::store::redis::testing {

// INFO <section> of the server on `port`; "" if it does not answer.
std::string redis_info(uint16_t port, std::string_view section);
// The number on INFO's line `field:<number>` (a whole line's name: "used_cpu_sys" does not
// match "used_cpu_sys_children"); nullopt if `info` has no such line.
std::optional<double> info_field(std::string_view info, std::string_view field);
// How often the server ran `command` (lower case, e.g. "zscore"; a script's inner calls count)
// since its start or its last CONFIG RESETSTAT, from INFO commandstats: 0 if never, -1 if the
// server does not answer.
int64_t command_calls(uint16_t port, std::string_view command);
// INFO persistence's aof_rewrites; -1 if the server does not answer.
int aof_rewrites(uint16_t port);
// aof_rewrites once no rewrite is in progress or scheduled (waiting at most `within`): a
// replica rewrites its AOF after its first sync, and a server already rewriting answers
// BGREWRITEAOF with an error and does not count it. -1 if the server does not answer.
int aof_rewrites_when_idle(uint16_t port, std::chrono::milliseconds within = std::chrono::seconds(20));
// Waits (at most `within`) until aof_rewrites exceeds `before`; true if it did.
bool await_aof_rewrites_above(uint16_t port, int before,
                              std::chrono::milliseconds within = std::chrono::seconds(20));
// Waits (at most `within`) until the replica on `port` reports master_link_status:up.
bool await_replica_linked(uint16_t port, std::chrono::milliseconds within = std::chrono::seconds(30));

}  // namespace tern::store::redis::testing
