#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace tern {

void init_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("tern");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("ts=%Y-%m-%dT%H:%M:%S.%e level=%l thread=%t %v");
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::warn);
}

}  // namespace tern
