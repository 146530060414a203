// ternd: the Tern server. Parses options, starts the server, prints the bound address as
// the first line of stdout ("listening HOST:PORT", for scripts and tests), serves until
// SIGTERM/SIGINT.
#include <cstdio>

#include "base/log.h"
#include "server/server.h"
#include "server/server_options.h"

int main(int argc, char** argv) {
  auto options = tern::server::parse_options(argc, argv);
  if (!options) {
    if (options.error().code == tern::ErrorCode::kOk) return 0;  // --help
    std::fprintf(stderr, "ternd: %s\n", options.error().message.c_str());
    return 2;
  }
  tern::init_logging(options->log_level);
  tern::server::Server server(*options);
  auto port = server.start();
  if (!port) {
    spdlog::critical("event=start_failed error=\"{}\"", port.error().message);
    return 1;
  }
  std::printf("listening %s:%u\n", options->gateway.host.c_str(), static_cast<unsigned>(*port));
  std::fflush(stdout);
  server.run();
  return 0;
}
