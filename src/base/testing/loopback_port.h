// Test support: ports on 127.0.0.1 for servers that tests start (ternd, redis-server).
// Thread affinity: any thread (each call uses its own socket; the random generator is
// per thread).
#pragma once
#include <cstdint>

namespace tern::test_support {

// A port the kernel just handed out for 127.0.0.1 (bound to port 0, then closed again: a
// short race is possible); 0 if none. It lies in the ephemeral range (32768 and up on
// Debian), where other processes' outgoing connections take ports too: good for a server
// that starts once, not for one that must get the same port back after a restart.
uint16_t free_loopback_port();
// Whether a server could listen on 127.0.0.1:port now (bound with SO_REUSEADDR, as ternd
// and redis-server bind).
bool port_free(uint16_t port);
// A free port below the ephemeral range (20000-32000), picked at random so that parallel
// tests rarely pick the same; 0 if 64 tries found none. For a server that is restarted on
// its port: while it is down, no outgoing connection can take the port.
uint16_t restartable_port();

}  // namespace tern::test_support
