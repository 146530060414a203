// Terminal helpers for `tern chat`: raw mode (restored on destruction and on exit), window
// size, and making untrusted text safe to print (no escape sequences from the network).
// RawMode is owned by the chat's main thread; the free functions are pure.
#pragma once
#include <string>
#include <string_view>

#include <termios.h>

namespace tern::cli {

class RawMode {
 public:
  explicit RawMode(int fd);  // no-op when fd is not a terminal
  ~RawMode();
  RawMode(const RawMode&) = delete;
  RawMode& operator=(const RawMode&) = delete;
  bool active() const { return active_; }

 private:
  int fd_;
  bool active_ = false;
  termios saved_{};
};

struct WindowSize {
  int rows = 24;
  int cols = 80;
};
WindowSize window_size(int fd);

// Control characters (C0, DEL, C1 as UTF-8, invalid UTF-8) replaced so that text from
// other users cannot move the cursor or retitle the terminal.
std::string printable(std::string_view text);
// The first `max` code points of valid UTF-8 text.
std::string clip(std::string_view text, size_t max);
// Number of code points (an approximation of the display width).
size_t width(std::string_view text);
bool valid_utf8(std::string_view text);
// Drops the last code point (backspace).
void pop_code_point(std::string& text);

}  // namespace tern::cli
