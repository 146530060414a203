// Logging set-up. Every component logs through spdlog's default logger, one line per event
// as key=value pairs. Never log a token, a message body or any other payload.
#pragma once
#include <string>

#include <spdlog/spdlog.h>

namespace tern {

// Configures the default logger: level ("trace".."off") and line format. Call once at start.
void init_logging(const std::string& level);

}  // namespace tern
