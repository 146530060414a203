// Session (the common base of HTTP and WebSocket sessions) and SessionRegistry (the set of
// live sessions, so the listener can count them and close them all at shutdown).
//
// Ownership: sessions own themselves through shared_ptr (their pending async handlers hold
// them); the registry holds only weak_ptrs, so it never keeps a session alive.
// Thread-safety: SessionRegistry is mutex-protected and callable from any thread.
// Session::shutdown() is callable from any thread (it posts to the session's strand).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace tern::gateway {

class Session : public std::enable_shared_from_this<Session> {
 public:
  virtual ~Session() = default;
  // Asks the session to end: a WebSocket closes with `ws_code`, an HTTP session closes
  // after the response in progress (if any). Any thread; the work runs on the strand.
  virtual void shutdown(uint16_t ws_code) = 0;
};

// Process-wide unique id for a session (also the Connection id). Never 0.
uint64_t next_session_id();

class SessionRegistry {
 public:
  // Registers a live session. Returns the close code to apply at once if close_all()
  // already happened (a session accepted during shutdown must not linger).
  std::optional<uint16_t> add(uint64_t id, std::weak_ptr<Session> session);
  // Called from the session's destructor.
  void remove(uint64_t id);
  size_t size() const;
  // Switches the registry to closing mode (every later add() is told `code`) and returns
  // the sessions alive right now, for the caller to shut down outside the lock.
  std::vector<std::shared_ptr<Session>> begin_close_all(uint16_t code);

 private:
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::weak_ptr<Session>> sessions_;
  std::optional<uint16_t> closing_code_;
};

}  // namespace tern::gateway
