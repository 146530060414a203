// `tern chat TARGET`: the interactive terminal chat. History on open, messages as they
// arrive, ✓ sent / ✓✓ delivered / ✓✓ read marks that update, typing indicator, presence,
// and reconnection by the SDK when the server restarts. On a terminal it redraws the whole
// screen on every change (raw mode, line editing of its own); otherwise (stdin a pipe) it
// reads lines and prints events as lines. /quit, Ctrl-C or Ctrl-D leaves.
#pragma once
#include <string>

#include "commands.h"

namespace tern::cli {

int cmd_chat(const Global& g, const std::string& target, size_t history);

}  // namespace tern::cli
